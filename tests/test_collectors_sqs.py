"""SQS collector through boto3 against moto_server (started here), as against AWS."""

from __future__ import annotations

import uuid

import pytest
from collectors_fakes.harness import free_port, run, sample_until, value  # noqa: F401  (run is a fixture)
from collectors_fakes.tcp_proxy import TcpProxy
from moto_launcher import MotoServer
from prometheus_client import CollectorRegistry
from sqs_data import NS, fail_until_dead_lettered, make_queue, sqs

from syncwatch.collectors.manager import CollectorManager

pytestmark = pytest.mark.usefixtures("aws_env")


def test_depths_redrive_fifo_and_configured_dlq(moto, run):
    c = sqs(moto)
    p = f"t{uuid.uuid4().hex[:6]}"
    _, dlq_arn = make_queue(c, f"{p}-orders-dlq")
    orders, _ = make_queue(c, f"{p}-orders", dlq_arn)
    for i in range(2):
        c.send_message(QueueUrl=orders, MessageBody=f"bad-{i}")
    fail_until_dead_lettered(c, orders)
    # Now one visible, one in flight, one delayed.
    c.send_message(QueueUrl=orders, MessageBody="in-flight")
    assert c.receive_message(QueueUrl=orders, VisibilityTimeout=600)["Messages"]
    c.send_message(QueueUrl=orders, MessageBody="visible")
    c.send_message(QueueUrl=orders, MessageBody="later", DelaySeconds=900)

    _, fifo_dlq_arn = make_queue(c, f"{p}-pay-dlq.fifo", fifo=True)
    pay, _ = make_queue(c, f"{p}-pay.fifo", fifo_dlq_arn, fifo=True)
    c.send_message(QueueUrl=pay, MessageBody="dead", MessageGroupId="g")
    fail_until_dead_lettered(c, pay)
    c.send_message(QueueUrl=pay, MessageBody="alive", MessageGroupId="g")

    # A DLQ configured by name whose source queue is outside the selection.
    _, legacy_arn = make_queue(c, f"{p}-legacy-dlq")
    make_queue(c, f"x{p}-legacy-src", legacy_arn)
    make_queue(c, f"x{p}-unwatched")

    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {
                "type": "sqs",
                "name": "aws",
                "endpoint_url": moto.url,
                "region": "us-east-1",
                "queues": [f"{p}-*"],
                "dead_letter_queues": [f"{p}-legacy-dlq"],
            }
        ],
        {},
        reg,
    )
    result = sample_until(run, manager, lambda: True)
    q = dict(broker="sqs", namespace=NS)
    assert value(reg, "syncwatch_collector_up", collector="aws") == 1
    assert value(reg, "syncwatch_queue_messages", queue=f"{p}-orders", **q) == 1
    assert value(reg, "syncwatch_queue_messages_in_flight", queue=f"{p}-orders", **q) == 1
    assert value(reg, "syncwatch_queue_messages_delayed", queue=f"{p}-orders", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue=f"{p}-orders-dlq", source_queue=f"{p}-orders", **q) == 2
    assert value(reg, "syncwatch_queue_messages", queue=f"{p}-pay.fifo", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue=f"{p}-pay-dlq.fifo", source_queue=f"{p}-pay.fifo", **q) == 1
    assert value(reg, "syncwatch_dlq_messages", queue=f"{p}-legacy-dlq", source_queue=f"x{p}-legacy-src", **q) == 0
    # DLQs are not ordinary queues; queues outside the selection are not read.
    assert value(reg, "syncwatch_queue_messages", queue=f"{p}-orders-dlq", **q) is None
    assert value(reg, "syncwatch_queue_messages", queue=f"x{p}-unwatched", **q) is None
    assert sorted(x.queue for x in result["aws"].queues) == [f"{p}-orders", f"{p}-pay.fifo"]
    assert value(reg, "syncwatch_collector_interval_seconds", collector="aws") == 10  # a DLQ holds messages

    # The next cycle reuses discovery: one GetQueueAttributes per queue and DLQ, nothing else.
    calls = value(reg, "syncwatch_collector_api_calls_total", collector="aws")
    run(manager.sample_once())
    assert value(reg, "syncwatch_collector_api_calls_total", collector="aws") - calls == 5


def test_dlq_outside_selection_is_found_from_redrive_policy(moto, run):
    c = sqs(moto)
    p = f"t{uuid.uuid4().hex[:6]}"
    _, dlq_arn = make_queue(c, f"dead-{p}")
    src, _ = make_queue(c, f"{p}-src", dlq_arn, max_receive=1)
    c.send_message(QueueUrl=src, MessageBody="x")
    fail_until_dead_lettered(c, src)
    reg = CollectorRegistry()
    manager = CollectorManager(
        [{"type": "sqs", "name": "aws", "endpoint_url": moto.url, "queues": [f"{p}-src"]}], {}, reg
    )
    sample_until(run, manager, lambda: True)
    assert (
        value(reg, "syncwatch_dlq_messages", broker="sqs", namespace=NS, queue=f"dead-{p}", source_queue=f"{p}-src")
        == 1
    )
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue=f"{p}-src") == 0


def test_listing_is_paginated(moto, run):
    c = sqs(moto)
    p = f"t{uuid.uuid4().hex[:6]}"
    for i in range(25):
        c.create_queue(QueueName=f"{p}-{i:04d}")
    # Sources of a DLQ are paginated the same way.
    _, dlq_arn = make_queue(c, f"{p}-dlq")
    for i in range(12):
        make_queue(c, f"src{p}-{i:02d}", dlq_arn)
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {
                "type": "sqs",
                "name": "aws",
                "endpoint_url": moto.url,
                "queues": [f"{p}-0*"],
                "dead_letter_queues": [f"{p}-dlq"],
                "list_page_size": 10,
            }
        ],
        {},
        reg,
    )
    result = sample_until(run, manager, lambda: True)
    assert len(result["aws"].queues) == 25
    # 3 ListQueues pages of 10 + GetQueueUrl of the DLQ + ListDeadLetterSourceQueues + 26 GetQueueAttributes.
    assert result["aws"].api_calls == 31
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue=f"{p}-0024") == 0
    sources = ",".join(sorted(f"src{p}-{i:02d}" for i in range(12)))
    assert value(reg, "syncwatch_dlq_messages", broker="sqs", namespace=NS, queue=f"{p}-dlq", source_queue=sources) == 0


def test_profile_and_assumed_role(moto, run, tmp_path, monkeypatch):
    c = sqs(moto)
    name = f"t{uuid.uuid4().hex[:6]}-creds"
    c.create_queue(QueueName=name)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "aws-credentials").write_text("[ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = opssecret\n")
    (tmp_path / "aws-config").write_text("[profile ops]\nregion = us-east-1\n")
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {"type": "sqs", "name": "profile", "profile": "ops", "endpoint_url": moto.url, "queues": [name]},
            {
                "type": "sqs",
                "name": "role",
                "profile": "ops",
                "endpoint_url": moto.url,
                "sts_endpoint_url": moto.url,
                "role_arn": "arn:aws:iam::123456789012:role/syncwatch-reader",
                "queues": [name],
            },
            {"type": "sqs", "name": "noprofile", "profile": "missing", "endpoint_url": moto.url, "queues": [name]},
        ],
        {},
        reg,
    )
    sample_until(run, manager, lambda: True)
    assert value(reg, "syncwatch_collector_up", collector="profile") == 1
    assert value(reg, "syncwatch_collector_up", collector="role") == 1
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue=name) == 0
    assert value(reg, "syncwatch_collector_up", collector="noprofile") == 0
    assert value(reg, "syncwatch_collector_errors_total", collector="noprofile", reason="unauthorized") == 1


def test_wrong_credentials_are_unauthorized(run):
    # moto checks signatures against IAM once INITIAL_NO_AUTH_ACTION_COUNT actions have passed.
    strict = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        reg = CollectorRegistry()
        manager = CollectorManager(
            [{"type": "sqs", "name": "aws", "endpoint_url": strict.url, "queues": ["q-*"]}], {}, reg
        )
        sample_until(run, manager, lambda: True)
        assert value(reg, "syncwatch_collector_up", collector="aws") == 0
        assert value(reg, "syncwatch_collector_errors_total", collector="aws", reason="unauthorized") == 1
    finally:
        strict.stop()


@pytest.mark.rabbitmq  # one of the collectors is the real RabbitMQ, beside the SQS ones
def test_unreachable_slow_and_recovery(moto, run):
    c = sqs(moto)
    name = f"t{uuid.uuid4().hex[:6]}-faults"
    url = c.create_queue(QueueName=name)["QueueUrl"]
    c.send_message(QueueUrl=url, MessageBody="x")
    proxy = TcpProxy("127.0.0.1", moto.port).start()
    reg = CollectorRegistry()
    manager = CollectorManager(
        [
            {
                "type": "sqs",
                "name": "proxied",
                "endpoint_url": f"http://127.0.0.1:{proxy.port}",
                "queues": [name],
                "timeout": "1s",
            },
            {"type": "sqs", "name": "nohost", "endpoint_url": f"http://127.0.0.1:{free_port()}", "queues": [name]},
            {"type": "rabbitmq", "name": "rabbit", "queues": ["none-such-queue-anywhere"]},
        ],
        {},
        reg,
    )

    def up(n):
        return value(reg, "syncwatch_collector_up", collector=n)

    sample_until(run, manager, lambda: True)
    assert (up("proxied"), up("nohost"), up("rabbit")) == (1, 0, 1)
    assert value(reg, "syncwatch_collector_errors_total", collector="nohost", reason="unreachable") == 1
    # The endpoint goes away mid-run (open connections cut, new ones refused).
    proxy.stop()
    run(manager.sample_once())
    assert up("proxied") == 0 and up("rabbit") == 1
    assert value(reg, "syncwatch_collector_errors_total", collector="proxied", reason="unreachable") == 1
    proxy.delay = 3.0
    proxy.start()
    run(manager.sample_once())
    assert up("proxied") == 0 and up("rabbit") == 1
    assert value(reg, "syncwatch_collector_errors_total", collector="proxied", reason="timeout") == 1
    # The healthy collector's pass is not held up by the slow one.
    assert value(reg, "syncwatch_collector_sample_duration_seconds", collector="rabbit") < 1.0
    proxy.delay = 0.0
    run(manager.sample_once())
    assert up("proxied") == 1
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue=name) == 1
    proxy.close()
