"""The reference page (docs/reference.md), generated from the code: every metric with its type,
labels and help text, every span and log attribute syncwatch reads, every config key with its
default. `python -m syncwatch.reference > docs/reference.md`; a test fails when the page drifts."""

from __future__ import annotations

import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from syncwatch.audit.metrics import AuditMetrics
from syncwatch.collectors.base import CollectorSettings
from syncwatch.collectors.config import SamplingSettings
from syncwatch.collectors.deadletters import DeadLetterBook, DeadLetterMetric
from syncwatch.collectors.metrics import CollectorMetrics
from syncwatch.collectors.plugins import load_collector_class
from syncwatch.config.models import Config
from syncwatch.intake import extract
from syncwatch.metrics.registry import Metrics
from syncwatch.reconcile.base import ReconcilerSettings
from syncwatch.reconcile.metrics import ReconcileMetrics
from syncwatch.reconcile.sql import DatabaseSettings, SqlFlowSettings, SqlSettings
from syncwatch.rules.metrics import RulesMetrics
from syncwatch.snapshots import SnapshotIntake, otlp_logs

BUILT_IN_COLLECTORS = ("sqs", "servicebus", "rabbitmq")


def _metric_rows(registry: CollectorRegistry) -> list[tuple[str, str, str, str]]:
    rows = []
    # prometheus-client keeps its collectors in a private map; a generator may read it.
    for collector in list(registry._collector_to_names):
        found: Any = getattr(collector, "_labelnames", None) or getattr(collector, "labelnames", None) or ()
        labelnames = tuple(found)
        for family in collector.collect():
            labels = tuple(getattr(family, "_labelnames", None) or labelnames)
            name = family.name + ("_total" if family.type == "counter" else "")
            rows.append((name, family.type, ", ".join(labels), " ".join(family.documentation.split())))
    return sorted(set(rows))


def metrics_table() -> list[str]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    CollectorMetrics(registry)
    RulesMetrics(registry)
    ReconcileMetrics(registry)
    AuditMetrics(registry)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config.model_validate({"storage": {"data_dir": tmp}, "snapshots": {"enabled": True}})
        snapshots = SnapshotIntake(config, metrics)
        book = DeadLetterBook(Path(tmp) / "deadletters.db", lambda b, t: (b, "text", 0), lambda corrs: set())
        DeadLetterMetric(book, registry)
        try:
            rows = _metric_rows(registry)
        finally:
            close = getattr(snapshots, "close", None)
            if callable(close):
                close()
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    out += [f"| `{name}` | {kind} | {labels} | {doc} |" for name, kind, labels, doc in rows]
    return out


def attributes_table() -> list[str]:
    keys = list(Config().correlation.keys)
    out = ["| attribute | where | read as |", "|---|---|---|"]
    out += [
        f"| `{k}` | span (or its resource) | correlation ID, first present wins (`correlation.keys`) |" for k in keys
    ]
    meanings = {
        extract.STAGE: "source, attempt, confirm or fail",
        extract.FLOW: "flow name",
        extract.SOURCE: "source system",
        extract.DESTINATION: "destination system",
        extract.PEER: "destination when syncwatch.destination is absent",
        extract.SERVER: "destination when neither of the above is set",
        extract.CHANGED_AT: "change time at the source (unix seconds or RFC 3339; default: span start)",
        extract.RESEND: "retry ordinal of an attempt (absent or 0: first try)",
        extract.HTTP_CODE: "response code of an attempt (an integer)",
        extract.CODE: "response code of a non-HTTP attempt",
        extract.ERROR: "failure class of an attempt or a fail",
        extract.IDEMPOTENCY_KEY: "operation key of a confirm (duplicate applies)",
    }
    out += [f"| `{k}` | span (or its resource) | {meanings[k]} |" for k in extract._READ]
    out.append(f"| `{extract.RECORD_ID}` | confirm span | destination record ID (duplicate-record audit) |")
    out.append(f"| `{otlp_logs.DIRECTION_ATTR}` | log record | payload snapshot direction: request or response |")
    out.append(f"| `{otlp_logs.FLOW_ATTR}` | log record | flow of a payload snapshot |")
    out += [
        f"| `{k}` | log record | destination of a payload snapshot, first present wins |"
        for k in otlp_logs.DESTINATION_ATTRS
    ]
    out.append(f"| `{otlp_logs.SOURCE_ATTR}` | log record | writer of a request payload (payload audits) |")
    out.append(
        f"| `{otlp_logs.IDEMPOTENCY_KEY_ATTR}` | log record | idempotency key of a request payload (key-reuse audit) |"
    )
    out.append(
        f"| `{otlp_logs.RECORD_ID_ATTR}` | log record | destination record ID of a response (duplicate-record audit) |"
    )
    return out


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " / ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if field.repr is False and value is not None:
        return "(secret)"
    if isinstance(value, Path):
        value = str(value)
    text = repr(value) if value not in ([], {}) else ("[]" if value == [] else "{}")
    return text if len(text) <= 60 else "(see README)"


def _config_rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_class(field.annotation)
        if nested is not None:
            yield from _config_rows(nested, key + ".")
            continue
        yield key, _type_name(field.annotation), _default(field)


def config_table() -> list[str]:
    out = ["| key | type | default |", "|---|---|---|"]
    out += [
        f"| `{k}` | {t} | `{d}` |"
        for k, t, d in _config_rows(Config, "")
        if k not in ("collectors", "sampling", "reconcilers")
    ]
    out += [f"| `sampling.{k}` | {t} | `{d}` |" for k, t, d in _config_rows(SamplingSettings, "")]
    out += [f"| `collectors[].{k}` | {t} | `{d}` |" for k, t, d in _config_rows(CollectorSettings, "")]
    for type_name in BUILT_IN_COLLECTORS:
        settings = load_collector_class(type_name).Settings
        for k, t, d in _config_rows(settings, ""):
            if k not in CollectorSettings.model_fields:
                out.append(f"| `collectors[type={type_name}].{k}` | {t} | `{d}` |")
    out += [f"| `reconcilers[].{k}` | {t} | `{d}` |" for k, t, d in _config_rows(ReconcilerSettings, "")]
    out += [
        f"| `reconcilers[type=sql].{k}` | {t} | `{d}` |"
        for k, t, d in _config_rows(SqlSettings, "")
        if k not in ReconcilerSettings.model_fields
    ]
    out += [
        f"| `reconcilers[type=sql].databases.<name>.{k}` | {t} | `{d}` |"
        for k, t, d in _config_rows(DatabaseSettings, "")
    ]
    out += [
        f"| `reconcilers[type=sql].flows.<flow>.{k}` | {t} | `{d}` |" for k, t, d in _config_rows(SqlFlowSettings, "")
    ]
    return out


def render() -> str:
    lines = [
        "# syncwatch reference",
        "",
        "Generated from the code by `python -m syncwatch.reference`; `tests/test_reference.py` fails when",
        "this page and the code disagree. Counters carry prometheus-client's `_total` suffix.",
        "",
        "## Metrics",
        "",
        *metrics_table(),
        "",
        "## Attributes syncwatch reads",
        "",
        *attributes_table(),
        "",
        "## Configuration keys",
        "",
        "Every key is optional; `SYNCWATCH_` + the dotted path upper-cased with `__` between levels",
        "overrides it from the environment.",
        "",
        *config_table(),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
