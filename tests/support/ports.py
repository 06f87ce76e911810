"""Free loopback ports for the servers the tests start (sidecars, moto_server, Prometheus, fakes)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a race with another process is possible but rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A port that refuses connections: for "cannot reach" cases."""
    return free_port()
