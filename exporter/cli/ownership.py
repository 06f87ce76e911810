"""`syncwatch ownership report [--since 30d] [--format markdown|csv]`: per flow and field, which
systems wrote it, how often, and the conflicts and violations seen; the draft of the field
ownership document, produced from what really happens (read from a running sidecar's API)."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from typing import Any

from syncwatch.cli.transactions import DEFAULT_URL, CliError, _get, _run

COLUMNS = ("flow", "field", "writer", "writes", "conflicts", "violations")


def add_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    own = subparsers.add_parser("ownership", help="field ownership audits of a running sidecar")
    own_sub = own.add_subparsers(dest="ownership_command", required=True)
    rep = own_sub.add_parser("report", help="who writes which field, how often, and the conflicts seen")
    rep.add_argument("--since", default="30d", help="how far back, e.g. 7d, 30d (default 30d)")
    rep.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    rep.add_argument(
        "--url",
        default=os.environ.get("SYNCWATCH_URL", DEFAULT_URL),
        help=f"sidecar HTTP address (default: $SYNCWATCH_URL or {DEFAULT_URL})",
    )
    rep.add_argument("--token", default=None, help="API bearer token (default: $SYNCWATCH_API__TOKEN)")
    rep.add_argument("--token-file", default=None, help="file holding the API bearer token")
    rep.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the sidecar")
    rep.set_defaults(func=lambda args: _run(_report, args))


def render_csv(fields: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in fields:
        w.writerow([r[c] for c in COLUMNS])
    return out.getvalue()


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any], since: str) -> str:
    lines = [f"# Field ownership report (since {since})", ""]
    fields = report["fields"]
    if not fields:
        lines.append("No writes seen in audited flows.")
    flows: dict[str, list[dict[str, Any]]] = {}
    for r in fields:
        flows.setdefault(r["flow"], []).append(r)
    for flow, rows in flows.items():
        lines += [f"## {flow}", "", "| field | writer | writes | conflicts | violations |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {_cell(r['field'])} | {_cell(r['writer'])} | {r['writes']} | {r['conflicts']} | {r['violations']} |"
            for r in rows
        ]
        lines.append("")
    if report.get("idempotency"):
        lines += ["## Idempotency", "", "| flow | finding | count |", "|---|---|---:|"]
        lines += [f"| {_cell(r['flow'])} | {r['kind']} | {r['n']} |" for r in report["idempotency"]]
        lines.append("")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    report = _get(args, "/api/v1/audit/report", {"since": args.since})
    if not isinstance(report, dict) or "fields" not in report:
        raise CliError("unexpected answer from /api/v1/audit/report")
    sys.stdout.write(render_csv(report["fields"]) if args.format == "csv" else render_markdown(report, args.since))
    return 0
