"""Mapping rules and stitching: stock-instrumentation spans (no syncwatch attribute) become
exactly the ledger events a hand-instrumented integration would send."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_raw import add_attributes

from syncwatch.config.errors import ConfigError
from syncwatch.config.rules import RulesConfig
from syncwatch.intake.extract import SpanExtractor
from syncwatch.intake.trace_view import view_of
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_SOURCE
from syncwatch.rules.engine import RuleEngine
from syncwatch.settings import load_config

T0 = 1_700_000_000.0
KIND = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def request(service: str, spans: list[dict]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    add_attributes(rs.resource, {"service.name": service})
    scope = rs.scope_spans.add()
    for s in spans:
        span = scope.spans.add()
        span.trace_id, span.span_id = tid(s["trace"]), sid(s["span"])
        span.name, span.kind = s["name"], KIND[s["kind"]]
        span.start_time_unix_nano = int((T0 + s.get("t", 0)) * 1e9)
        span.end_time_unix_nano = int((T0 + s.get("t", 0) + 0.1) * 1e9)
        if s.get("error"):
            span.status.code = 2
        for link in s.get("links", ()):
            span.links.add(trace_id=tid(link[0]), span_id=sid(link[1]))
        add_attributes(span, s.get("attrs", {}))
    return req


RULES = {
    "map": {
        "order-put": {
            "flow": "orders",
            "when": {"kind": "server", "name": "PUT /orders/*", "service": "storefront"},
            "stage": "none",
            "correlation": {"attribute": "url.path", "regex": "^/orders/(?P<id>[^/]+)$"},
        },
        "order-published": {"flow": "orders", "preset": "rabbitmq-publish", "source": "storefront"},
        "order-consumed": {"flow": "orders", "preset": "rabbitmq-consume"},
        "order-sqs": {"flow": "orders", "preset": "sqs-send", "source": "storefront"},
        "order-sqs-received": {"flow": "orders", "preset": "sqs-receive"},
        "erp-post": {
            "flow": "orders",
            "preset": "http-client",
            "when": {"attributes": {"url.full": "http://erp.local/*"}},
            "destination": "erp",
            "give_up_after": 3,
        },
    }
}


def extractor(rules: dict = RULES) -> SpanExtractor:
    engine = RuleEngine(RulesConfig.model_validate(rules), 256)
    return SpanExtractor(["messaging.message.conversation_id", "syncwatch.correlation_id"], 256, engine)


def events(out) -> list[tuple]:
    """(corr, flow, stage, source, dest, code, error) of each event, sorted."""
    return sorted((e[2], e[3], e[4], e[5], e[6], e[11], e[12]) for e in out.events)


def consume(trace: int, corr: str, old: bool = True, span: int = 2) -> dict:
    """A pika consumer span naming the order in the conversation ID (old or new attribute name)."""
    key = "messaging.conversation_id" if old else "messaging.message.conversation_id"
    return {
        "trace": trace,
        "span": span,
        "name": "orders receive" if old else "orders process",
        "kind": "consumer",
        "attrs": {"messaging.system": "rabbitmq", key: corr},
    }


def post(trace: int, span: int, code: int | None, old: bool = True, t: float = 1, parent: int = 2) -> dict:
    attrs: dict = (
        {"http.method": "POST", "http.url": "http://erp.local/orders"}
        if old
        else {
            "http.request.method": "POST",
            "url.full": "http://erp.local/orders",
        }
    )
    if code is not None:
        attrs["http.status_code" if old else "http.response.status_code"] = code
    return {
        "trace": trace,
        "span": span,
        "name": "POST",
        "kind": "client",
        "attrs": attrs,
        "t": t,
        "error": code is None or code >= 400,
    }


def test_pika_and_requests_old_semconv_make_one_confirmed_transaction():
    ex = extractor()
    publish = {
        "trace": 1,
        "span": 1,
        "name": "orders send",
        "kind": "producer",
        "attrs": {
            "messaging.system": "rabbitmq",
            "messaging.destination": "orders",
            "messaging.conversation_id": "SO-1042",
            "messaging.temp_destination": "true",
        },
    }
    consumed = {
        "trace": 1,
        "span": 2,
        "name": "orders receive",
        "kind": "consumer",
        "attrs": {
            "messaging.system": "rabbitmq",
            "messaging.operation": "receive",
            "messaging.conversation_id": "SO-1042",
        },
    }
    unrelated = {
        "trace": 9,
        "span": 9,
        "name": "GET",
        "kind": "client",
        "attrs": {"http.method": "GET", "http.url": "http://cdn.local/logo.png", "http.status_code": 200},
    }
    out = ex.extract(view_of(request("storefront", [publish])), T0)
    out2 = ex.extract(view_of(request("worker", [consumed, post(1, 3, 429), post(1, 4, 201, t=2), unrelated])), T0)
    assert events(out) == [("SO-1042", "orders", STAGE_SOURCE, "storefront", None, None, None)]
    assert events(out2) == [
        ("SO-1042", "orders", STAGE_ATTEMPT, "worker", "erp", "201", None),
        ("SO-1042", "orders", STAGE_ATTEMPT, "worker", "erp", "429", "429"),
        ("SO-1042", "orders", STAGE_CONFIRM, "worker", "erp", None, None),
    ]
    # Coverage: the unrelated CDN request does not count against it.
    assert (out2.correlated, out2.uncorrelated, out2.unrelated, out2.rejected) == (3, 0, 1, 0)


def test_new_semconv_non_retryable_4xx_is_the_fail():
    ex = extractor()
    consumed = consume(5, "SO-7", old=False)
    bad = post(5, 3, 422, old=False)
    bad["attrs"]["error.type"] = "422"
    out = ex.extract(view_of(request("worker", [consumed, bad])), T0)
    assert events(out) == [
        ("SO-7", "orders", STAGE_ATTEMPT, "worker", "erp", "422", "422"),
        ("SO-7", "orders", STAGE_FAIL, "worker", "erp", None, "422"),
    ]


def test_id_learned_later_reaches_the_spans_that_came_first():
    """The worker's POSTs arrive before the span that names the order; they wait, then get it."""
    ex = extractor()
    out1 = ex.extract(view_of(request("worker", [post(7, 3, 500), post(7, 4, 201, t=2)])), T0)
    assert out1.events == [] and (out1.correlated, out1.uncorrelated) == (0, 0)
    put = {
        "trace": 7,
        "span": 1,
        "name": "PUT /orders/SO-2001",
        "kind": "server",
        "attrs": {"http.request.method": "PUT", "url.path": "/orders/SO-2001"},
    }
    out2 = ex.extract(view_of(request("storefront", [put])), T0 + 1)
    assert events(out2) == [
        ("SO-2001", "orders", STAGE_ATTEMPT, "worker", "erp", "201", None),
        ("SO-2001", "orders", STAGE_ATTEMPT, "worker", "erp", "500", "500"),
        ("SO-2001", "orders", STAGE_CONFIRM, "worker", "erp", None, None),
    ]
    assert out2.correlated == 3  # the server span and the two released POSTs


def test_sqs_message_id_and_links_carry_the_id_to_another_trace():
    """botocore's send span has no business ID (its trace does); the receive span shares the
    MessageId; the worker's POST is in the receive span's trace; a boto3sqs process span links."""
    ex = extractor()
    put = {
        "trace": 20,
        "span": 1,
        "name": "PUT /orders/SO-3",
        "kind": "server",
        "attrs": {"http.method": "PUT", "http.target": "/orders/SO-3"},
    }
    send = {
        "trace": 20,
        "span": 2,
        "name": "SQS.SendMessage",
        "kind": "client",
        "attrs": {"messaging.system": "aws.sqs", "messaging.message.id": "m-1", "rpc.method": "SendMessage"},
    }
    receive = {
        "trace": 21,
        "span": 1,
        "name": "SQS.ReceiveMessage",
        "kind": "client",
        "attrs": {"messaging.system": "aws.sqs", "messaging.message.id": "m-1"},
    }
    process = {
        "trace": 22,
        "span": 1,
        "name": "orders process",
        "kind": "consumer",
        "attrs": {"messaging.system": "aws_sqs"},
        "links": [(20, 2)],
    }
    # Receiver side first: its trace learns the ID only when the storefront's spans arrive.
    out1 = ex.extract(view_of(request("worker", [receive, post(21, 2, 201), process, post(22, 2, 500)])), T0)
    assert out1.events == []
    out2 = ex.extract(view_of(request("storefront", [send, put])), T0 + 1)
    assert events(out2) == [
        ("SO-3", "orders", STAGE_SOURCE, "storefront", None, None, None),
        ("SO-3", "orders", STAGE_ATTEMPT, "worker", "erp", "201", None),
        ("SO-3", "orders", STAGE_ATTEMPT, "worker", "erp", "500", "500"),
        ("SO-3", "orders", STAGE_CONFIRM, "worker", "erp", None, None),
    ]


def test_give_up_after_three_failed_attempts_is_the_fail():
    ex = extractor()
    consumed = consume(30, "SO-9")
    out = ex.extract(view_of(request("worker", [consumed, post(30, 3, 500), post(30, 4, 429, t=2)])), T0)
    assert [e[4] for e in sorted(out.events, key=lambda e: e[7])] == [STAGE_ATTEMPT, STAGE_ATTEMPT]
    out = ex.extract(view_of(request("worker", [post(30, 5, None, t=3)])), T0)
    assert events(out) == [
        ("SO-9", "orders", STAGE_ATTEMPT, "worker", "erp", None, "error"),
        ("SO-9", "orders", STAGE_FAIL, "worker", "erp", None, "error"),
    ]


def test_explicit_syncwatch_attributes_win():
    ex = extractor()
    span = post(40, 1, 201, old=False)
    span["attrs"].update(
        {
            "syncwatch.stage": "attempt",
            "syncwatch.flow": "prices",
            "syncwatch.correlation_id": "P-1",
            "syncwatch.destination": "pim",
        }
    )
    out = ex.extract(view_of(request("worker", [span])), T0)
    assert events(out) == [("P-1", "prices", STAGE_ATTEMPT, None, "pim", "201", None)]


def test_pending_span_evicted_by_age_counts_as_uncorrelated():
    ex = extractor({**RULES, "stitch": {"window": "10s"}})
    out = ex.extract(view_of(request("worker", [post(50, 1, 201)])), T0)
    assert (out.correlated, out.uncorrelated) == (0, 0)
    out = ex.extract(view_of(request("worker", [])), T0 + 11)
    assert (out.correlated, out.uncorrelated, out.events) == (0, 1, [])
    # And the ID, learned now, no longer reaches it.
    put = {
        "trace": 50,
        "span": 2,
        "name": "PUT /orders/SO-50",
        "kind": "server",
        "attrs": {"url.path": "/orders/SO-50"},
    }
    out = ex.extract(view_of(request("storefront", [put])), T0 + 12)
    assert (out.correlated, out.events) == (1, [])


def test_pending_spans_bounded_by_size():
    rules = {**RULES, "stitch": {"max_pending_spans": 10}}
    ex = extractor(rules)
    out = ex.extract(view_of(request("worker", [post(100 + i, 1, 201) for i in range(15)])), T0)
    assert (out.correlated, out.uncorrelated) == (0, 5)
    assert ex._rules.index.pending_size == 10


def test_a_trace_naming_two_orders_stitches_neither():
    ex = extractor()
    spans = [
        {
            "trace": 60,
            "span": i,
            "name": f"PUT /orders/SO-{i}",
            "kind": "server",
            "attrs": {"url.path": f"/orders/SO-{i}"},
        }
        for i in (1, 2)
    ]
    out = ex.extract(view_of(request("storefront", [*spans, post(60, 3, 201)])), T0)
    assert out.events == []  # the POST waits: its trace is ambiguous


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"flow": "orders", "stage": "attempt", "when": {"name_regex": "(a)\\1"}}, "rules.map.bad.when.name_regex"),
        (
            {"flow": "orders", "stage": "none", "correlation": {"attribute": "url.path", "regex": "(?<=x)y"}},
            "rules.map.bad.correlation.0.regex",
        ),
        ({"flow": "orders"}, "rules.map.bad"),
        ({"flow": "orders", "preset": "kafka"}, "rules.map.bad.preset"),
        ({"flow": "orders", "stage": "attempt", "when": {"kind": "sender"}}, "rules.map.bad.when.kind"),
    ],
)
def test_bad_rules_fail_at_start_naming_rule_and_key(tmp_path, rule, key):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rules": {"map": {"bad": rule}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.key.startswith(key), err.value


def test_index_size_and_evictions_are_metrics():
    from prometheus_client import CollectorRegistry

    from syncwatch.rules.metrics import RulesMetrics

    registry = CollectorRegistry()
    engine = RuleEngine(
        RulesConfig.model_validate({**RULES, "stitch": {"max_entries": 100, "max_pending_spans": 10}}),
        256,
        RulesMetrics(registry),
    )
    ex = SpanExtractor(["messaging.message.conversation_id"], 256, engine)
    consumes = [consume(1000 + i, f"SO-{i}", span=1) for i in range(150)]
    out = ex.extract(view_of(request("worker", [*consumes, *(post(2000 + i, 1, 201) for i in range(12))])), T0)
    assert (out.correlated, out.uncorrelated) == (150, 2)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("syncwatch_stitch_entries", index="learned") == 100
    assert value("syncwatch_stitch_entries", index="pending") == 10
    assert value("syncwatch_stitch_evictions_total", index="learned", reason="size") == 50
    assert value("syncwatch_stitch_evictions_total", index="pending", reason="size") == 2
    assert value("syncwatch_rule_matches_total", rule="order-consumed") == 150
    assert value("syncwatch_rule_matches_total", rule="erp-post") == 12


def test_a_boolean_and_the_number_1_are_told_apart():
    """Conditions compare text: `true` matches the boolean, not the integer 1, even right after a
    span with the boolean (whose decision is remembered for spans with the same values)."""
    rules = {
        "map": {
            "flagged": {
                "flow": "orders",
                "when": {"kind": "client", "attributes": {"sync.flagged": True}},
                "stage": "source",
                "correlation": "order.id",
            }
        }
    }
    req = request(
        "worker",
        [
            {"trace": 1, "span": 1, "name": "x", "kind": "client", "attrs": {"order.id": "SO-1"}},
            {"trace": 2, "span": 2, "name": "x", "kind": "client", "attrs": {"order.id": "SO-2", "sync.flagged": 1}},
        ],
    )
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="sync.flagged").value.bool_value = True
    out = extractor(rules).extract(view_of(req), T0)
    assert events(out) == [("SO-1", "orders", STAGE_SOURCE, "worker", None, None, None)]
    assert (out.correlated, out.unrelated) == (1, 1)


def test_spans_with_more_attribute_name_sets_than_remembered_all_map():
    """Spans are read by a plan per set of attribute names (at most 1,024 remembered): 1,100
    publish spans, each with one more attribute of its own, all map."""
    spans = [
        {
            "trace": 1000 + i,
            "span": 1,
            "name": "orders send",
            "kind": "producer",
            "attrs": {"messaging.system": "rabbitmq", "messaging.conversation_id": f"SO-{i}", f"app.extra_{i}": "x"},
        }
        for i in range(1100)
    ]
    ex = extractor()
    out = ex.extract(view_of(request("storefront", spans)), T0)
    assert events(out) == sorted(
        (f"SO-{i}", "orders", STAGE_SOURCE, "storefront", None, None, None) for i in range(1100)
    )
    assert (out.correlated, out.uncorrelated, out.unrelated, out.rejected) == (1100, 0, 0, 0)
    assert len(ex._plans) <= 1024


def test_a_span_with_more_attributes_than_planned_ahead_still_maps():
    """A span with 200 attributes (more than the 128 whose names are remembered) is read the same way."""
    attrs = {"messaging.system": "rabbitmq", "messaging.conversation_id": "SO-200"}
    attrs.update({f"app.field_{i:03d}": "x" for i in range(198)})
    span = {"trace": 77, "span": 1, "name": "orders send", "kind": "producer", "attrs": attrs}
    ex = extractor()
    for _ in range(2):
        out = ex.extract(view_of(request("storefront", [span])), T0)
        assert events(out) == [("SO-200", "orders", STAGE_SOURCE, "storefront", None, None, None)]
    assert ex._plans == {}


def test_a_nul_character_in_a_mapped_name_is_refused():
    """PostgreSQL's text holds no NUL: a mapped span naming one would fail every ledger write."""
    ex = extractor()
    consumed = consume(5, "SO-7", old=False)
    out = ex.extract(view_of(request("wor\x00ker", [consumed, post(5, 3, 200, old=False)])), T0)
    assert events(out) == []
    assert out.rejected == 1
    assert "contains a NUL character" in out.errors[0]


def test_spans_with_very_many_attributes_are_mapped_by_the_keys_rules_read():
    """Past MAX_DECODED attributes only the keys rules (and intake) read are decoded: old and new
    names both, and resource keys that conditions name."""
    from syncwatch.intake.attributes import MAX_DECODED

    rules = {
        "map": {
            "erp-post": {
                "flow": "orders",
                "preset": "http-client",
                "when": {
                    "attributes": {"url.full": "http://erp.local/*"},
                    "resource": {"deployment.environment": "prod"},
                },
                "destination": "erp",
                "correlation": {"attribute": "url.full", "regex": "/orders/(?P<id>[^/]+)$"},
            }
        }
    }
    junk = {f"junk.{i}": i for i in range(2 * MAX_DECODED)}
    req = request("worker", [])
    add_attributes(req.resource_spans[0].resource, {**junk, "deployment.environment": "prod"})
    span = {**post(70, 1, 201), "attrs": {**junk, "http.method": "POST", "http.url": "http://erp.local/orders/SO-70"}}
    span["attrs"]["http.status_code"] = 201
    req.resource_spans[0].scope_spans[0].spans.extend(request("worker", [span]).resource_spans[0].scope_spans[0].spans)
    out = extractor(rules).extract(view_of(req), T0)
    assert events(out) == [
        ("SO-70", "orders", 1, "worker", "erp", "201", None),
        ("SO-70", "orders", 2, "worker", "erp", None, None),
    ]
