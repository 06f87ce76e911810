"""Service Bus collector through the real azure-servicebus SDK against a local HTTPS fake of the
namespace's management endpoint (Atom XML, paging, SAS signatures checked)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from collectors.manager import CollectorManager
from exporter.errors import ConfigError
from collectors_fakes.harness import free_port, run, sample_until, value  # noqa: F401  (run is a fixture)
from collectors_fakes.servicebus_fake import Counts, FakeServiceBus


@pytest.fixture
def fake(tmp_path):
    f = FakeServiceBus(tmp_path, keys={
        "RootManageSharedAccessKey": ("bWFuYWdlLWtleQ==", {"Manage", "Listen", "Send"}),
        "listen-only": ("bGlzdGVuLWtleQ==", {"Listen"}),
    })
    yield f
    f.close()


def entry(fake, name="sb", **extra):
    return {"type": "servicebus", "name": name, "connection_string": fake.connection_string(), "ca_file": str(fake.cert), **extra}


def test_queues_subscriptions_and_their_dead_letter_queues(fake, run):
    for i in range(130):  # two pages of 100
        fake.queues[f"orders-{i:03d}"] = Counts()
    fake.queues["orders-007"] = Counts(active=12, dead_letter=3, scheduled=4, transfer=1, transfer_dead_letter=2)
    fake.queues["other"] = Counts(active=99)
    fake.topics["inventory-events"] = {"wms": Counts(active=5, dead_letter=7), "storefront": Counts(active=1)}
    fake.topics["unwatched"] = {"x": Counts(dead_letter=50)}
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["orders-*"], subscriptions=["inventory-events/*"])], {}, reg)
    result = sample_until(run, manager, lambda: True)
    q = dict(broker="servicebus", namespace=fake.host)

    assert value(reg, "syncwatch_collector_up", collector="sb") == 1
    assert len([x for x in result["sb"].queues if x.queue.startswith("orders-")]) == 130
    assert value(reg, "syncwatch_queue_messages", queue="orders-007", **q) == 12
    assert value(reg, "syncwatch_queue_messages_delayed", queue="orders-007", **q) == 4
    assert value(reg, "syncwatch_dlq_messages", queue="orders-007/$DeadLetterQueue", source_queue="orders-007", **q) == 3
    assert value(reg, "syncwatch_dlq_messages", queue="orders-007/$Transfer/$DeadLetterQueue", source_queue="orders-007", **q) == 2
    assert value(reg, "syncwatch_dlq_messages", queue="orders-129/$DeadLetterQueue", source_queue="orders-129", **q) == 0
    sub = "inventory-events/Subscriptions/wms"
    assert value(reg, "syncwatch_queue_messages", queue=sub, **q) == 5
    assert value(reg, "syncwatch_dlq_messages", queue=sub + "/$DeadLetterQueue", source_queue=sub, **q) == 7
    assert value(reg, "syncwatch_queue_messages", queue="inventory-events/Subscriptions/storefront", **q) == 1
    # Service Bus has no in-flight count: the series is absent rather than a made-up zero.
    assert value(reg, "syncwatch_queue_messages_in_flight", queue="orders-007", **q) is None
    assert value(reg, "syncwatch_queue_messages", queue="other", **q) is None
    assert value(reg, "syncwatch_queue_messages", queue="unwatched/Subscriptions/x", **q) is None
    # 2 queue pages + 1 topic page + 1 subscription page of the selected topic.
    assert result["sb"].api_calls == 4
    assert [p.split("?")[0] for p in fake.requests] == ["/$Resources/queues", "/$Resources/queues", "/$Resources/topics",
                                                         "/inventory-events/subscriptions"]


def test_named_queues_and_a_missing_one(fake, run):
    fake.queues["payments"] = Counts(active=2, dead_letter=1)
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["payments", "no-such-queue"], subscriptions=[])], {}, reg)
    sample_until(run, manager, lambda: True)
    q = dict(broker="servicebus", namespace=fake.host)
    assert value(reg, "syncwatch_queue_messages", queue="payments", **q) == 2
    assert value(reg, "syncwatch_dlq_messages", queue="payments/$DeadLetterQueue", source_queue="payments", **q) == 1
    assert value(reg, "syncwatch_collector_errors_total", collector="sb", reason="not_found") == 1
    assert value(reg, "syncwatch_collector_up", collector="sb") == 1


def test_wrong_key_and_missing_manage_right_are_unauthorized(fake, run):
    fake.queues["q"] = Counts(active=1)
    reg = CollectorRegistry()
    manager = CollectorManager([
        entry(fake, "good"),
        {**entry(fake, "wrongkey"), "connection_string": fake.connection_string(key="d3Jvbmc=")},
        {**entry(fake, "listen"), "connection_string": fake.connection_string("listen-only")},
    ], {}, reg)
    result = sample_until(run, manager, lambda: True)
    assert value(reg, "syncwatch_collector_up", collector="good") == 1
    for name in ("wrongkey", "listen"):
        assert value(reg, "syncwatch_collector_up", collector=name) == 0
        assert value(reg, "syncwatch_collector_errors_total", collector=name, reason="unauthorized") == 1
    assert result["listen"] is None
    assert "Manage" in str(manager.runner("listen").last_error)
    assert "HTTP 403" in str(manager.runner("listen").last_error)
    assert "HTTP 401" in str(manager.runner("wrongkey").last_error)


def test_slow_and_stopped_namespace_then_recovery(fake, run, tmp_path):
    fake.queues["q"] = Counts(active=1)
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, timeout="1s", subscriptions=[]),
                                {"type": "servicebus", "name": "nohost", "ca_file": str(fake.cert),
                                 "connection_string": f"Endpoint=sb://127.0.0.1:{free_port()}/;SharedAccessKeyName=k;SharedAccessKey=a2V5"}],
                               {}, reg)
    sample_until(run, manager, lambda: True)
    assert value(reg, "syncwatch_collector_up", collector="sb") == 1
    assert value(reg, "syncwatch_collector_up", collector="nohost") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="nohost", reason="unreachable") == 1
    fake.delay = 2.5
    run(manager.sample_once())
    assert value(reg, "syncwatch_collector_up", collector="sb") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="sb", reason="timeout") == 1
    fake.delay = 0
    fake.queues["q"] = Counts(active=6)
    run(manager.sample_once())
    assert value(reg, "syncwatch_collector_up", collector="sb") == 1
    assert value(reg, "syncwatch_queue_messages", broker="servicebus", namespace=fake.host, queue="q") == 6


def test_throttled_namespace(fake, run):
    fake.queues["q"] = Counts(active=1)
    fake.fail_with = 429
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, subscriptions=[])], {}, reg)
    sample_until(run, manager, lambda: True)
    assert value(reg, "syncwatch_collector_up", collector="sb") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="sb", reason="throttled") == 1
    fake.fail_with = None
    run(manager.sample_once())
    assert value(reg, "syncwatch_collector_up", collector="sb") == 1


def test_connection_string_from_environment_variable(fake, run, monkeypatch):
    """`connection_string_env` names the variable (the Helm chart fills it from a Secret)."""
    fake.queues["payments"] = Counts(active=4, dead_letter=2)
    monkeypatch.setenv("SW_TEST_SERVICEBUS_CONNECTION_STRING", fake.connection_string())
    env_entry = {k: v for k, v in entry(fake, subscriptions=[]).items() if k != "connection_string"}
    env_entry["connection_string_env"] = "SW_TEST_SERVICEBUS_CONNECTION_STRING"
    reg = CollectorRegistry()
    manager = CollectorManager([env_entry], {}, reg)
    assert manager.runner("sb").collector.describe()["auth"] == "connection string from $SW_TEST_SERVICEBUS_CONNECTION_STRING"
    sample_until(run, manager, lambda: True)
    q = dict(broker="servicebus", namespace=fake.host)
    assert value(reg, "syncwatch_collector_up", collector="sb") == 1
    assert value(reg, "syncwatch_queue_messages", queue="payments", **q) == 4
    assert value(reg, "syncwatch_dlq_messages", queue="payments/$DeadLetterQueue", source_queue="payments", **q) == 2

    # Missing or empty variable, or together with connection_string / namespace: a config error naming the key,
    # never showing the secret.
    secret = fake.connection_string()
    monkeypatch.delenv("SW_TEST_SERVICEBUS_UNSET", raising=False)
    monkeypatch.setenv("SW_TEST_SERVICEBUS_EMPTY", "")
    for extra, message in [
        ({"connection_string_env": "SW_TEST_SERVICEBUS_UNSET"}, "environment variable SW_TEST_SERVICEBUS_UNSET is not set"),
        ({"connection_string_env": "SW_TEST_SERVICEBUS_EMPTY"}, "environment variable SW_TEST_SERVICEBUS_EMPTY is empty"),
        ({"connection_string": secret}, "not both"),
        ({"namespace": "myns.servicebus.windows.net"}, "connection_string_env or namespace"),
    ]:
        with pytest.raises(ConfigError) as info:
            CollectorManager([{**env_entry, **extra}], {}, CollectorRegistry())
        assert info.value.key == "collectors[0].connection_string_env", extra
        assert message in info.value.message, (extra, info.value.message)
        assert "SharedAccessKey" not in str(info.value)
