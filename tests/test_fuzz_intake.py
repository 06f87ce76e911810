"""Hypothesis over the span attributes syncwatch reads, sent through one running sidecar: whatever
the types and values, every span is either recorded or rejected in partial_success (and counted),
nothing answers 5xx, /metrics parses without NaN, and the query API answers for every ID."""

from __future__ import annotations

import math
import time

import pytest
from faults_support import STATES, TOKEN, Api, add_resource_spans, export_response, nan_samples, scrape, set_any, total
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from otlp_raw import post
from sidecar import Sidecar

pytestmark = pytest.mark.timeout(240)

NOW = time.time()


@pytest.fixture(scope="module")
def fuzz_sidecar(tmp_path_factory):
    sc = Sidecar(
        tmp_path_factory.mktemp("fuzz"),
        {
            "api": {"token": TOKEN},
            "flows": {
                "orders": {"destinations": ["erp"], "deadline": "2s"},
                "prices": {"destinations": ["erp", "shop"]},
            },
        },
    )
    sc.start()
    yield sc
    sc.stop()


def any_value_of(scalars) -> st.SearchStrategy:
    """AnyValue messages: a scalar of any kind, or an array/kvlist of them (read as text)."""

    def array(values):
        v = AnyValue()
        for x in values:
            set_any(v.array_value.values.add(), x)
        return v

    def kvlist(items):
        v = AnyValue()
        for k, x in items.items():
            kv = v.kvlist_value.values.add()
            kv.key = k
            set_any(kv.value, x)
        return v

    return st.one_of(
        scalars,
        st.lists(scalars, max_size=3).map(array),
        st.dictionaries(st.text(max_size=5), scalars, max_size=2).map(kvlist),
        st.just(AnyValue()),
    )


INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
NUMBERS = st.one_of(INT64, FLOATS, st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 10**18, -(10**11)]))
TEXT = st.text(max_size=40)
SCALARS = st.one_of(
    TEXT,
    NUMBERS,
    st.booleans(),
    st.binary(max_size=16),
    NUMBERS.map(str),  # numbers spelled as strings, as many SDKs send them
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["", " ", "NaN", "-inf", "1e400", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "\n", "\x00"]),
)
# Values that have broken syncwatch before (issue 11), or sit on a boundary of what it reads.
EDGES = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        1e300,
        -1e11,
        -1.0,
        0.0,
        2.0**70,
        2**63 - 1,
        -(2**63),
        -5,
        99999,
        "NaN",
        "inf",
        "-1e11",
        "1e300",
        str(2**70),
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "abc",
        "",
        "x" * 5000,
        "a\nb",
    ]
)
VALUES = st.one_of(EDGES, EDGES, any_value_of(SCALARS))
TIMES = st.one_of(st.floats(NOW - 86400, NOW + 86400).map(lambda t: int(t * 1e9)), st.integers(0, 2**64 - 1))


READ = (
    "syncwatch.stage",
    "syncwatch.flow",
    "syncwatch.source",
    "syncwatch.destination",
    "peer.service",
    "server.address",
    "syncwatch.source.changed_at",
    "http.request.resend_count",
    "http.response.status_code",
    "syncwatch.response_code",
    "error.type",
    "syncwatch.idempotency_key",
    "syncwatch.correlation_id",
    "messaging.message.conversation_id",
    "correlation_id",
)
CORRS = [f"fz-{i}" for i in range(8)]  # shared by all examples: stages of one transaction meet across requests


@st.composite
def spans(draw):
    """A well-formed stage span of a configured flow, with up to three of the attributes syncwatch
    reads set to arbitrary values (or removed), so the odd value gets as far as the ledger."""
    stage = draw(st.sampled_from(["source", "attempt", "confirm", "fail"]))
    attrs = {
        "syncwatch.stage": stage,
        "syncwatch.correlation_id": draw(st.sampled_from(CORRS)),
        "syncwatch.flow": draw(st.sampled_from(["orders", "prices"])),
        "syncwatch.source": "storefront",
    }
    if stage != "source":
        attrs["syncwatch.destination"] = draw(st.sampled_from(["erp", "shop"]))
    if stage == "attempt":
        attrs["http.request.resend_count"] = draw(st.integers(0, 4))
        attrs["http.response.status_code"] = draw(st.sampled_from([200, 429, 500, 503]))
    if stage == "confirm" and draw(st.booleans()):
        attrs["syncwatch.idempotency_key"] = draw(st.sampled_from(["k1", "k2"]))
    if draw(st.booleans()):
        attrs["syncwatch.source.changed_at"] = draw(st.floats(NOW - 600, NOW))
    for key in draw(st.lists(st.sampled_from(READ), max_size=3, unique=True)):
        value = draw(st.one_of(VALUES, st.none()))
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    start = draw(st.one_of(st.floats(NOW - 600, NOW + 60).map(lambda t: int(t * 1e9)), TIMES))
    attrs["_start_ns"] = start
    attrs["_end_ns"] = draw(st.one_of(st.just(start), st.integers(start, min(start + 10**10, 2**64 - 1)), TIMES))
    return attrs


@st.composite
def requests(draw):
    req = ExportTraceServiceRequest()
    n = 0
    for _ in range(draw(st.integers(1, 2))):
        client = draw(st.lists(spans(), min_size=1, max_size=4))
        n += len(client)
        add_resource_spans(
            req,
            client,
            draw(
                st.fixed_dictionaries(
                    {}, optional={"service.name": TEXT, "syncwatch.flow": VALUES, "syncwatch.source.changed_at": VALUES}
                )
            ),
        )
    return req, n


def corr_texts(req: ExportTraceServiceRequest) -> set[str]:
    """The correlation values in a request, as text (what a user would look up)."""
    from syncwatch.intake.attributes import any_value

    out = set()
    for rs in req.resource_spans:
        for kv in list(rs.resource.attributes) + [kv for ss in rs.scope_spans for s in ss.spans for kv in s.attributes]:
            if kv.key in ("syncwatch.correlation_id", "correlation_id", "messaging.message.conversation_id"):
                value = any_value(kv.value)
                if value not in (None, "") and len(str(value)) < 2000:
                    out.add(str(value))
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(requests())
def test_any_attribute_values_are_recorded_or_rejected_never_5xx(fuzz_sidecar, example):
    sc, (req, sent) = fuzz_sidecar, example
    api = Api(sc)
    before = scrape(sc)
    status, headers, body = post(sc.otlp_http + "/v1/traces", req.SerializeToString(), timeout=30)
    assert status == 200, (status, body[:300])
    rejected = export_response(body).partial_success.rejected_spans
    after = scrape(sc)  # parses, or raises

    def delta(name, **labels):
        return total(after, name, **labels) - total(before, name, **labels)

    counted = sum(delta("syncwatch_spans_total", result=r) for r in ("correlated", "uncorrelated", "rejected"))
    assert counted == sent, (counted, sent)
    assert delta("syncwatch_spans_total", result="rejected") == rejected
    assert delta("syncwatch_dropped_total") >= rejected
    assert nan_samples(after) == []
    assert all(not math.isinf(v) for (n, _), v in after.items() if n.endswith("_sum"))
    for corr in corr_texts(req):
        status, record = api.transaction(corr)
        assert status < 500, (corr, status, record)
    for state in STATES:
        api.listing(state)  # 200 on every page
