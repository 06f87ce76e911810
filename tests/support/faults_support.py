"""Helpers of the fault and fuzz suite (tests/test_faults.py, tests/test_fuzz_intake.py): a real
full disk (tmpfs), an OTel-exporter-style retrying client, a /healthz prober, the query API, and
OTLP requests with attribute values of any type."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from otlp_raw import post
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "faults-suite-token-0123456789"
STATES = ("overdue", "pending", "failed", "expired", "duplicate")


# ---- a real full disk --------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m"):
    """A tmpfs of `size` mounted at `path` for the duration (needs root: mount(2))."""
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)])


def fill_disk(directory: Path, name: str = "filler") -> Path:
    """Write a file until the file system answers ENOSPC; returns its path."""
    filler = directory / name
    with open(filler, "ab", buffering=0) as f:
        for size in (1 << 20, 65536, 4096):  # big chunks first, then what is left page by page
            chunk = b"\0" * size
            while True:
                try:
                    f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


# ---- an exporter that retries as OpenTelemetry's does ------------------------------------------
@dataclass
class Exchange:
    """Every answer one request got, in order: (status, Retry-After header or None, body), status
    -1 for no answer (connection refused, reset or timed out); `times`: when each came (monotonic)."""

    answers: list = field(default_factory=list)
    times: list = field(default_factory=list)

    @property
    def final(self) -> int | None:
        return self.answers[-1][0] if self.answers else None


def export_with_retries(
    url: str,
    body: bytes,
    budget: float = 60.0,
    stop: threading.Event | None = None,
    timeout: float = 20.0,
    ex: Exchange | None = None,
) -> Exchange:
    """POST the same bytes until an answer other than 503/429, sleeping Retry-After between tries
    (at most `budget` seconds in all), as OTel's OTLP exporters do. Answers go into `ex` as they come."""
    ex = Exchange() if ex is None else ex
    give_up = time.monotonic() + budget
    while True:
        try:
            status, headers, answer = post(url, body, timeout=timeout)
        except OSError as exc:  # connection refused, reset or timed out: no answer, retried like a 503
            ex.answers.append((-1, None, repr(exc).encode()))
            status, headers = -1, {}
        else:
            ex.answers.append((status, headers.get("Retry-After"), answer))
        ex.times.append(time.monotonic())
        if (
            status not in (-1, 429, 503)
            or time.monotonic() >= give_up
            or (stop is not None and stop.is_set() and status == -1)
        ):
            return ex
        wait = 1.0
        if status != -1:
            try:
                wait = float(headers.get("Retry-After", "1"))
            except ValueError:
                wait = 1.0
        time.sleep(min(max(wait, 0.05), 5.0))


def bad_answers(exchanges) -> list:
    """Answers an exporter must never see: a 5xx other than 503, a 503 without Retry-After, or
    none at all (the sidecar is up throughout)."""
    bad = []
    for ex in exchanges:
        for status, retry_after, body in ex.answers:
            if status == -1 or (status >= 500 and status != 503) or (status == 503 and not retry_after):
                bad.append((status, retry_after, body[:200]))
    return bad


# ---- /healthz, polled throughout -----------------------------------------------------------------
class HealthProbe:
    """Polls GET /healthz every `interval` s from a thread; `worst` is the slowest answer (or the
    timeout, for no answer), `failures` the non-200 answers."""

    def __init__(self, sidecar, interval: float = 0.05, timeout: float = 5.0):
        self.url = sidecar.url + "/healthz"
        self.interval, self.timeout = interval, timeout
        self.worst = 0.0
        self.failures: list = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as r:
                    r.read()
                    if r.status != 200:
                        self.failures.append(r.status)
            except (urllib.error.URLError, OSError) as exc:
                self.failures.append(repr(exc))
            self.worst = max(self.worst, time.monotonic() - started)
            self.polls += 1
            self._stop.wait(self.interval)

    def check(self, limit: float = 1.0) -> None:
        assert self.polls > 0
        assert not self.failures, f"/healthz failed {len(self.failures)} times, e.g. {self.failures[:3]}"
        assert self.worst < limit, f"/healthz took {self.worst:.2f} s at worst (limit {limit} s)"


# ---- the query API -----------------------------------------------------------------------------
class Api:
    def __init__(self, sidecar, token: str = TOKEN):
        self.sidecar, self.token = sidecar, token

    def get(self, path: str, timeout: float = 20) -> tuple[int, object]:
        req = urllib.request.Request(self.sidecar.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def transaction(self, corr: str) -> tuple[int, object]:
        return self.get("/api/v1/transactions/" + urllib.parse.quote(corr, safe=""))

    def listing(self, state: str, flow: str | None = None) -> list[dict]:
        """Every item of a reconciliation list, all pages."""
        items, cursor = [], None
        while True:
            q = {
                "state": state,
                "limit": "1000",
                **({"flow": flow} if flow else {}),
                **({"cursor": cursor} if cursor else {}),
            }
            status, page = self.get("/api/v1/transactions?" + urllib.parse.urlencode(q))
            assert status == 200, (state, status, page)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items


# ---- OTLP requests with typed attribute values -------------------------------------------------
def set_any(value: AnyValue, v) -> None:
    """Python value -> AnyValue: bool, int (int64), float (double), bytes, str; an AnyValue is copied."""
    if isinstance(v, AnyValue):
        value.CopyFrom(v)
    elif isinstance(v, bool):
        value.bool_value = v
    elif isinstance(v, int):
        value.int_value = v
    elif isinstance(v, float):
        value.double_value = v
    elif isinstance(v, bytes):
        value.bytes_value = v
    else:
        value.string_value = str(v)


def add_resource_spans(req: ExportTraceServiceRequest, spans: list[dict], resource: dict | None = None) -> None:
    """Append one resource (one "client") with the given spans: dicts of attributes plus `_start`,
    optional `_end`, `_trace_id`, `_span_id` (unix seconds; raw nanoseconds with `_start_ns`/`_end_ns`)."""
    rs = req.resource_spans.add()
    for k, v in (resource or {}).items():
        kv = rs.resource.attributes.add()
        kv.key = k
        set_any(kv.value, v)
    scope = rs.scope_spans.add()
    for attrs in spans:
        attrs = dict(attrs)
        span = scope.spans.add()
        span.trace_id = attrs.pop("_trace_id", os.urandom(16))
        span.span_id = attrs.pop("_span_id", os.urandom(8))
        span.name = str(attrs.get("syncwatch.stage", "span"))[:50]
        if "_start_ns" in attrs:
            span.start_time_unix_nano = attrs.pop("_start_ns")
            span.end_time_unix_nano = attrs.pop("_end_ns", span.start_time_unix_nano)
        else:
            start = attrs.pop("_start")
            span.start_time_unix_nano = int(start * 1e9)
            span.end_time_unix_nano = int(attrs.pop("_end", start) * 1e9)
        for k, v in attrs.items():
            kv = span.attributes.add()
            kv.key = k
            set_any(kv.value, v)


def typed_request(*clients: list[dict]) -> ExportTraceServiceRequest:
    """One request with one resource per client (each a list of span dicts, see add_resource_spans)."""
    req = ExportTraceServiceRequest()
    for i, spans in enumerate(clients):
        add_resource_spans(req, spans, {"service.name": f"client-{i}"})
    return req


def source(corr, flow="orders", at=None, **extra) -> dict:
    at = time.time() if at is None else at
    return {
        "_start": at,
        "syncwatch.stage": "source",
        "syncwatch.flow": flow,
        "syncwatch.source": "storefront",
        "syncwatch.correlation_id": corr,
        **extra,
    }


def attempt(corr, flow="orders", dest="erp", at=None, **extra) -> dict:
    at = time.time() if at is None else at
    return {
        "_start": at - 0.2,
        "_end": at,
        "syncwatch.stage": "attempt",
        "syncwatch.flow": flow,
        "syncwatch.destination": dest,
        "syncwatch.correlation_id": corr,
        **extra,
    }


def confirm(corr, flow="orders", dest="erp", at=None, **extra) -> dict:
    at = time.time() if at is None else at
    return {
        "_start": at - 0.1,
        "_end": at,
        "syncwatch.stage": "confirm",
        "syncwatch.flow": flow,
        "syncwatch.destination": dest,
        "syncwatch.correlation_id": corr,
        **extra,
    }


def export_response(body: bytes) -> ExportTraceServiceResponse:
    return ExportTraceServiceResponse.FromString(body)


# ---- /metrics ----------------------------------------------------------------------------------
def scrape(sidecar) -> dict:
    """/metrics parsed with prometheus-client's parser: {(name, frozenset(labels)): value}."""
    with urllib.request.urlopen(sidecar.url + "/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def nan_samples(samples: dict) -> list:
    return [(n, dict(ls)) for (n, ls), v in samples.items() if isinstance(v, float) and math.isnan(v)]


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = ""):
    """Poll predicate() until it returns a truthy value; AssertionError naming the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message or 'condition'} not met within {timeout} s (last: {last!r})")


def wait_equal(get, expected, timeout: float, interval: float = 0.2, message: str = ""):
    """Poll get() until it returns `expected`; AssertionError naming the last value otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = get()
        if last == expected:
            return last
        time.sleep(interval)
    raise AssertionError(f"{message or 'value'}: {last!r}, expected {expected!r} within {timeout} s")
