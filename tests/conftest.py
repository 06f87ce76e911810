"""Fixtures for the whole suite. Support code lives in tests/support/ (on pytest's pythonpath, so its
modules import by their own names: `from sidecar import Sidecar`, `from otlp_raw import post`); no
test module imports another.

Markers (pyproject.toml): `rabbitmq`, `databases`, `prometheus`, `e2e`. `make test-fast` deselects them
all and must then run with no broker, no database server and no apt packages. A test that asks for the
`vhost` or `dbs` fixture gets its marker by itself; the guard below fails a test loudly if it reaches
RabbitMQ's, PostgreSQL's or MariaDB's port without the marker."""

from __future__ import annotations

import socket

import pytest
from ledger_harness import FakeClock, LedgerHarness
from sidecar import Sidecar

from syncwatch.config.models import Config

# The services on this machine a fast test must not need, and the marker that admits each.
GUARDED_PORTS = {5672: "rabbitmq", 15672: "rabbitmq", 5432: "databases", 3306: "databases"}
# Fixtures that reach one of them: a test asking for one is marked for it.
FIXTURE_MARKERS = {"vhost": "rabbitmq", "dbs": "databases", "pg_db": "databases"}
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


# ---- markers and guards -------------------------------------------------------------------------


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _services_only_when_marked(request, monkeypatch):
    """A test must not reach RabbitMQ, PostgreSQL or MariaDB without the marker that says so:
    `make test-fast` runs where there are none."""
    allowed = {port for port, marker in GUARDED_PORTS.items() if request.node.get_closest_marker(marker)}
    if len(allowed) == len(GUARDED_PORTS):
        return
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address) -> None:
        if (
            isinstance(address, tuple)
            and len(address) >= 2
            and address[1] in GUARDED_PORTS
            and address[1] not in allowed
            and str(address[0]) in _LOOPBACK
        ):
            marker = GUARDED_PORTS[address[1]]
            raise AssertionError(
                f"{request.node.nodeid} connects to {address[0]}:{address[1]} but is not marked @pytest.mark.{marker}"
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


@pytest.fixture(scope="module")
def pg_db(request):
    """A PostgreSQL database of this test module's own, dropped after the module (request it only
    from tests marked databases)."""
    from pg_support import scratch_database

    with scratch_database("syncwatch_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")) as name:
        yield name


@pytest.fixture
def dbs():
    """A PostgreSQL and a MariaDB database of this test's own, dropped afterwards (marks the test databases)."""
    from reconcile_support import Databases

    d = Databases().create()
    yield d
    d.drop()
