"""Dead letters named by order on SQS (moto_server): messages a consumer failed past
maxReceiveCount land in the DLQ; the collector receives them with a zero visibility timeout, the
book names exactly those orders, redacted, and the DLQ still holds every message afterwards."""

from __future__ import annotations

import json
import time

import pytest
from collectors_fakes.harness import run, sample_until, value  # noqa: F401  (run is a fixture)
from deadletter_data import CARD, ledger_with
from prometheus_client import CollectorRegistry
from sqs_data import NS, fail_until_dead_lettered, make_queue, sqs

from syncwatch.collectors.manager import CollectorManager
from syncwatch.config.models import Config
from syncwatch.dead_letters import book_for_config

pytestmark = pytest.mark.usefixtures("aws_env")


def dlq_count(client, url) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_dead_letters_named_by_order_and_left_in_the_dlq(moto, run, tmp_path):
    c = sqs(moto)
    p = f"dl{int(time.time() * 1000) % 10**9}"
    dlq_url, dlq_arn = make_queue(c, f"{p}-orders-dlq")
    src_url, _ = make_queue(c, f"{p}-orders", dlq_arn, max_receive=1)
    c.send_message(
        QueueUrl=src_url,
        MessageBody=json.dumps({"order": {"id": "SO-1"}, "card_number": CARD}),
        MessageAttributes={"order-id": {"DataType": "String", "StringValue": "SO-1"}},
    )
    c.send_message(QueueUrl=src_url, MessageBody=json.dumps({"order": {"id": "SO-2"}}))
    c.send_message(
        QueueUrl=src_url,
        MessageBody=json.dumps({"order": {"id": "SO-3"}}),
        MessageAttributes={"DeadLetterReason": {"DataType": "String", "StringValue": "price_mismatch"}},
    )
    fail_until_dead_lettered(c, src_url)
    assert dlq_count(c, dlq_url) == 3
    config = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}})
    ledger_with(config, "SO-1", "SO-3")
    reg = CollectorRegistry()
    entry = {
        "type": "sqs",
        "name": "aws",
        "endpoint_url": moto.url,
        "queues": [f"{p}-orders"],
        "dead_letters": {"enabled": True, "correlation": {"header": "order-id", "json_path": "$.order.id"}},
    }
    manager = CollectorManager([entry], {}, reg, dead_letters=lambda: book_for_config(config))
    book = manager.dead_letters
    sample_until(run, manager, lambda: len(book.list()) == 3)
    letters = sorted(book.list(), key=lambda x: x["correlation_id"])
    assert [(x["correlation_id"], x["linked"], x["reason"]) for x in letters] == [
        ("SO-1", True, "maxReceiveCount"),
        ("SO-2", False, "maxReceiveCount"),
        ("SO-3", True, "price_mismatch"),
    ]
    for x in letters:
        assert x["queue"] == f"{p}-orders-dlq" and x["namespace"] == NS
        assert x["dead_lettered_at"] is not None and 0 <= time.time() - x["dead_lettered_at"] < 120
        assert x["deliveries"] is not None and x["deliveries"] >= 2  # the consumer's receives, then ours
    assert CARD not in letters[0]["body"] and "[REDACTED:card_number:" in letters[0]["body"]
    assert CARD.encode() not in (config.storage.data_dir / "deadletters.db").read_bytes()
    q = dict(collector="aws", namespace=NS, queue=f"{p}-orders-dlq")
    assert value(reg, "syncwatch_dead_letters", linked="true", **q) == 2
    assert value(reg, "syncwatch_dead_letters", linked="false", **q) == 1
    run(manager.sample_once())
    assert len(book.list()) == 3
    # Still all in the DLQ, and visible (VisibilityTimeout=0 hid none of them).
    assert dlq_count(c, dlq_url) == 3
    visible = c.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert visible["Attributes"]["ApproximateNumberOfMessages"] == "3"
