"""Service Bus collector through the real azure-servicebus SDK against a local HTTPS fake of the
namespace's management endpoint (Atom XML, paging, SAS signatures checked)."""

from __future__ import annotations

import re

import pytest
from collectors_fakes.harness import free_port, run, sample_until, value  # noqa: F401  (run is a fixture)
from collectors_fakes.servicebus_fake import Counts, FakeServiceBus
from prometheus_client import CollectorRegistry, generate_latest

from syncwatch.collectors.manager import CollectorManager
from syncwatch.config.errors import ConfigError


@pytest.fixture
def fake(tmp_path):
    f = FakeServiceBus(
        tmp_path,
        keys={
            "RootManageSharedAccessKey": ("bWFuYWdlLWtleQ==", {"Manage", "Listen", "Send"}),
            "listen-only": ("bGlzdGVuLWtleQ==", {"Listen"}),
        },
    )
    yield f
    f.close()


def entry(fake, name="sb", **extra):
    return {
        "type": "servicebus",
        "name": name,
        "connection_string": fake.connection_string(),
        "ca_file": str(fake.cert),
        **extra,
    }


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
    assert (
        value(reg, "syncwatch_dlq_messages", queue="orders-007/$DeadLetterQueue", source_queue="orders-007", **q) == 3
    )
    assert (
        value(
            reg, "syncwatch_dlq_messages", queue="orders-007/$Transfer/$DeadLetterQueue", source_queue="orders-007", **q
        )
        == 2
    )
    assert (
        value(reg, "syncwatch_dlq_messages", queue="orders-129/$DeadLetterQueue", source_queue="orders-129", **q) == 0
    )
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
    assert [p.split("?")[0] for p in fake.requests] == [
        "/$Resources/queues",
        "/$Resources/queues",
        "/$Resources/topics",
        "/inventory-events/subscriptions",
    ]


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
    manager = CollectorManager(
        [
            entry(fake, "good"),
            {**entry(fake, "wrongkey"), "connection_string": fake.connection_string(key="d3Jvbmc=")},
            {**entry(fake, "listen"), "connection_string": fake.connection_string("listen-only")},
        ],
        {},
        reg,
    )
    result = sample_until(run, manager, lambda: True)
    assert value(reg, "syncwatch_collector_up", collector="good") == 1
    for name in ("wrongkey", "listen"):
        assert value(reg, "syncwatch_collector_up", collector=name) == 0
        assert value(reg, "syncwatch_collector_errors_total", collector=name, reason="unauthorized") == 1
    assert result["listen"] is None
    assert "Manage" in str(manager.runner("listen").last_error)
    # Azure answers 401 to both; its detail tells a missing Manage claim from a refused key.
    assert "HTTP 401: the credential lacks the Manage right" in str(manager.runner("listen").last_error)
    assert "HTTP 401: the key or token was refused" in str(manager.runner("wrongkey").last_error)


def test_slow_and_stopped_namespace_then_recovery(fake, run, tmp_path):
    fake.queues["q"] = Counts(active=1)
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            entry(fake, timeout="1s", subscriptions=[]),
            {
                "type": "servicebus",
                "name": "nohost",
                "ca_file": str(fake.cert),
                "connection_string": f"Endpoint=sb://127.0.0.1:{free_port()}/;SharedAccessKeyName=k;SharedAccessKey=a2V5",
            },
        ],
        {},
        reg,
    )
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
    assert (
        manager.runner("sb").collector.describe()["auth"]
        == "connection string from $SW_TEST_SERVICEBUS_CONNECTION_STRING"
    )
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
        (
            {"connection_string_env": "SW_TEST_SERVICEBUS_UNSET"},
            "environment variable SW_TEST_SERVICEBUS_UNSET is not set",
        ),
        (
            {"connection_string_env": "SW_TEST_SERVICEBUS_EMPTY"},
            "environment variable SW_TEST_SERVICEBUS_EMPTY is empty",
        ),
        ({"connection_string": secret}, "not both"),
        ({"namespace": "myns.servicebus.windows.net"}, "connection_string_env or namespace"),
    ]:
        with pytest.raises(ConfigError) as info:
            CollectorManager([{**env_entry, **extra}], {}, CollectorRegistry())
        assert info.value.key == "collectors[0].connection_string_env", extra
        assert message in info.value.message, (extra, info.value.message)
        assert "SharedAccessKey" not in str(info.value)


def test_fake_answers_401_as_azure_does(fake):
    """Azure's Get Entity and Entities Discovery document 401 as their only refusal: missing, malformed,
    expired or wrongly signed tokens and keys without the Manage right all get it."""
    import base64
    import hashlib
    import hmac
    import time
    from urllib.parse import quote_plus

    import requests

    def sas(key_name: str, key: str, expiry: int) -> str:
        resource = quote_plus(f"https://{fake.host}/$Resources/queues")
        sig = base64.b64encode(
            hmac.new(key.encode(), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
        ).decode()
        return f"SharedAccessSignature sr={resource}&sig={quote_plus(sig)}&se={expiry}&skn={key_name}"

    fake.queues["q"] = Counts()
    url = f"https://{fake.host}/$Resources/queues"
    later = int(time.time()) + 600
    cases = [
        ({}, "MissingToken"),
        ({"Authorization": "Bearer abc"}, "InvalidAuthorizationToken"),
        ({"Authorization": sas("RootManageSharedAccessKey", "bWFuYWdlLWtleQ==", 1)}, "ExpiredToken"),
        ({"Authorization": sas("RootManageSharedAccessKey", "d3Jvbmc=", later)}, "InvalidSignature"),
        ({"Authorization": sas("listen-only", "bGlzdGVuLWtleQ==", later)}, "Manage,EntityRead claims required"),
    ]
    for header, detail in cases:
        r = requests.get(url, headers=header, verify=str(fake.cert), timeout=10)
        assert (r.status_code, detail in r.text) == (401, True), (detail, r.status_code, r.text)
    r = requests.get(
        url,
        headers={"Authorization": sas("RootManageSharedAccessKey", "bWFuYWdlLWtleQ==", later)},
        verify=str(fake.cert),
        timeout=10,
    )
    assert r.status_code == 200


def sample_watched(run, manager):
    from collectors_fakes.harness import LoopWatch

    async def go():
        async with LoopWatch() as watch:
            result = await manager.sample_once()
        return result, watch.worst

    run.managers.append(manager)
    result, worst = run(go())
    assert worst < 1.0  # the bound: /healthz answers within 1 s
    return result


def error_counts(reg, name):
    from syncwatch.collectors.base import REASONS

    return {r: v for r in REASONS if (v := value(reg, "syncwatch_collector_errors_total", collector=name, reason=r))}


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda x: re.sub(r"ActiveMessageCount>\d+<", "ActiveMessageCount>-5<", x), id="negative-count"),
        pytest.param(
            lambda x: re.sub(r"ActiveMessageCount>\d+<", "ActiveMessageCount>many<", x), id="count-not-a-number"
        ),
        pytest.param(
            lambda x: re.sub(r'<title type="text">[^<]*</title>', '<title type="text"></title>', x), id="empty-name"
        ),
        pytest.param(lambda x: re.sub(r'<title type="text">[^<]*</title>', "", x), id="no-name"),
        pytest.param(lambda x: x[: len(x) // 2], id="truncated-xml"),
    ],
)
def test_odd_entity_descriptions_are_a_bad_response(fake, run, mangle):
    fake.queues["orders"] = Counts(active=3)
    fake.mangle = mangle
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["orders*"], subscriptions=[])], {}, reg)
    result = sample_watched(run, manager)
    assert result["sb"] is None
    assert error_counts(reg, "sb") == {"bad_response": 1}
    generate_latest(reg)


def test_one_odd_named_queue_fails_that_queue_only(fake, run):
    fake.queues["orders"] = Counts(active=3)
    fake.queues["payments"] = Counts(active=4)
    fake.mangle = lambda x: x.replace("ActiveMessageCount>3<", "ActiveMessageCount>-3<")
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["orders", "payments"], subscriptions=[])], {}, reg)
    result = sample_watched(run, manager)
    assert [q.queue for q in result["sb"].queues] == ["payments"]
    assert error_counts(reg, "sb") == {"bad_response": 1}
    assert "queue 'orders': active_message_count is not a count" in result["sb"].errors[0].message


def test_endless_and_oversized_listings_are_refused(fake, run):
    fake.queues["orders"] = Counts(active=3)
    fake.endless_next = True
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["orders*"], subscriptions=[], max_queues=100)], {}, reg)
    assert sample_watched(run, manager)["sb"] is None
    assert error_counts(reg, "sb") == {"too_large": 1}
    assert len(fake.requests) == 4  # max_queues 100 allows 3 pages of 100; the 4th is refused
    fake.endless_next = False
    fake.requests.clear()
    fake.pad_bytes = 6 * 1024 * 1024
    reg = CollectorRegistry()
    manager = CollectorManager([entry(fake, queues=["orders*"], subscriptions=[])], {}, reg)
    assert sample_watched(run, manager)["sb"] is None
    assert error_counts(reg, "sb") == {"too_large": 1}
    assert "an answer over 4194304 bytes" in str(manager.runner("sb").last_error)
