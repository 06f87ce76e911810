"""SQS collector through real boto3 against an SQS-compatible endpoint that answers oddly: counts that
are not counts, ARNs that are not ARNs, listings that never end, oversized bodies. One odd queue is
that queue's counted bad_response; the rest is reported, /metrics renders, the loop stays free."""

from __future__ import annotations

import json

import pytest
from collectors_fakes.harness import LoopWatch, run, value  # noqa: F401  (run is a fixture)
from collectors_fakes.sqs_fake import ACCOUNT, REGION, FakeSqs, attributes
from prometheus_client import CollectorRegistry, generate_latest

from syncwatch.collectors.base import REASONS
from syncwatch.collectors.manager import CollectorManager

NS = f"{ACCOUNT}/{REGION}"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake():
    f = FakeSqs()
    yield f
    f.close()


def sample_watched(run, fake, **extra):
    reg = CollectorRegistry()
    manager = CollectorManager([{"type": "sqs", "name": "aws", "endpoint_url": fake.url, **extra}], {}, reg)
    run.managers.append(manager)

    async def go():
        async with LoopWatch() as watch:
            result = await manager.sample_once()
        return result["aws"], watch.worst

    sample, worst = run(go())
    assert worst < 1.0  # the bound: /healthz answers within 1 s
    generate_latest(reg)  # /metrics renders whatever the endpoint answered
    errors = {r: v for r in REASONS if (v := value(reg, "syncwatch_collector_errors_total", collector="aws", reason=r))}
    return reg, manager, sample, errors


def test_odd_attributes_fail_that_queue_only(fake, run):
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:dead"
    fake.queues = {
        "good": attributes("good", visible="4", hidden="1", RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn})),
        "dead": attributes("dead", visible="2"),
        "nan": attributes("nan", visible="NaN"),
        "negative": attributes("negative", visible="-1"),
        "fraction": attributes("fraction", hidden="1.5"),
        "huge": attributes("huge", delayed="1" * 400),
        "boolean": attributes("boolean", visible=True),
        "missing-count": attributes("missing-count", delayed=None),
        "numeric-arn": attributes("numeric-arn", QueueArn=5),
        "not-an-arn": attributes("not-an-arn", QueueArn="arn:aws:sqs:only-four"),
        # Counted and its dead letters not linked, but the queue itself is still reported.
        "odd-redrive": attributes("odd-redrive", visible="7", RedrivePolicy="{oops"),
        "numeric-target": attributes(
            "numeric-target", visible="8", RedrivePolicy=json.dumps({"deadLetterTargetArn": 5})
        ),
    }
    reg, manager, sample, errors = sample_watched(run, fake)
    assert value(reg, "syncwatch_collector_up", collector="aws") == 1
    assert errors == {"bad_response": 10}
    assert sorted(q.queue for q in sample.queues) == ["good", "numeric-target", "odd-redrive"]
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue="good") == 4
    assert value(reg, "syncwatch_queue_messages", broker="sqs", namespace=NS, queue="odd-redrive") == 7
    assert value(reg, "syncwatch_dlq_messages", broker="sqs", namespace=NS, queue="dead", source_queue="good") == 2
    messages = sorted(e.message for e in sample.errors)
    assert "queue 'nan': GetQueueAttributes: ApproximateNumberOfMessages is not a count" in messages
    assert "queue 'odd-redrive': RedrivePolicy without a readable deadLetterTargetArn" in messages


def test_every_queue_odd_is_the_collectors_bad_response(fake, run):
    fake.queues = {"a": attributes("a", visible="x"), "b": attributes("b", QueueArn=None)}
    reg, manager, sample, errors = sample_watched(run, fake)
    assert sample is None and errors == {"bad_response": 1}
    assert value(reg, "syncwatch_collector_up", collector="aws") == 0


@pytest.mark.parametrize(
    "answer",
    [
        {"QueueUrls": [5]},
        {"QueueUrls": "http://x/1/a"},
        {"QueueUrls": [], "NextToken": 7},
    ],
    ids=["numeric-url", "string-not-list", "numeric-token"],
)
def test_odd_listing_is_a_bad_response(fake, run, answer):
    fake.answers["ListQueues"] = lambda body: answer
    reg, manager, sample, errors = sample_watched(run, fake)
    assert sample is None and errors == {"bad_response": 1}


@pytest.mark.parametrize("per_page, requests", [(1000, 11), (0, 21)], ids=["full-pages", "empty-pages"])
def test_endless_listing_is_refused(fake, run, per_page, requests):
    """A listing that always has a NextToken stops at max_queues URLs or at twice the pages those need."""
    page = [0]

    def endless(body):
        page[0] += 1
        return {"QueueUrls": [fake.queue_url(f"q-{page[0]}-{i}") for i in range(per_page)], "NextToken": str(page[0])}

    fake.answers["ListQueues"] = endless
    reg, manager, sample, errors = sample_watched(run, fake, timeout="4s")
    assert sample is None and errors == {"too_large": 1}
    assert fake.requests.count("ListQueues") == requests
    assert "ListQueues: more than max_queues (10000) queues" in str(manager.runner("aws").last_error)


def test_oversized_answer_is_refused_before_parsing(fake, run):
    fake.answers["ListQueues"] = lambda body: json.dumps({"QueueUrls": [fake.queue_url("q" * 100)] * 50_000}).encode()
    reg, manager, sample, errors = sample_watched(run, fake)
    assert sample is None and errors == {"too_large": 1}
    assert "over 4194304" in str(manager.runner("aws").last_error)
