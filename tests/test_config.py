"""Configuration: defaults, YAML, SYNCWATCH_* overrides, and errors that name the key."""

import subprocess
import sys

import pytest
from sidecar import ROOT

from syncwatch.config.errors import ConfigError
from syncwatch.settings import load_config


def write(tmp_path, text):
    path = tmp_path / "syncwatch.yaml"
    path.write_text(text)
    return path


def test_embedded_defaults_match_the_spec_table():
    config = load_config(None, environ={})
    deadlines = {name: flow.deadline for name, flow in config.flows.items()}
    assert deadlines == {"inventory": 30, "orders": 300, "customers": 6 * 3600, "prices": 300}
    assert config.flows["orders"].destinations == ["erp"]
    assert config.listen.otlp_grpc.endswith(":4317") and config.listen.otlp_http.endswith(":4318")
    assert config.listen.http.startswith("127.0.0.1:")
    assert config.snapshots.retention == 72 * 3600
    assert config.correlation.keys[0] == "messaging.message.conversation_id"
    assert str(config.storage.ledger_path).endswith("ledger.db")


def test_flows_in_a_file_adjust_the_defaults(tmp_path):
    path = write(
        tmp_path, "flows:\n  orders: {deadline: 10m}\n  returns: {destinations: [erp], deadline: 1h}\n  prices: null\n"
    )
    config = load_config(path, environ={})
    assert config.flows["orders"].deadline == 600 and config.flows["orders"].destinations == ["erp"]
    assert config.flows["returns"].deadline == 3600
    assert "prices" not in config.flows and "inventory" in config.flows


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "listen:\n  http: 127.0.0.1:9999\n")
    config = load_config(
        path,
        environ={
            "SYNCWATCH_LISTEN__HTTP": "0.0.0.0:9873",
            "SYNCWATCH_FLOWS__ORDERS__DEADLINE": "2m",
            "SYNCWATCH_API__TOKEN": "12345",
            "SYNCWATCH_CORRELATION__KEYS": "[order_id, correlation_id]",
        },
    )
    assert config.listen.http == "0.0.0.0:9873"
    assert config.flows["orders"].deadline == 120
    assert config.api.resolve_token() == "12345"
    assert config.correlation.keys == ["order_id", "correlation_id"]


@pytest.mark.parametrize(
    "text,key,words",
    [
        ("flows:\n  orders:\n    deadline: soon\n", "flows.orders.deadline", "expected a duration"),
        ("listen:\n  htp: 127.0.0.1:1\n", "listen.htp", "unknown key"),
        ("listen:\n  http: localhost\n", "listen.http", "expected host:port"),
        ("snapshots:\n  retention: 24h\n", "snapshots.retention", "at least 72h"),
        ("snapshots:\n  backend: ftp://x\n", "snapshots.backend", "s3://bucket/prefix"),
        ("intake:\n  max_body_bytes: -1\n", "intake.max_body_bytes", "greater than 0"),
        ("flows:\n  orders:\n    deadline: 0s\n", "flows.orders.deadline", "above zero"),
        ("correlation:\n  keys: []\n", "correlation.keys", "at least 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ={})
    assert err.value.key == key
    assert words in str(err.value)


def test_bad_environment_value_names_the_key():
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={"SYNCWATCH_STORAGE__EXPIRE_AFTER": "forever"})
    assert err.value.key == "storage.expire_after"


def test_token_is_never_echoed_in_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "api:\n  token: [s3cr3t-value]\n"), environ={})
    assert "s3cr3t" not in str(err.value)


def _syncwatch(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )


def test_check_config_command(tmp_path):
    good = _syncwatch("check-config", str(write(tmp_path, "flows:\n  orders: {deadline: 10m}\n")))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout and "orders (600s)" in good.stdout
    bad = _syncwatch("check-config", str(write(tmp_path, "flows:\n  orders: {deadline: soon}\n")))
    assert bad.returncode == 2
    assert "flows.orders.deadline" in bad.stderr


def test_run_refuses_bad_config_at_start(tmp_path):
    result = _syncwatch("run", "--config", str(write(tmp_path, "snapshots:\n  retention: 1h\n")))
    assert result.returncode == 2
    assert "snapshots.retention" in result.stderr and "72h" in result.stderr


def test_run_names_the_key_when_the_data_dir_cannot_be_used(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = _syncwatch("run", "--config", str(write(tmp_path, f"storage:\n  data_dir: {blocker}/data\n")))
    assert result.returncode == 2
    assert "storage.data_dir" in result.stderr and "Traceback" not in result.stderr
