"""Fixtures for the whole suite. Support code lives in tests/support/ (on pytest's pythonpath, so its
modules import by their own names: `from sidecar import Sidecar`, `from otlp_raw import post`); no
test module imports another.

Markers (pyproject.toml): `rabbitmq`, `prometheus`, `e2e`. `make test-fast` deselects all three and
must then run with no broker and no apt packages; the guard below fails a test loudly if it reaches
RabbitMQ's ports without the `rabbitmq` marker."""

from __future__ import annotations

import socket

import pytest
from ledger_harness import FakeClock, LedgerHarness
from sidecar import Sidecar

from syncwatch.config.models import Config

RABBITMQ_PORTS = frozenset({5672, 15672})
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})

# A fixed instant for in-process ledger tests, far from any real "now".
T0 = 1_790_000_000.0


# ---- the sidecar as a subprocess ----------------------------------------------------------------


@pytest.fixture
def make_sidecar(tmp_path):
    """Factory: make_sidecar(config=None, env=None, name='a') -> started Sidecar; all stopped at teardown."""
    started = []

    def make(config=None, env=None, name="sidecar", start=True):
        sc = Sidecar(tmp_path / name, config, env)
        started.append(sc)
        return sc.start() if start else sc

    yield make
    for sc in started:
        sc.stop()


@pytest.fixture
def sidecar(make_sidecar):
    """A running sidecar on the embedded defaults (SQLite in a tmp dir, free loopback ports)."""
    return make_sidecar()


# ---- the ledger in-process ----------------------------------------------------------------------


@pytest.fixture
def clock():
    """A fake clock at T0; `clock.advance(s)` moves it."""
    return FakeClock(T0)


@pytest.fixture
def make_ledger(tmp_path):
    """Factory: make_ledger(config=None, clock=None, name='ledger') -> LedgerHarness (intake, ledger and a
    fresh CollectorRegistry in-process). The clock defaults to a FakeClock at the real time now, for
    scenarios written against `time.time()`; pass `clock` to pin it. All closed at teardown."""
    made: list[LedgerHarness] = []

    def make(config: dict | None = None, clock: FakeClock | None = None, name: str = "ledger") -> LedgerHarness:
        cfg = dict(config or {})
        cfg["storage"] = {"data_dir": str(tmp_path / name / "data"), **cfg.get("storage", {})}
        harness = LedgerHarness(Config.model_validate(cfg), clock or FakeClock())
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


@pytest.fixture
def ledger(make_ledger):
    """The ledger on the embedded defaults, in-process (see support/ledger_harness.py)."""
    return make_ledger()


# ---- guards -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _rabbitmq_only_when_marked(request, monkeypatch):
    """A test without the `rabbitmq` marker must not reach the broker: `make test-fast` runs where there is none."""
    if request.node.get_closest_marker("rabbitmq") is not None:
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address) -> None:
        if (
            isinstance(address, tuple)
            and len(address) >= 2
            and address[1] in RABBITMQ_PORTS
            and str(address[0]) in _LOOPBACK
        ):
            raise AssertionError(
                f"{request.node.nodeid} connects to RabbitMQ at {address[0]}:{address[1]} "
                "but is not marked @pytest.mark.rabbitmq"
            )

    def guarded_connect(self, address):
        check(address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        check(address)
        return connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


# ---- brokers ------------------------------------------------------------------------------------


@pytest.fixture
def vhost():
    """A RabbitMQ vhost of this test's own on the real broker, deleted afterwards (mark the test rabbitmq)."""
    from rabbitmq_broker import create_vhost, delete_vhost

    name = create_vhost()
    yield name
    delete_vhost(name)


@pytest.fixture(scope="module")
def moto():
    """moto_server for the test module (SQS, S3); tests keep apart by unique queue and bucket names."""
    from moto_launcher import MotoServer

    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """AWS credentials from the environment only; no ~/.aws of the machine leaks in."""
    from moto_launcher import aws_test_env

    aws_test_env(monkeypatch, tmp_path)
