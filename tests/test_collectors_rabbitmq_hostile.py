"""RabbitMQ collector against a management API that answers what no healthy broker would: an absurd
page_count, endless or oversized bodies, wrong types, a link table that costs too much to match.
Each case: that collector alone is refused with an exact reason, /metrics still renders, and the
event loop the sidecar shares with /healthz and OTLP intake is never held for long."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from collectors_fakes.harness import LoopWatch, run, value  # noqa: F401  (run is a fixture)
from collectors_fakes.rabbitmq_fake import FakeManagementApi, Raw, queue
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncwatch.collectors.base import REASONS
from syncwatch.collectors.manager import CollectorManager

# The event loop must answer within this; /healthz is served on it.
LOOP_BUDGET = 1.0  # the bound: /healthz answers within 1 s (the old code held the loop for seconds)


@pytest.fixture
def fake():
    f = FakeManagementApi()
    yield f
    f.close()


def manager_for(run, reg, *entries):
    manager = CollectorManager(list(entries), {}, reg)
    run.managers.append(manager)
    return manager


def sample_watched(run, manager):
    async def go():
        async with LoopWatch() as watch:
            result = await manager.sample_once()
        return result, watch.worst

    return run(go())


def errors(reg, name):
    """Every errors_total series of one collector that is not zero."""
    return {r: v for r in REASONS if (v := value(reg, "syncwatch_collector_errors_total", collector=name, reason=r))}


def scrape_ok(reg):
    """/metrics renders, and every label it carries is a string."""
    text = generate_latest(reg).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert all(isinstance(v, str) for v in s.labels.values())
    return text


def test_absurd_page_count_is_refused_before_any_further_page(fake, run, caplog):
    fake.queues = [queue("orders", ready=3)]
    fake.page_count = 200_000
    reg = CollectorRegistry()
    manager = manager_for(run, reg, {"type": "rabbitmq", "name": "odd", "url": fake.url})
    with caplog.at_level(logging.WARNING, logger="syncwatch.collectors"):
        result, worst = sample_watched(run, manager)
    assert result["odd"] is None
    assert worst < LOOP_BUDGET
    assert fake.request_count("/api/queues") == 1
    assert errors(reg, "odd") == {"too_large": 1}
    assert value(reg, "syncwatch_collector_up", collector="odd") == 0
    assert (
        "collector odd: down: too_large: /api/queues lists 200000 pages of 500 queues, over max_queues (10000)"
        in caplog.text
    )
    scrape_ok(reg)


def test_max_queues_bounds_the_listing_and_can_be_raised(fake, run):
    fake.queues = [queue(f"q-{i:04d}") for i in range(1200)]
    reg = CollectorRegistry()
    manager = manager_for(
        run,
        reg,
        {"type": "rabbitmq", "name": "small", "url": fake.url, "max_queues": 1000},
        {"type": "rabbitmq", "name": "big", "url": fake.url, "max_queues": 1200},
    )
    result = run(manager.sample_once())
    assert result["small"] is None and errors(reg, "small") == {"too_large": 1}
    assert len(result["big"].queues) == 1200 and errors(reg, "big") == {}
    # page_size 300 and max_queues 1000: four pages may be fetched, and the fourth already goes over.
    fake.requests.clear()
    reg = CollectorRegistry()
    manager = manager_for(
        run, reg, {"type": "rabbitmq", "name": "paged", "url": fake.url, "max_queues": 1000, "page_size": 300}
    )
    assert run(manager.sample_once())["paged"] is None
    assert errors(reg, "paged") == {"too_large": 1}
    assert fake.request_count("/api/queues") == 4


def endless(chunk: bytes, total: int):
    async def body():
        yield b'{"page_count":1,"items":['
        sent = 0
        while sent < total:
            yield chunk
            sent += len(chunk)
            await asyncio.sleep(0)
        yield b"{}]}"

    return body


@pytest.mark.parametrize(
    "path, answer, refusal",
    [
        pytest.param(
            "/api/queues",
            lambda: Raw(endless(b"{},{},{},{}," * 8192, 256 * 1024 * 1024)),
            "the answer is over max_response_bytes (4194304 bytes)",
            id="chunked-256MiB",
        ),
        pytest.param(
            "/api/queues",
            lambda: Raw(b'{"page_count":1,"items":[' + b"{}," * (3 * 1024 * 1024) + b"{}]}"),
            "the answer is over max_response_bytes (4194304 bytes)",
            id="content-length-9MiB",
        ),
        # Under the byte cap, but built to be slow to decode: refused by counting its objects and arrays first.
        pytest.param(
            "/api/queues",
            lambda: Raw(b'{"page_count":1,"items":[' + b'{"a":[{"b":1}]},' * 262_000 + b"{}]}"),
            "786003 JSON objects and arrays, over 8016",
            id="4MiB-nested-queue-page",
        ),
        pytest.param(
            "/api/bindings/shop",
            lambda: Raw(b"[" + b"[[{}]]," * 590_000 + b"[]]"),
            "1770002 JSON objects and arrays, over 172091",
            id="4MiB-nested-bindings",
        ),
    ],
)
def test_oversized_answer_is_refused_unparsed(fake, run, path, answer, refusal):
    fake.queues = [queue("orders", **DLX)]
    fake.answers[path] = answer()
    reg = CollectorRegistry()
    manager = manager_for(run, reg, {"type": "rabbitmq", "name": "odd", "url": fake.url})
    result, worst = sample_watched(run, manager)
    assert result["odd"] is None
    assert worst < LOOP_BUDGET
    assert errors(reg, "odd") == {"too_large": 1}
    assert refusal in str(manager.runner("odd").last_error)


NAN_PAGE = (
    b'{"page_count":1,"items":['
    + json.dumps(queue("orders")).replace('"messages_ready": 0', '"messages_ready": NaN').encode()
    + b"]}"
)
SURROGATE_PAGE = (
    b'{"page_count":1,"items":[' + json.dumps(queue("orders")).replace('"orders"', '"\\ud800"').encode() + b"]}"
)
DLX = {"arguments": {"x-dead-letter-exchange": "dlx"}}


@pytest.mark.parametrize(
    "queues, answers",
    [
        pytest.param([queue("orders", vhost=5)], {}, id="numeric-vhost"),
        pytest.param([queue(None)], {}, id="null-name"),
        pytest.param([queue("")], {}, id="empty-name"),
        pytest.param([queue("x" * 5000)], {}, id="name-over-1024-chars"),
        pytest.param([queue("orders", ready="5")], {}, id="count-as-string"),
        pytest.param([queue("orders", ready=-1)], {}, id="negative-count"),
        pytest.param([queue("orders", ready=10**400)], {}, id="count-beyond-float"),
        pytest.param([queue("orders", consumers=True)], {}, id="boolean-consumers"),
        pytest.param([queue("orders", head_message_timestamp="yesterday")], {}, id="timestamp-as-string"),
        pytest.param([queue("orders", arguments={"x-dead-letter-exchange": 7})], {}, id="numeric-dead-letter-exchange"),
        pytest.param([queue("orders", effective_policy_definition="dlx")], {}, id="policy-as-string"),
        pytest.param([], {"/api/queues": NAN_PAGE}, id="NaN-count"),
        pytest.param([], {"/api/queues": SURROGATE_PAGE}, id="lone-surrogate-name"),
        pytest.param([], {"/api/queues": {"page_count": 1, "items": {"orders": 1}}}, id="items-not-a-list"),
        pytest.param([], {"/api/queues": {"page_count": "1", "items": []}}, id="page-count-as-string"),
        pytest.param([], {"/api/queues": [queue("orders")]}, id="list-instead-of-page"),
        pytest.param([], {"/api/queues": Raw(b'{"page_count":1,"items":[')}, id="truncated-json"),
        pytest.param([], {"/api/queues": Raw(b"[" * 5_000 + b"]" * 5_000)}, id="nested-5000-deep"),
        pytest.param([], {"/api/queues": Raw(b"<html>login</html>", content_type="text/html")}, id="html-page"),
        pytest.param([queue("orders", **DLX)], {"/api/bindings/shop": b"[{},{},{}]"}, id="empty-bindings"),
        pytest.param(
            [],
            {"/api/queues": b'{"page_count":1,"items":[' + b'{"name":"q","vhost":"v"},' * 600 + b"{}]}"},
            id="more-items-than-page-size",
        ),
        pytest.param(
            [queue("orders", **DLX)],
            {"/api/exchanges/shop": [{"name": 1, "type": "topic"}]},
            id="numeric-exchange-name",
        ),
        pytest.param(
            [queue("orders", **DLX)],
            {
                "/api/bindings/shop": [
                    {"source": "dlx", "destination": "q", "destination_type": "queue", "routing_key": None}
                ]
            },
            id="null-routing-key",
        ),
    ],
)
@pytest.mark.rabbitmq  # the "good" collector beside the broken one is the real broker
def test_wrong_types_fail_that_collector_only(fake, run, queues, answers):
    fake.queues = queues
    for path, answer in answers.items():
        fake.answers[path] = (
            answer
            if isinstance(answer, Raw)
            else Raw(answer if isinstance(answer, bytes) else json.dumps(answer).encode())
        )
    reg = CollectorRegistry()
    manager = manager_for(
        run,
        reg,
        {"type": "rabbitmq", "name": "odd", "url": fake.url},
        {"type": "rabbitmq", "name": "good", "vhosts": ["/"], "queues": ["syncwatch-none-*"]},
    )
    result, worst = sample_watched(run, manager)
    assert result["odd"] is None
    assert errors(reg, "odd") == {"bad_response": 1}
    assert value(reg, "syncwatch_collector_up", collector="odd") == 0
    assert value(reg, "syncwatch_collector_up", collector="good") == 1
    assert worst < LOOP_BUDGET
    scrape_ok(reg)


def test_a_bad_answer_keeps_the_last_good_values(fake, run, caplog):
    fake.queues = [queue("orders", ready=3)]
    reg = CollectorRegistry()
    manager = manager_for(run, reg, {"type": "rabbitmq", "name": "r", "url": fake.url})
    run(manager.sample_once())
    q = dict(broker="rabbitmq", namespace="shop", queue="orders")
    assert value(reg, "syncwatch_queue_messages", **q) == 3
    fake.queues = [queue("orders", vhost=5, ready=9)]
    with caplog.at_level(logging.WARNING, logger="syncwatch.collectors"):
        run(manager.sample_once())
    assert value(reg, "syncwatch_collector_up", collector="r") == 0
    assert value(reg, "syncwatch_queue_messages", **q) == 3
    assert errors(reg, "r") == {"bad_response": 1}
    assert "collector r: down: bad_response: /api/queues: unexpected answer at items.0.vhost" in caplog.text
    scrape_ok(reg)


def test_topic_matching_has_a_budget_per_sample(fake, run, caplog):
    """400 dead-letter keys against 3,000 wildcard bindings is 4.8 million match steps: the first million
    are spent, the links they found are reported, the rest is one counted too_large, never a stall."""
    fake.queues = [
        queue(f"src-{j:03d}", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": f"k{j}.x.y"})
        for j in range(400)
    ] + [queue(f"dlq-{i:04d}") for i in range(3000)]
    fake.exchanges["shop"] = [{"name": "dlx", "type": "topic"}]
    fake.bindings["shop"] = [
        {"source": "dlx", "destination": f"dlq-{i:04d}", "destination_type": "queue", "routing_key": f"k{i}.*.#"}
        for i in range(3000)
    ]
    reg = CollectorRegistry()
    manager = manager_for(run, reg, {"type": "rabbitmq", "name": "r", "url": fake.url, "queues": ["src-*"]})
    with caplog.at_level(logging.WARNING, logger="syncwatch.collectors"):
        result, worst = sample_watched(run, manager)
    sample = result["r"]
    assert worst < LOOP_BUDGET
    assert errors(reg, "r") == {"too_large": 1}
    assert value(reg, "syncwatch_collector_up", collector="r") == 1
    linked = {d.queue: d.source_queues for d in sample.dlqs}
    # Queues are linked in name order: src-000 .. src-082 fit into 1,000,000 steps (3,000 x 4 each), and
    # src-083 finds its own binding before the budget runs out, halfway through its bindings.
    assert len(linked) == 84
    assert all(linked[f"dlq-{j:04d}"] == {f"src-{j:03d}"} for j in range(84))
    assert (
        "topic matching stopped after 1000000 steps: the dead-letter queues of 317 queue(s) may be missing"
        in caplog.text
    )
    assert not any("routes to no queue" in w for w in sample.warnings)
