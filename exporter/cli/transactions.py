"""`syncwatch transactions list|show`: the query API from a terminal, against a running sidecar.

syncwatch transactions list --state overdue --flow orders
syncwatch transactions show <correlation-id>
... --json for scripts; --url / SYNCWATCH_URL, --token / --token-file / SYNCWATCH_API__TOKEN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from syncwatch.config.errors import SyncwatchError
from syncwatch.ledger.read_model import STATES

DEFAULT_URL = "http://127.0.0.1:9873"


class CliError(SyncwatchError):
    pass


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tx = subparsers.add_parser(
        "transactions", help="query transactions of a running sidecar (reconciliation list, timeline)"
    )
    tx_sub = tx.add_subparsers(dest="tx_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            default=os.environ.get("SYNCWATCH_URL", DEFAULT_URL),
            help=f"sidecar HTTP address (default: $SYNCWATCH_URL or {DEFAULT_URL})",
        )
        p.add_argument("--token", default=None, help="API bearer token (default: $SYNCWATCH_API__TOKEN)")
        p.add_argument("--token-file", default=None, help="file holding the API bearer token")
        p.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the sidecar")

    ls = tx_sub.add_parser(
        "list", help="reconciliation list: overdue, pending, failed, expired or duplicate transactions"
    )
    ls.add_argument("--state", required=True, choices=STATES)
    ls.add_argument("--flow", default=None, help="only this flow, e.g. orders")
    ls.add_argument("--limit", type=int, default=100, help="rows per page (1-1000)")
    ls.add_argument("--all", action="store_true", help="follow the pages to the end")
    ls.add_argument("--cursor", default=None, help="continue from a previous page's next_cursor")
    common(ls)
    ls.set_defaults(func=cmd_list)

    show = tx_sub.add_parser("show", help="timeline of one transaction with its payload snapshots")
    show.add_argument("correlation_id")
    common(show)
    show.set_defaults(func=cmd_show)


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    if args.token_file:
        try:
            with open(args.token_file) as f:
                return f.read().strip() or None
        except OSError as exc:
            raise CliError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
    return os.environ.get("SYNCWATCH_API__TOKEN") or os.environ.get("SYNCWATCH_TOKEN")


def _get(args: argparse.Namespace, path: str, params: dict[str, Any] | None = None) -> Any:
    if not args.url.startswith(("http://", "https://")):
        raise CliError(f"--url must be an http:// or https:// address, got {args.url!r}")
    url = args.url.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    headers = {"Accept": "application/json"}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        # S310: the URL is the user's --url, checked above to be http(s).
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=args.timeout) as r:  # noqa: S310 -- --url is checked to be http(s) above
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = e.reason
        hint = "" if token or e.code != 401 else " (no token given: use --token, --token-file or SYNCWATCH_API__TOKEN)"
        raise CliError(f"{e.code}: {message}{hint}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"cannot reach syncwatch at {args.url}: {reason}") from None


def _run(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except CliError as exc:
        print(f"syncwatch: {exc}", file=sys.stderr)
        return 1


def cmd_list(args: argparse.Namespace) -> int:
    return _run(_list, args)


def cmd_show(args: argparse.Namespace) -> int:
    return _run(_show, args)


def _list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 1000:
        raise CliError("--limit must be from 1 to 1000")
    items, cursor, pages = [], args.cursor, 0
    while True:
        page = _get(
            args,
            "/api/v1/transactions",
            {"state": args.state, "flow": args.flow, "limit": args.limit, "cursor": cursor},
        )
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        pages += 1
        if not (args.all and cursor):
            break
    if args.json:
        print(
            json.dumps(
                {"state": args.state, "flow": args.flow, "count": len(items), "items": items, "next_cursor": cursor},
                indent=2,
            )
        )
        return 0
    print(render_list(args.state, items))
    if cursor:
        print(f"\nmore: --cursor {cursor}  (or --all)")
    return 0


def _show(args: argparse.Namespace) -> int:
    record = _get(args, "/api/v1/transactions/" + urllib.parse.quote(args.correlation_id, safe=""))
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    print(render_timeline(record))
    return 0


# -- rendering ---------------------------------------------------------------------------------
def _when(obj: dict, key: str) -> str:
    """A time of the API's answer; one no date can show comes as null plus `<key>_raw`."""
    raw = obj.get(key + "_raw")
    if obj.get(key) is None and raw is not None:
        return f"(out of range: {raw})"
    return _short_time(obj.get(key))


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    return value.replace("T", " ").removesuffix("Z")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(out)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def render_list(state: str, items: list[dict]) -> str:
    if not items:
        return f"no {state} transactions"
    if state in ("overdue", "pending"):
        headers = [
            "CORRELATION ID",
            "FLOW",
            "SOURCE",
            "DESTINATION",
            "STATE",
            "CHANGED AT",
            "DEADLINE",
            "OVERDUE BY",
            "ATTEMPTS",
            "LAST CODE",
        ]
        rows = [
            [
                i["correlation_id"],
                i["flow"],
                i.get("source") or "-",
                i["destination"],
                i["state"],
                _when(i, "changed_at"),
                _when(i, "deadline"),
                _age(i.get("overdue_seconds")) if i.get("overdue_seconds") else "-",
                str(i.get("attempts", 0)),
                i.get("last_code") or "-",
            ]
            for i in items
        ]
    elif state in ("failed", "expired"):
        headers = [
            "CORRELATION ID",
            "FLOW",
            "SOURCE",
            "DESTINATION",
            "STATE",
            "CHANGED AT",
            "CLOSED AT",
            "ATTEMPTS",
            "LAST CODE",
        ]
        rows = [
            [
                i["correlation_id"],
                i["flow"],
                i.get("source") or "-",
                i["destination"],
                i["state"],
                _when(i, "changed_at"),
                _when(i, "closed_at"),
                str(i.get("attempts", 0)),
                i.get("last_code") or "-",
            ]
            for i in items
        ]
    else:
        headers = ["CORRELATION ID", "FLOW", "DESTINATION", "APPLIES", "FIRST APPLIED", "LAST APPLIED"]
        rows = [
            [
                i["correlation_id"],
                i["flow"],
                i["destination"],
                str(i["applies"]),
                _when(i, "first_at"),
                _when(i, "last_at"),
            ]
            for i in items
        ]
    return _table(headers, rows) + f"\n\n{len(items)} {state} transaction(s)"


def _pretty_body(snap: dict, indent: str) -> str:
    body = snap.get("body")
    if snap.get("body_encoding") == "json":
        text = json.dumps(body, indent=2, ensure_ascii=False)
    elif snap.get("body_encoding") == "base64":
        text = f"<{snap['size']} bytes binary, base64>\n{body}"
    else:
        text = str(body)
    return "\n".join(indent + line for line in text.splitlines() or [""])


def _snapshot_lines(snap: dict, indent: str) -> list[str]:
    digest = snap.get("body_hmac_sha256")
    facts = [f"{snap['size']} bytes", f"hmac {digest[:16]}…" if digest else "no hash"]
    if snap.get("redactions"):
        facts.append(f"{snap['redactions']} redacted")
    if snap.get("truncated"):
        facts.append("TRUNCATED")
    return [
        f"{indent}{snap['direction'].upper()} payload at {_when(snap, 'time')} ({', '.join(facts)})",
        _pretty_body(snap, indent + "  "),
    ]


def render_timeline(record: dict) -> str:
    out = [f"transaction {record['correlation_id']}"]
    for d in record.get("destinations", []):
        out.append("")
        head = f"{d.get('source') or '?'} -> {d['destination']}  flow {d['flow']}  state {d['state'].upper()}"
        if d.get("lag_seconds") is not None:
            head += f"  lag {_age(d['lag_seconds'])}"
        if d.get("duplicate"):
            head += f"  DUPLICATE APPLY ({d.get('applies')} applies)"
        out.append(head)
        events: list[tuple[str, list[str]]] = []
        if d.get("changed_at") or d.get("changed_at_raw") is not None:
            events.append((d["changed_at"] or "", [f"  {_when(d, 'changed_at')}  source changed"]))
        for a in d.get("attempts", []):
            line = f"  {_when(a, 'start')}  attempt {a.get('attempt') or '?'}: {a.get('code') or 'no response'}"
            if a.get("error"):
                line += f" ({a['error']})"
            if a.get("backoff_seconds") is not None:
                line += f"  after {a['backoff_seconds']:.3f}s backoff"
            lines = [line]
            for s in a.get("snapshots", []):
                lines += _snapshot_lines(s, "      ")
            events.append((a.get("start") or "", lines))
        for c in d.get("confirmations", []):
            lines = [f"  {_when(c, 'end')}  {'DUPLICATE confirm' if c.get('duplicate') else 'confirmed'}"]
            for s in c.get("snapshots", []):
                lines += _snapshot_lines(s, "      ")
            events.append((c.get("end") or "", lines))
        for f in d.get("failures", []):
            lines = [f"  {_when(f, 'start')}  gave up: {f.get('error') or 'failed'}"]
            for s in f.get("snapshots", []):
                lines += _snapshot_lines(s, "      ")
            events.append((f.get("start") or "", lines))
        if d.get("state") in ("pending", "overdue") and (d.get("deadline") or d.get("deadline_raw") is not None):
            events.append(
                (
                    d["deadline"] or "",
                    [f"  {_when(d, 'deadline')}  deadline{' (MISSED)' if d['state'] == 'overdue' else ''}"],
                )
            )
        for _, lines in sorted(events, key=lambda e: e[0]):
            out.extend(lines)
        for s in d.get("snapshots", []):
            out.extend(_snapshot_lines(s, "  "))
    if record.get("unlinked_snapshots"):
        out.append("")
        out.append("payload snapshots not linked to a recorded attempt:")
        for s in record["unlinked_snapshots"]:
            out.extend(_snapshot_lines(s, "  "))
    if record.get("snapshot_error"):
        out.append(f"\n(snapshot store error: {record['snapshot_error']})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncwatch")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
