"""RabbitMQ collector against the real broker on this machine (management API on :15672)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import quote

import pika
import pytest
from collectors_fakes.harness import free_port, run, sample_until, value  # noqa: F401  (run is a fixture)
from collectors_fakes.tcp_proxy import TcpProxy
from prometheus_client import CollectorRegistry
from rabbitmq_broker import amqp, api

from syncwatch.collectors.manager import CollectorManager
from syncwatch.config.errors import ConfigError


def build_topology(vhost: str, conn: pika.BlockingConnection):
    ch = conn.channel()
    # DLX by queue argument, with a routing key; a second bound queue with another key is not a DLQ.
    ch.exchange_declare("orders.dlx", "direct")
    ch.queue_declare("orders.dlq")
    ch.queue_bind("orders.dlq", "orders.dlx", "orders")
    ch.queue_declare("audit")
    ch.queue_bind("audit", "orders.dlx", "something-else")
    ch.queue_declare(
        "orders", arguments={"x-dead-letter-exchange": "orders.dlx", "x-dead-letter-routing-key": "orders"}
    )
    # DLX by policy, on a quorum queue, into a fanout exchange.
    api(
        "PUT",
        f"/api/policies/{quote(vhost, safe='')}/payments-dlx",
        {"pattern": "^payments$", "apply-to": "queues", "definition": {"dead-letter-exchange": "payments.dlx"}},
    )
    ch.exchange_declare("payments.dlx", "fanout")
    ch.queue_declare("payments.dlq")
    ch.queue_bind("payments.dlq", "payments.dlx")
    ch.queue_declare("payments", durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare("ignored-queue")
    return ch


@pytest.mark.rabbitmq
def test_depths_dead_letters_by_argument_and_policy(vhost, run):
    conn = amqp(vhost)
    ch = build_topology(vhost, conn)
    stamp = int(time.time()) - 100
    for i in range(5):
        ch.basic_publish("", "orders", f"o{i}".encode(), pika.BasicProperties(timestamp=stamp))
    for i in range(3):
        ch.basic_publish("", "payments", f"p{i}".encode())
    ch.basic_publish("", "ignored-queue", b"x")
    # Two orders and one payment rejected into their DLQs; one order held unacknowledged.
    for _ in range(2):
        method, _, _ = ch.basic_get("orders")
        ch.basic_reject(method.delivery_tag, requeue=False)
    method, _, _ = ch.basic_get("payments")
    ch.basic_reject(method.delivery_tag, requeue=False)
    held, _, _ = ch.basic_get("orders")
    assert held is not None

    reg = CollectorRegistry()
    manager = CollectorManager(
        [{"type": "rabbitmq", "name": "rabbit", "vhosts": [vhost], "queues": ["orders", "pay*"]}], {}, reg
    )
    q = dict(broker="rabbitmq", namespace=vhost)
    sample_until(
        run,
        manager,
        lambda: (
            value(reg, "syncwatch_queue_messages_in_flight", queue="orders", **q) == 1
            and value(reg, "syncwatch_dlq_messages", queue="orders.dlq", source_queue="orders", **q) == 2
            and value(reg, "syncwatch_queue_messages", queue="payments", **q) == 2
            and value(reg, "syncwatch_dlq_messages", queue="payments.dlq", source_queue="payments", **q) == 1
        ),
    )

    assert value(reg, "syncwatch_collector_up", collector="rabbit") == 1
    assert value(reg, "syncwatch_queue_messages", queue="orders", **q) == 2
    assert value(reg, "syncwatch_queue_messages_in_flight", queue="orders", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue="orders.dlq", source_queue="orders", **q) == 2
    assert value(reg, "syncwatch_queue_messages", queue="payments", **q) == 2
    assert value(reg, "syncwatch_dlq_messages", queue="payments.dlq", source_queue="payments", **q) == 1
    assert value(reg, "syncwatch_queue_consumers", queue="orders", **q) == 0  # basic.get is not a consumer
    # The oldest ready order carries the timestamp it was published with.
    age = value(reg, "syncwatch_queue_oldest_message_age_seconds", queue="orders", **q)
    assert age is not None and 100 <= age < 160
    # DLQs are not also reported as ordinary queues (they never drain by design); unselected queues are absent;
    # a queue bound to the DLX under another routing key is not a DLQ.
    assert value(reg, "syncwatch_queue_messages", queue="orders.dlq", **q) is None
    assert value(reg, "syncwatch_queue_messages", queue="ignored-queue", **q) is None
    assert value(reg, "syncwatch_dlq_messages", queue="audit", source_queue="orders", **q) is None
    # A DLQ non-empty puts this collector into fast sampling.
    assert value(reg, "syncwatch_collector_interval_seconds", collector="rabbit") == 10
    assert value(reg, "syncwatch_collector_errors_total", collector="rabbit", reason="not_found") == 0
    conn.close()


@pytest.mark.rabbitmq
def test_paging_and_missing_named_queue(vhost, run):
    conn = amqp(vhost)
    ch = conn.channel()
    names = [f"bulk-{i:03d}" for i in range(12)]
    for n in names:
        ch.queue_declare(n)
    ch.basic_publish("", "bulk-007", b"x")
    reg = CollectorRegistry()
    # page_size 5: three pages for twelve queues.
    manager = CollectorManager(
        [{"type": "rabbitmq", "name": "r", "vhosts": [vhost], "page_size": 5, "queues": ["bulk-*", "does-not-exist"]}],
        {},
        reg,
    )
    q = dict(broker="rabbitmq", namespace=vhost)
    result = sample_until(run, manager, lambda: value(reg, "syncwatch_queue_messages", queue="bulk-007", **q) == 1)
    sample = result["r"]
    assert sorted(x.queue for x in sample.queues) == names
    assert sample.api_calls == 3
    assert value(reg, "syncwatch_queue_messages", queue="bulk-000", **q) == 0
    # A configured name that does not exist is counted, and the rest is still reported.
    assert value(reg, "syncwatch_collector_errors_total", collector="r", reason="not_found") >= 1
    assert value(reg, "syncwatch_collector_up", collector="r") == 1
    conn.close()


@pytest.mark.rabbitmq
def test_dead_letter_exchange_without_queue_is_a_warning(vhost, run):
    conn = amqp(vhost)
    conn.channel().queue_declare("lonely", arguments={"x-dead-letter-exchange": "nowhere"})
    manager = CollectorManager([{"type": "rabbitmq", "name": "r", "vhosts": [vhost]}], {}, CollectorRegistry())
    result = sample_until(run, manager, lambda: True)
    assert any("routes to no queue" in w for w in result["r"].warnings)
    conn.close()


@pytest.mark.rabbitmq
def test_faults_are_reported_and_do_not_affect_other_collectors(vhost, run):
    conn = amqp(vhost)
    conn.channel().queue_declare("steady")
    proxy = TcpProxy("127.0.0.1", 15672).start()
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {"type": "rabbitmq", "name": "good", "vhosts": [vhost]},
            {
                "type": "rabbitmq",
                "name": "proxied",
                "vhosts": [vhost],
                "url": f"http://127.0.0.1:{proxy.port}",
                "timeout": "1s",
            },
            {"type": "rabbitmq", "name": "badauth", "vhosts": [vhost], "password": "wrong"},
            {"type": "rabbitmq", "name": "nohost", "vhosts": [vhost], "url": f"http://127.0.0.1:{free_port()}"},
        ],
        {},
        reg,
    )

    def up(name):
        return value(reg, "syncwatch_collector_up", collector=name)

    def errors(name, reason):
        return value(reg, "syncwatch_collector_errors_total", collector=name, reason=reason)

    sample_until(
        run,
        manager,
        lambda: value(reg, "syncwatch_queue_messages", broker="rabbitmq", namespace=vhost, queue="steady") == 0,
    )
    assert (up("good"), up("proxied"), up("badauth"), up("nohost")) == (1, 1, 0, 0)
    assert errors("badauth", "unauthorized") >= 1 and errors("nohost", "unreachable") >= 1

    # Broker stopped mid-run: down as unreachable, the others carry on.
    proxy.stop()
    run(manager.sample_once())
    assert up("proxied") == 0 and errors("proxied", "unreachable") == 1 and up("good") == 1

    # Slow broker: each call times out after 1s; the healthy collector is not held up by it.
    proxy.delay = 3.0
    proxy.start()
    run(manager.sample_once())
    assert up("proxied") == 0 and errors("proxied", "timeout") == 1
    assert value(reg, "syncwatch_collector_sample_duration_seconds", collector="good") < 1.0

    # The broker comes back: the collector recovers by itself.
    proxy.delay = 0.0
    run(manager.sample_once())
    assert up("proxied") == 1 and up("good") == 1
    assert errors("proxied", "unreachable") == 1 and errors("proxied", "timeout") == 1
    assert value(reg, "syncwatch_queue_messages", broker="rabbitmq", namespace=vhost, queue="steady") == 0
    proxy.close()
    conn.close()


@pytest.mark.rabbitmq
def test_dead_letters_through_topic_exchange_and_exchange_binding(vhost, run):
    conn = amqp(vhost)
    ch = conn.channel()
    ch.exchange_declare("dlx.topic", "topic")
    ch.exchange_declare("dlx.fan", "fanout")
    ch.exchange_bind("dlx.fan", "dlx.topic", "#.failed")  # exchange-to-exchange
    ch.queue_declare("all-failures")
    ch.queue_bind("all-failures", "dlx.fan")
    ch.queue_declare("order-failures")
    ch.queue_bind("order-failures", "dlx.topic", "orders.*")
    ch.queue_declare("price-failures")
    ch.queue_bind("price-failures", "dlx.topic", "prices.*")
    ch.queue_declare(
        "orders", arguments={"x-dead-letter-exchange": "dlx.topic", "x-dead-letter-routing-key": "orders.failed"}
    )
    ch.basic_publish("", "orders", b"x")
    method, _, _ = ch.basic_get("orders")
    ch.basic_reject(method.delivery_tag, requeue=False)
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "rabbitmq", "name": "r", "vhosts": [vhost], "queues": ["orders"]}], {}, reg)
    q = dict(broker="rabbitmq", namespace=vhost, source_queue="orders")
    sample_until(
        run,
        manager,
        lambda: (
            value(reg, "syncwatch_dlq_messages", queue="all-failures", **q) == 1
            and value(reg, "syncwatch_dlq_messages", queue="order-failures", **q) == 1
        ),
    )
    assert value(reg, "syncwatch_dlq_messages", queue="all-failures", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue="order-failures", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue="price-failures", **q) is None
    conn.close()


@pytest.mark.rabbitmq
def test_password_from_environment_variable(vhost, run, monkeypatch):
    """`password_env` names the variable (the Helm chart fills it from a Secret); its value is the password."""
    conn = amqp(vhost)
    conn.channel().queue_declare("from-env")
    conn.channel().basic_publish("", "from-env", b"x")
    monkeypatch.setenv("SW_TEST_RABBITMQ_PASSWORD", "guest")
    monkeypatch.setenv("SW_TEST_RABBITMQ_WRONG", "not-the-password")
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {"type": "rabbitmq", "name": "envpw", "vhosts": [vhost], "password_env": "SW_TEST_RABBITMQ_PASSWORD"},
            # The variable's value is what is sent, not the `guest` default.
            {"type": "rabbitmq", "name": "envwrong", "vhosts": [vhost], "password_env": "SW_TEST_RABBITMQ_WRONG"},
        ],
        {},
        reg,
    )
    assert manager.runner("envpw").collector.settings.password.get_secret_value() == "guest"
    q = dict(broker="rabbitmq", namespace=vhost, queue="from-env")
    sample_until(run, manager, lambda: value(reg, "syncwatch_queue_messages", **q) == 1)
    assert value(reg, "syncwatch_queue_messages", **q) == 1
    assert value(reg, "syncwatch_collector_up", collector="envpw") == 1
    assert value(reg, "syncwatch_collector_up", collector="envwrong") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="envwrong", reason="unauthorized") >= 1
    conn.close()


def test_password_env_missing_empty_or_with_password_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.delenv("SW_TEST_RABBITMQ_UNSET", raising=False)
    monkeypatch.setenv("SW_TEST_RABBITMQ_EMPTY", "")
    monkeypatch.setenv("SW_TEST_RABBITMQ_SECRET", "s3cr3t-value")
    base = {"type": "rabbitmq", "name": "r"}
    cases = [
        ({"password_env": "SW_TEST_RABBITMQ_UNSET"}, "environment variable SW_TEST_RABBITMQ_UNSET is not set"),
        ({"password_env": "SW_TEST_RABBITMQ_EMPTY"}, "environment variable SW_TEST_RABBITMQ_EMPTY is empty"),
        ({"password_env": "SW_TEST_RABBITMQ_SECRET", "password": "inline-value"}, "not both"),
        ({"password_env": "not a name"}, "expected the name of an environment variable"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError) as info:
            CollectorManager(
                [{**base, "name": "ok", "password_env": "SW_TEST_RABBITMQ_SECRET"}, {**base, **extra}],
                {},
                CollectorRegistry(),
            )
        assert info.value.key == "collectors[1].password_env", extra
        assert message in info.value.message, (extra, info.value.message)
        assert "s3cr3t-value" not in str(info.value) and "inline-value" not in str(info.value)

    # `syncwatch check-config` (the container's start path) reads the process environment.
    path = tmp_path / "config.yaml"
    path.write_text("collectors:\n  - {type: rabbitmq, name: main, password_env: SW_TEST_RABBITMQ_PASSWORD}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWATCH_", "SW_TEST_"))}
    check = [sys.executable, "-m", "syncwatch", "check-config", str(path)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(check, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "collectors[0].password_env: environment variable SW_TEST_RABBITMQ_PASSWORD is not set" in result.stderr
    result = subprocess.run(
        check,
        cwd=root,
        env={**env, "SW_TEST_RABBITMQ_PASSWORD": "s3cr3t-value"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-value" not in result.stdout + result.stderr


TOPIC_PATTERNS = [
    "",
    "#",
    "*",
    "a",
    "a.*",
    "a.#",
    "#.a",
    "*.a",
    "a.*.#",
    "#.*",
    "*.#",
    "#.#.a",
    "a..b",
    "a.#.b",
    "#.b.#",
    "*.*",
    ".",
    "a.#.#.b",
    "#.#",
]
TOPIC_KEYS = ["", "a", "b", "a.b", "a.a", "b.a", "a..b", "a.b.c.b", ".", "a.", ".a", "a.x.b", "a.x.y.b"]


@pytest.mark.rabbitmq
def test_dead_letter_links_follow_the_brokers_own_topic_routing(vhost, run):
    """For every (binding key, dead-letter key) pair the collector links exactly what RabbitMQ routes:
    the truth is read by publishing each key to the exchange and seeing which queues receive it."""
    conn = amqp(vhost)
    ch = conn.channel()
    ch.exchange_declare("dlx", "topic")
    for i, pattern in enumerate(TOPIC_PATTERNS):
        ch.queue_declare(f"dlq-{i:02d}")
        ch.queue_bind(f"dlq-{i:02d}", "dlx", pattern)
    for j, key in enumerate(TOPIC_KEYS):
        ch.basic_publish("dlx", key, str(j).encode())
    truth: dict[str, set[str]] = {}
    for i in range(len(TOPIC_PATTERNS)):
        while (got := ch.basic_get(f"dlq-{i:02d}", auto_ack=True))[0] is not None:
            truth.setdefault(f"dlq-{i:02d}", set()).add(f"src-{int(got[2]):02d}")
    for j, key in enumerate(TOPIC_KEYS):
        ch.queue_declare(f"src-{j:02d}", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": key})
    assert truth["dlq-01"] == {f"src-{j:02d}" for j in range(len(TOPIC_KEYS))}  # `#` got every key
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "rabbitmq", "name": "r", "vhosts": [vhost], "queues": ["src-*"]}], {}, reg)
    expected = len(TOPIC_KEYS) + len(truth)
    result = sample_until(
        run,
        manager,
        lambda: (s := manager.runner("r").last_sample) is not None and len(s.queues) + len(s.dlqs) == expected,
    )
    linked = {d.queue: d.source_queues for d in result["r"].dlqs}
    assert linked == truth
    conn.close()


@pytest.mark.rabbitmq
def test_pathological_topic_binding_neither_stalls_nor_misleads(vhost, run):
    """`#.#.#.#.#.#.#.#.#.nomatch` against a 24-word dead-letter key took the old backtracking match
    seconds per sample on the event loop; keys over 255 bytes are refused, counted, never guessed."""
    from collectors_fakes.harness import LoopWatch

    conn = amqp(vhost)
    ch = conn.channel()
    ch.exchange_declare("dlx", "topic")
    ch.queue_declare("never")
    ch.queue_bind("never", "dlx", "#.#.#.#.#.#.#.#.#.nomatch")
    ch.queue_declare("dead")
    ch.queue_bind("dead", "dlx", "#.#.#.#.#.#.#.#.#.a")
    ch.queue_declare(
        "orders", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": ".".join(["a"] * 24)}
    )
    # A dead-letter key and a binding key over 255 bytes (the broker takes both; AMQP clients cannot send them).
    ch.queue_declare(
        "orders-long", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "a." * 150 + "a"}
    )
    api("POST", f"/api/bindings/{quote(vhost, safe='')}/e/dlx/q/never", {"routing_key": "#." + "b." * 150 + "b"})
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "rabbitmq", "name": "r", "vhosts": [vhost], "queues": ["orders*"]}], {}, reg)

    async def watched():
        async with LoopWatch() as watch:
            result = await manager.sample_once()
        return result, watch.worst

    run.managers.append(manager)
    deadline = time.monotonic() + 30
    while True:
        result, worst = run(watched())
        sample = result["r"]
        assert worst < 0.5
        if (sample is not None and len(sample.queues) == 2 and sample.dlqs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert value(reg, "syncwatch_collector_sample_duration_seconds", collector="r") < 1.0
    assert {d.queue: d.source_queues for d in sample.dlqs} == {"dead": {"orders"}}
    refused = sorted(e.message for e in sample.errors)
    assert len(refused) == 2 and all(e.reason == "too_large" for e in sample.errors)
    assert refused[0].endswith("'dlx': a binding key of 303 bytes (over 255) is not matched")
    assert refused[1].endswith(
        "'orders-long': dead-letter routing key of 301 bytes (over 255) is not matched against topic bindings"
    )
    # orders-long's dead letters may well reach a queue: no "routes to no queue" guess for it.
    assert not any("orders-long" in w for w in sample.warnings)
    assert value(reg, "syncwatch_collector_up", collector="r") == 1
    conn.close()
