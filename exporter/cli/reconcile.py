"""`syncwatch reconcile test|list`.

syncwatch reconcile test --config FILE     run each reconciler once (stores nothing), print counts
                                           and the first few IDs of each finding
syncwatch reconcile list --kind missing    findings of a running sidecar, with their IDs (query API)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from syncwatch.config.errors import ConfigError
from syncwatch.reconcile.base import KINDS


def _ts(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _test_all(config: Any, out: TextIO) -> int:
    import tempfile

    from syncwatch.ledger.reader import open_queries
    from syncwatch.reconcile.manager import ReconcileManager

    # A scratch findings file: a test run must not move the sidecar's windows or touch its findings.
    with tempfile.TemporaryDirectory(prefix="syncwatch-reconcile-test-") as tmp:
        manager = ReconcileManager(
            config.reconcilers, config.flows, Path(tmp), open_queries(config), CollectorRegistry()
        )
        try:
            await manager.run_once(dry_run=True)
        finally:
            await manager.stop()
    failed = 0
    for runner in manager.runners:
        desc = runner.reconciler.describe()
        dbs = ", ".join(f"{k}={v}" for k, v in (desc.get("databases") or {}).items())
        head = f"{runner.name} ({desc.get('type')}{': ' + dbs if dbs else ''})"
        if not runner.up:
            failed += 1
            out.write(f"{head}: DOWN — {runner.last_error}\n\n")
            continue
        out.write(f"{head}: up, {runner.last_duration:.2f}s\n")
        for flow, r in runner.last_results.items():
            start, end = r.window
            out.write(
                f"  {flow}: window {_ts(start)} .. {_ts(end)} UTC; {r.source_rows} source rows, "
                f"{r.destination_rows} destination rows, {r.pending} pending (within the deadline)\n"
            )
            for kind in KINDS:
                shown = ", ".join(r.examples[kind])
                more = " ..." if r.found[kind] > len(r.examples[kind]) else ""
                out.write(f"    {kind:<13} {r.found[kind]:>7}{'  ' + shown + more if shown else ''}\n")
        out.write("\n")
    out.write(f"{len(manager.runners) - failed} of {len(manager.runners)} reconcilers up\n")
    return 1 if failed else 0


def reconcile_test(config_path: str | None, out: TextIO | None = None) -> int:
    """0 when every reconciler ran, 1 when one failed, 2 on bad config."""
    out = out or sys.stdout
    from syncwatch.settings import load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"syncwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if not config.reconcilers:
        out.write("no reconcilers configured (add a `reconcilers:` list to the config)\n")
        return 1
    return asyncio.run(_test_all(config, out))


def _cmd_test(args: argparse.Namespace) -> int:
    return reconcile_test(args.config)


def _cmd_list(args: argparse.Namespace) -> int:
    from syncwatch.cli.transactions import CliError, _get, _table

    params = {
        "kind": args.kind,
        "flow": args.flow,
        "reconciler": args.reconciler,
        "state": args.state,
        "limit": args.limit,
        "cursor": args.cursor,
    }
    try:
        page = _get(args, "/api/v1/reconciliation", params)
    except CliError as exc:
        print(f"syncwatch: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    items = page["items"]
    if not items:
        print(f"no {args.state} findings")
        return 0
    rows = [
        [
            str(i["id"]),
            i["kind"],
            i["flow"],
            i["reconciler"],
            i["source_id"],
            (i.get("changed_at") or "-").replace("T", " ").removesuffix("Z"),
            ",".join(i.get("record_ids") or [])
            or ("-" if i.get("lag_seconds") is None else f"{i['lag_seconds']:g}s late"),
            i.get("ledger_state") or "never traced",
        ]
        for i in items
    ]
    print(_table(["ID", "KIND", "FLOW", "RECONCILER", "SOURCE ID", "CHANGED AT", "DETAIL", "LEDGER"], rows))
    if page.get("next_cursor"):
        print(f"\nmore: --cursor {page['next_cursor']}")
    return 0


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`syncwatch reconcile ...` (registered by exporter/cli/main.py)."""
    from syncwatch.cli.transactions import DEFAULT_URL

    rec = sub.add_parser("reconcile", help="reconciliation against the systems of record")
    inner = rec.add_subparsers(dest="reconcile_command", required=True)
    test = inner.add_parser("test", help="run each reconciler's queries once and print counts and the first IDs")
    test.add_argument("--config", "-c", help="YAML config file with a reconcilers: list")
    test.set_defaults(func=_cmd_test)
    ls = inner.add_parser("list", help="findings of a running sidecar (missing, duplicated, never traced, late)")
    ls.add_argument("--kind", choices=KINDS, default=None)
    ls.add_argument("--flow", default=None)
    ls.add_argument("--reconciler", default=None)
    ls.add_argument("--state", choices=("open", "resolved", "all"), default="open")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--cursor", default=None)
    import os

    ls.add_argument("--url", default=os.environ.get("SYNCWATCH_URL", DEFAULT_URL))
    ls.add_argument("--token", default=None, help="API bearer token (default: $SYNCWATCH_API__TOKEN)")
    ls.add_argument("--token-file", default=None)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--timeout", type=float, default=30.0)
    ls.set_defaults(func=_cmd_list)
