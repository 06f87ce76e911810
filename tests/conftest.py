import pytest
from sidecar import Sidecar


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
