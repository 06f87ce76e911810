"""The real RabbitMQ on this machine (AMQP on 5672, management API on 15672, guest/guest): a vhost of
each test's own (the conftest `vhost` fixture), deleted afterwards. Tests using it are marked `rabbitmq`."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pika
import requests

MGMT = "http://127.0.0.1:15672"
AUTH = ("guest", "guest")


def api(method: str, path: str, json=None):
    r = requests.request(method, MGMT + path, auth=AUTH, json=json, timeout=10)
    assert r.status_code < 400, (method, path, r.status_code, r.text)
    return r


def create_vhost() -> str:
    """A vhost of the test's own with guest's permissions. A slash in the name proves the vhost is
    URL-encoded on every call."""
    name = f"sw/test-{uuid.uuid4().hex[:8]}"
    api("PUT", f"/api/vhosts/{quote(name, safe='')}")
    api("PUT", f"/api/permissions/{quote(name, safe='')}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    return name


def delete_vhost(name: str) -> None:
    requests.delete(f"{MGMT}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10)


def amqp(vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials("guest", "guest"))
    )
