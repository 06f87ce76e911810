"""`syncwatch dead-letters list`: the dead letters a running sidecar read, named by order.

syncwatch dead-letters list [--queue orders.dlq] [--unlinked] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from syncwatch.cli.transactions import DEFAULT_URL, CliError, _get, _run, _short_time, _table


def add_subcommands(subparsers: Any) -> None:
    dl = subparsers.add_parser("dead-letters", help="dead letters read from the DLQs, with their correlation IDs")
    dl_sub = dl.add_subparsers(dest="dl_command", required=True)
    ls = dl_sub.add_parser("list", help="the dead letters last read, per DLQ")
    ls.add_argument("--queue", default=None, help="only this DLQ")
    ls.add_argument("--collector", default=None, help="only this collector")
    group = ls.add_mutually_exclusive_group()
    group.add_argument("--linked", action="store_true", help="only those whose transaction the ledger knows")
    group.add_argument("--unlinked", action="store_true", help="only those the ledger does not know")
    ls.add_argument("--limit", type=int, default=1000, help="rows (1-10000)")
    ls.add_argument(
        "--url",
        default=os.environ.get("SYNCWATCH_URL", DEFAULT_URL),
        help=f"sidecar HTTP address (default: $SYNCWATCH_URL or {DEFAULT_URL})",
    )
    ls.add_argument("--token", default=None, help="API bearer token (default: $SYNCWATCH_API__TOKEN)")
    ls.add_argument("--token-file", default=None, help="file holding the API bearer token")
    ls.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    ls.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the sidecar")
    ls.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list, args)


def _list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10_000:
        raise CliError("--limit must be from 1 to 10000")
    linked = "true" if args.linked else "false" if args.unlinked else None
    page = _get(
        args,
        "/api/v1/dead-letters",
        {"queue": args.queue, "collector": args.collector, "linked": linked, "limit": args.limit},
    )
    if args.json:
        print(json.dumps(page, indent=2, ensure_ascii=False))
        return 0
    print(render(page))
    return 0


def render(page: dict[str, Any]) -> str:
    if not page.get("enabled"):
        return "no collector reads dead letters (set dead_letters.enabled on a RabbitMQ or SQS collector)"
    items = page["items"]
    if not items:
        return "no dead letters"
    rows = [
        [
            _printable(it.get("correlation_id") or "-"),
            "yes" if it["linked"] else "no",
            _printable(it["collector"]),
            _printable(it["queue"]),
            _printable(it.get("source_queue") or "-"),
            _printable(it.get("reason") or "-"),
            _short_time(it.get("dead_lettered_at")),
            "-" if it.get("deliveries") is None else str(it["deliveries"]),
        ]
        for it in items
    ]
    headers = ["CORRELATION ID", "LINKED", "COLLECTOR", "DLQ", "SOURCE", "REASON", "DEAD-LETTERED AT", "DELIVERIES"]
    unlinked = sum(1 for it in items if not it["linked"])
    return _table(headers, rows) + f"\n\n{len(items)} dead letters, {unlinked} not linked to a ledger transaction"


def _printable(text: str) -> str:
    """Broker data on a terminal: control characters (escape sequences) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
