"""Dead letters named by order on the real RabbitMQ: a consumer rejects orders into the DLQ; the
collector reads them through the management API with requeue, the book names exactly those orders
(linked to the ledger or not), redacted, and the messages are still in the DLQ afterwards."""

from __future__ import annotations

import json
import time

import pika
import pytest
from collectors_fakes.harness import run, sample_until, value  # noqa: F401  (run is a fixture)
from deadletter_data import CARD, ledger_with
from prometheus_client import CollectorRegistry
from rabbitmq_broker import amqp

from syncwatch.collectors.manager import CollectorManager
from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config
from syncwatch.dead_letters import book_for_config

pytestmark = pytest.mark.rabbitmq


def dead_letter_orders(vhost: str) -> pika.adapters.blocking_connection.BlockingChannel:
    conn = amqp(vhost)
    ch = conn.channel()
    ch.exchange_declare("orders.dlx", "direct")
    ch.queue_declare("orders.dlq")
    ch.queue_bind("orders.dlq", "orders.dlx", "orders")
    ch.queue_declare(
        "orders", arguments={"x-dead-letter-exchange": "orders.dlx", "x-dead-letter-routing-key": "orders"}
    )
    # SO-1 names its order in a header, SO-2 and SO-3 only in the body (JSON path $.order.id).
    ch.basic_publish(
        "",
        "orders",
        json.dumps({"order": {"id": "SO-1"}, "card_number": CARD}).encode(),
        pika.BasicProperties(headers={"x-order-id": "SO-1"}, message_id="m-1", content_type="application/json"),
    )
    ch.basic_publish("", "orders", json.dumps({"order": {"id": "SO-2"}, "note": f"card {CARD}"}).encode())
    ch.basic_publish("", "orders", json.dumps({"order": {"id": "SO-3"}}).encode())
    ch.basic_publish("", "orders", b"\x00\x01 not json")  # no correlation ID anywhere
    # The consumer gives up on every order: rejected without requeue, into the DLQ.
    for _ in range(4):
        method, _, _ = ch.basic_get("orders")
        ch.basic_reject(method.delivery_tag, requeue=False)
    deadline = time.monotonic() + 10
    while dlq_count(ch) < 4 and time.monotonic() < deadline:  # dead-lettering is asynchronous
        time.sleep(0.05)
    return ch


def dlq_count(ch) -> int:
    return ch.queue_declare("orders.dlq", passive=True).method.message_count


def test_dead_letters_named_by_order_and_left_in_the_dlq(vhost, run, tmp_path):
    config = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}})
    ledger_with(config, "SO-1", "SO-2")  # SO-3 never reached the ledger
    ch = dead_letter_orders(vhost)
    assert dlq_count(ch) == 4
    reg = CollectorRegistry()
    entry = {
        "type": "rabbitmq",
        "name": "rabbit",
        "vhosts": [vhost],
        "queues": ["orders"],
        "dead_letters": {
            "enabled": True,
            "max_per_queue": 10,
            "correlation": {"header": "x-order-id", "json_path": "$.order.id"},
        },
    }
    manager = CollectorManager([entry], {}, reg, dead_letters=lambda: book_for_config(config))
    book = manager.dead_letters
    assert book is not None
    sample_until(run, manager, lambda: len(book.list()) == 4)
    letters = book.list()
    named = sorted((x["correlation_id"] or "-", x["linked"]) for x in letters)
    assert named == [("-", False), ("SO-1", True), ("SO-2", True), ("SO-3", False)]
    for x in letters:
        assert x["reason"] == "rejected" and x["source_queue"] == "orders" and x["queue"] == "orders.dlq"
        assert x["deliveries"] == 1 and x["namespace"] == vhost
        assert x["dead_lettered_at"] is not None and 0 <= time.time() - x["dead_lettered_at"] < 120
    so1 = next(x for x in letters if x["correlation_id"] == "SO-1")
    assert so1["key"] == "m-1" and CARD not in so1["body"] and "[REDACTED:card_number:" in so1["body"]
    so2 = next(x for x in letters if x["correlation_id"] == "SO-2")
    assert CARD not in so2["body"] and "[REDACTED:card:" in so2["body"]
    # Nothing unredacted reached the disk.
    assert CARD.encode() not in (config.storage.data_dir / "deadletters.db").read_bytes()
    assert book.dead_lettered({"SO-1", "SO-3", "SO-9"}) == {"SO-1", "SO-3"}
    # The metric counts linked and unlinked per DLQ.
    q = dict(collector="rabbit", namespace=vhost, queue="orders.dlq")
    assert value(reg, "syncwatch_dead_letters", linked="true", **q) == 2
    assert value(reg, "syncwatch_dead_letters", linked="false", **q) == 2
    # Read again: the same four, not eight; and every message is still in the DLQ.
    run(manager.sample_once())
    assert len(book.list()) == 4
    assert dlq_count(ch) == 4
    # The requeue set the redelivered flag (the README says so).
    method, _, _ = ch.basic_get("orders.dlq")
    assert method.redelivered is True
    ch.basic_nack(method.delivery_tag, requeue=True)
    ch.connection.close()


def test_a_drained_dlq_empties_the_book_and_at_most_n_are_read(vhost, run, tmp_path):
    config = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}})
    ledger_with(config)
    ch = dead_letter_orders(vhost)
    entry = {
        "type": "rabbitmq",
        "name": "rabbit",
        "vhosts": [vhost],
        "queues": ["orders"],
        "dead_letters": {"enabled": True, "max_per_queue": 2, "correlation": {"json_path": "$.order.id"}},
    }
    reg = CollectorRegistry()
    manager = CollectorManager([entry], {}, reg, dead_letters=lambda: book_for_config(config))
    book = manager.dead_letters
    sample_until(run, manager, lambda: len(book.list()) >= 2)
    assert len(book.list()) == 2  # max_per_queue per cycle
    assert dlq_count(ch) == 4
    ch.queue_purge("orders.dlq")
    sample_until(run, manager, lambda: not book.list())
    assert book.list() == []
    ch.connection.close()


def test_dead_letters_config_errors_name_the_key():
    with pytest.raises(ConfigError) as e:
        CollectorManager(
            [{"type": "rabbitmq", "name": "r", "dead_letters": {"enabled": True}}], {}, CollectorRegistry()
        )
    assert str(e.value).startswith("collectors[0].dead_letters: correlation: name a header")
    with pytest.raises(ConfigError) as e:
        CollectorManager(
            [{"type": "rabbitmq", "name": "r", "dead_letters": {"max_per_queue": 1000}}], {}, CollectorRegistry()
        )
    assert "collectors[0].dead_letters.max_per_queue" in str(e.value)
    with pytest.raises(ConfigError) as e:
        CollectorManager(
            [{"type": "sqs", "name": "s", "dead_letters": {"enabled": True, "correlation": {"json_path": "order.id"}}}],
            {},
            CollectorRegistry(),
        )
    assert "collectors[0].dead_letters.correlation.json_path" in str(e.value)


def test_malformed_messages_are_counted_and_overlong_ids_refused():
    from syncwatch.collectors.deadletters import DeadLetterSettings
    from syncwatch.collectors.rabbitmq import parse_messages

    settings = DeadLetterSettings(enabled=True, correlation={"header": "x-order-id", "json_path": "$.order.id"})
    answer = [
        {"payload": '{"order": {"id": "SO-7"}}', "payload_encoding": "string", "payload_bytes": 25, "properties": {}},
        {"payload": 42},  # not a body
        {"payload": "!!!", "payload_encoding": "base64"},  # not base64
        "not an object",
        {"payload": "{}", "properties": {"headers": {"x-order-id": "X" * 257}}},  # over 256 characters
    ]
    letters, skipped = parse_messages(json.dumps(answer).encode(), "orders.dlq", settings, time.time())
    assert skipped == 3
    assert [x.correlation_id for x in letters] == ["SO-7", None]
