"""`syncwatch rules test --config FILE SPANS.json`: run the mapping rules over an OTLP/JSON file
(what the Collector's file exporter writes) and show, per span, which rule matched and what it
became, then the resulting transactions; so rules are checked before the sidecar runs them."""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from syncwatch.config.errors import ConfigError
from syncwatch.intake.attributes import BadAttribute
from syncwatch.intake.decode import JSON, OtlpError, decode_traces
from syncwatch.intake.extract import Extracted, SpanExtractor
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_SOURCE
from syncwatch.rules.engine import RuleEngine

MAX_FILE_BYTES = 256 * 1024 * 1024


def _explicit(extractor: SpanExtractor, span: Any) -> bool | None:
    """Whether the span sets syncwatch.stage itself (the rules do not map it); None when an
    attribute of it is invalid (the span is refused, and listed under "rejected")."""
    try:
        return "syncwatch.stage" in extractor.attributes.of(span.attributes)
    except BadAttribute:
        return None


def read_exports(path: Path) -> list[Any]:
    """Trace views of the file: one export per line (file exporter), or one JSON document."""
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    lines = [line for line in data.splitlines() if line.strip()]
    try:
        return [decode_traces(line, JSON) for line in lines]
    except OtlpError:
        if len(lines) == 1:
            raise
    return [decode_traces(data, JSON)]


def rules_test(config: Any, spans_file: str, out: TextIO | None = None) -> int:
    """Exit status: 0 when every span of a flow got a correlation ID, 1 otherwise, 2 for bad input."""
    out = out or sys.stdout
    if not config.rules.map:
        print("syncwatch: no mapping rules configured (add rules.map)", file=sys.stderr)
        return 2
    try:
        engine = RuleEngine(config.rules, config.limits.max_correlation_id_length, explain=True)
    except ConfigError as exc:
        print(f"syncwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        views = read_exports(Path(spans_file))
    except (OSError, ValueError) as exc:
        print(f"syncwatch: cannot read {spans_file}: {exc}", file=sys.stderr)
        return 2
    extractor = SpanExtractor(config.correlation.keys, config.limits.max_correlation_id_length, engine)
    received = time.time()
    events: list[tuple] = []
    order: list[tuple[str, str, bool | None]] = []  # span id, name, explicit stage (None: refused)
    rejected: list[str] = []
    unrelated = 0
    result = Extracted()
    for view in views:
        for rs in view.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    order.append((span.span_id.hex(), span.name, _explicit(extractor, span)))
        result = extractor.extract(view, received)
        events.extend(result.events)
        rejected.extend(result.errors)
        unrelated += result.unrelated
    engine.drain(result)  # spans still waiting: no ID anywhere in the file
    explain = engine.explain or {}
    missing = 0
    out.write("spans:\n")
    for span_id, name, explicit in order:
        d = explain.get(span_id)
        if explicit is None:
            out.write(f"  {span_id} {name[:60]!r}: refused (an invalid attribute, see rejected)\n")
        elif explicit:
            out.write(f"  {span_id} {name[:60]!r}: explicit syncwatch.* attributes\n")
        elif d is None:
            out.write(f"  {span_id} {name[:60]!r}: no rule (unrelated)\n")
        else:
            stages = "+".join(d.stages) or "context"
            if d.corr is None:
                missing += 1
                corr = "NO CORRELATION ID"
            else:
                corr = f"{d.corr} ({d.via})"
            out.write(f"  {span_id} {name[:60]!r}: rule {d.rule} -> flow {d.flow}, {stages}, {corr}\n")
    _print_transactions(out, events, config)
    out.write(f"{len(order)} spans: {len(explain)} mapped by rules, {unrelated} unrelated, {missing} without ID\n")
    for message in rejected:
        out.write(f"rejected: {message}\n")
    return 1 if missing or rejected else 0


def _print_transactions(out: TextIO, events: list[tuple], config: Any) -> None:
    sources: dict[tuple[str, str], str | None] = {}
    txs: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(lambda: {"codes": [], "outcome": "open"})
    for ev in sorted(events, key=lambda e: e[7]):
        corr, flow, stage, source, dest = ev[2], ev[3], ev[4], ev[5], ev[6]
        if stage == STAGE_SOURCE:
            sources[(corr, flow)] = source
            flow_cfg = config.flows.get(flow)
            for d in ([dest] if dest else []) + (flow_cfg.destinations if flow_cfg else []):
                txs[(corr, flow, d)]
            continue
        tx = txs[(corr, flow, dest)]
        if stage == STAGE_ATTEMPT:
            tx["codes"].append(ev[11] or ev[12] or "?")
        elif stage == STAGE_CONFIRM and tx["outcome"] == "open":
            tx["outcome"] = "confirmed"
        elif stage == STAGE_FAIL and tx["outcome"] == "open":
            tx["outcome"] = f"failed ({ev[12] or 'fail'})"
    out.write("transactions:\n")
    for (corr, flow, dest), tx in sorted(txs.items()):
        src = sources.get((corr, flow), "no source span")
        codes = ", ".join(tx["codes"]) or "-"
        out.write(f"  {corr} {flow}: {src} -> {dest}: {len(tx['codes'])} attempt(s) [{codes}], {tx['outcome']}\n")


def add_subcommand(subparsers: Any, load: Any) -> None:
    rules = subparsers.add_parser("rules", help="mapping rules (spans of stock instrumentation)")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    test = rules_sub.add_parser(
        "test", help="map the spans of an OTLP/JSON file and print the rule, stages and ID of each"
    )
    test.add_argument("--config", "-c", required=True, help="YAML config file with a rules: section")
    test.add_argument("spans", help="OTLP/JSON traces, one export per line (the Collector's file exporter)")

    def run(args: argparse.Namespace) -> int:
        config = load(args.config)
        if config is None:
            return 2
        return rules_test(config, args.spans)

    test.set_defaults(func=run)
