"""BatchHistogram must read exactly like prometheus-client's Histogram on /metrics."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from syncwatch.metrics.registry import LAG_BUCKETS, BatchHistogram


def _lines(registry) -> list[str]:
    # prometheus-client adds a _created series that BatchHistogram does not keep.
    return sorted(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["orders", "inventory"]),
            st.one_of(st.sampled_from(LAG_BUCKETS), st.floats(0, 200_000, allow_nan=False)),
        ),
        max_size=40,
    )
)
def test_batch_histogram_exposes_what_histogram_does(observations):
    reference, batched = CollectorRegistry(), CollectorRegistry()
    h = Histogram("lag_seconds", "Lag.", ("flow",), buckets=LAG_BUCKETS, registry=reference)
    b = BatchHistogram("lag_seconds", "Lag.", ("flow",), LAG_BUCKETS, batched)
    for flow, value in observations:
        h.labels(flow).observe(value)
    for flow in ("orders", "inventory"):
        values = [v for f, v in observations if f == flow]
        if values:
            b.observe_many((flow,), values[: len(values) // 2])
            b.observe_many((flow,), values[len(values) // 2 :])
    assert _lines(batched) == _lines(reference)
