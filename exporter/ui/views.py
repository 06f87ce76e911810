"""What the pages show, computed from the ledger's and the snapshot store's records: human
durations, a time axis per destination, pretty-printed payloads and the diff of each request
against the one before. Pure functions, run off the event loop; the templates escape everything."""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

# A diff compares at most this many lines of each body: difflib's cost grows faster than linearly.
MAX_DIFF_LINES = 2000
# Longest body text a page shows; the rest is cut (the API still has it whole).
MAX_SHOWN_BODY = 256 * 1024


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def when(ts: Any) -> str:
    """A unix time as `YYYY-MM-DD HH:MM:SS.mmmZ`; `-` when there is none or no date can show it."""
    f = _number(ts)
    if f is None:
        return "-"
    try:
        return datetime.fromtimestamp(f, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
    except (ValueError, OverflowError, OSError):
        return "-"


def human(seconds: Any) -> str:
    """`2d 3h`, `4h 12m`, `3m 5s`, `12.4s`, `350ms`: two units at most, as on-call reads it."""
    s = _number(seconds)
    if s is None:
        return "-"
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    if s < 60:
        return f"{sign}{s:.1f}s"
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or parts:
            n = int(s // size)
            s -= n * size
            parts.append(f"{n}{unit}")
        if len(parts) == 2:
            break
    return sign + " ".join(parts)


def code_class(code: Any, error: Any = None) -> str:
    """CSS class of an attempt by its response code: ok (2xx), client (4xx), server (5xx or an error)."""
    text = str(code or "")
    if text[:1] == "2":
        return "ok"
    if text[:1] == "4":
        return "client"
    if text[:1] == "5" or error:
        return "server"
    return "other"


def _pct(value: float, start: float, span: float) -> float:
    return round(max(0.0, min(100.0, (value - start) * 100.0 / span)), 3)


def axis(dest: dict[str, Any], now: float) -> dict[str, Any]:
    """A destination's stages on one time axis: markers (source change, opened, confirmation or
    failure, deadline, now) and one bar per attempt, positioned in percent of the axis."""
    points: list[tuple[str, float]] = []
    for key, label in (("changed_at", "changed"), ("opened_at", "opened"), ("deadline", "deadline")):
        v = _number(dest.get(key))
        if v is not None:
            points.append((label, v))
    closed = _number(dest.get("closed_at"))
    if closed is not None:
        points.append((str(dest.get("outcome") or "closed"), closed))
    else:
        points.append(("now", now))
    for c in dest.get("confirmations", []):
        v = _number(c.get("end")) or _number(c.get("start"))
        if v is not None:
            points.append(("duplicate apply" if c.get("duplicate") else "confirmed", v))
    for f in dest.get("failures", []):
        v = _number(f.get("end")) or _number(f.get("start"))
        if v is not None:
            points.append(("fail", v))
    times = [v for _, v in points]
    for a in dest.get("attempts", []):
        times += [v for v in (_number(a.get("start")), _number(a.get("end"))) if v is not None]
    if not times:
        return {"start": "-", "end": "-", "markers": [], "bars": []}
    start, end = min(times), max(times)
    span = (end - start) or 1.0
    markers = []
    last_left: list[float] = []  # per label row: where its last label starts
    for label, v in sorted(points, key=lambda p: p[1]):
        left = _pct(v, start, span)
        # Labels of marks close together go on the next row up, so none hides another.
        row = next((i for i, prev in enumerate(last_left) if left - prev >= 9), len(last_left))
        if row == len(last_left):
            last_left.append(left)
        last_left[row] = left
        markers.append({"label": label, "left": left, "at": when(v), "row": row})
    bars = []
    for a in dest.get("attempts", []):
        s0, s1 = _number(a.get("start")), _number(a.get("end"))
        if s0 is None:
            continue
        left = _pct(s0, start, span)
        width = max(0.4, _pct(s1 if s1 is not None else s0, start, span) - left)
        bars.append(
            {
                "left": left,
                "width": round(min(width, 100.0 - left if left < 100 else 0.4), 3),
                "cls": code_class(a.get("code"), a.get("error")),
                "title": f"attempt {a.get('attempt')}: {a.get('code') or a.get('error') or '?'} at {when(s0)}",
            }
        )
    return {"start": when(start), "end": when(end), "span": human(end - start), "markers": markers, "bars": bars}


def storm(attempts: Sequence[dict[str, Any]]) -> str | None:
    """One line that makes a retry storm visible: how many attempts in how long, and the backoffs."""
    if len(attempts) < 2:
        return None
    starts = [v for v in (_number(a.get("start")) for a in attempts) if v is not None]
    backoffs = sorted(v for v in (_number(a.get("backoff_seconds")) for a in attempts) if v is not None)
    within = human(max(starts) - min(starts)) if starts else "-"
    line = f"{len(attempts)} attempts within {within}"
    if backoffs:
        line += f"; backoff min {human(backoffs[0])}, median {human(backoffs[len(backoffs) // 2])}, max {human(backoffs[-1])}"
    return line


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def pretty_body(content_type: str, body: bytes, truncated: bool) -> str:
    """A snapshot's (already redacted) body for reading: JSON indented, text as is, binary as hex."""
    if content_type == "binary":
        shown = body[: MAX_SHOWN_BODY // 3]
        text = " ".join(shown[i : i + 16].hex(" ") for i in range(0, len(shown), 16))
        return text + ("\n… (cut)" if len(shown) < len(body) else "")
    text = body.decode("utf-8", "replace")
    if content_type == "json" and not truncated and len(text) <= MAX_SHOWN_BODY:
        with contextlib.suppress(ValueError, RecursionError):
            text = json.dumps(json.loads(text, parse_constant=_no_constants), indent=2, ensure_ascii=False)
    if len(text) > MAX_SHOWN_BODY:
        text = text[:MAX_SHOWN_BODY] + "\n… (cut)"
    return text


def diff(previous: str, current: str) -> tuple[list[dict[str, str]], bool]:
    """Unified diff lines of two pretty bodies, each with a CSS class (add, del, hunk, ctx), and
    whether the comparison was cut to MAX_DIFF_LINES lines."""
    a, b = previous.splitlines(), current.splitlines()
    cut = len(a) > MAX_DIFF_LINES or len(b) > MAX_DIFF_LINES
    lines = []
    for line in difflib.unified_diff(a[:MAX_DIFF_LINES], b[:MAX_DIFF_LINES], "previous", "this", n=2, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        cls = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
        lines.append({"cls": cls, "text": line})
    return lines, cut


def snapshot_view(s: Any) -> dict[str, Any]:
    """A stored Snapshot as the page shows it (keys `span_id`, `destination`, `flow` as the API's
    attach step expects)."""
    return {
        "direction": s.direction,
        "time": when(s.time),
        "t": _number(s.time) or 0.0,
        "span_id": s.span_id.hex(),
        "destination": s.destination,
        "flow": s.flow,
        "content_type": s.content_type,
        "size": s.size,
        "truncated": s.truncated,
        "redactions": s.redactions,
        "pretty": pretty_body(s.content_type, s.body, s.truncated),
    }


def request_diffs(snaps: Iterable[dict[str, Any]]) -> None:
    """Each request snapshot gets `diff` against the request before it at the same destination."""
    by_dest: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for s in snaps:
        if s["direction"] == "request":
            by_dest.setdefault((s["flow"], s["destination"]), []).append(s)
    for group in by_dest.values():
        group.sort(key=lambda s: s["t"])
        for prev, cur in itertools.pairwise(group):
            lines, cut = diff(prev["pretty"], cur["pretty"])
            cur["diff"], cur["diff_cut"], cur["diff_same"] = lines, cut, not lines
