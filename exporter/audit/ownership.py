"""The ownership map compiled for the hot path: JSON paths as step lists, rule times as floats,
and the fields of one redacted payload read out as keyed value hashes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from syncwatch.config.audit import CORRELATION_ID, FieldOwnership, FlowAudit, OwnerRule
from syncwatch.config.jsonpath import Step, parse_json_path

MISSING: Any = object()
UNMAPPED = "unmapped"
MAX_DEPTH = 8


def get_path(body: Any, steps: list[Step]) -> Any:
    cur = body
    for step in steps:
        if isinstance(step, str) and isinstance(cur, dict):
            if step not in cur:
                return MISSING
            cur = cur[step]
        elif isinstance(step, int) and isinstance(cur, list):
            if step >= len(cur):
                return MISSING
            cur = cur[step]
        else:
            return MISSING
    return cur


def scalar_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    return None


class ValueHasher:
    """A 61-bit hash of a value's canonical JSON that is the same in every process (Python's `hash`
    of a str is salted per process; the tracked hashes are persisted and compared after a
    restart): the bytes read as one integer, hashed modulo the Mersenne prime 2**61 - 1 (Python's
    own hash of an int, in C). Values are already redacted, and a redaction marker carries the
    keyed hash of what it replaced, so equal secrets compare equal and none can be guessed from
    the hash; other values are in the findings of the same file anyway. A trailing tag per kind of
    value keeps "1" and 1 apart. Two different values of one field hash alike by accident with odds
    of about 2**-61."""

    def __call__(self, value: Any) -> int:
        if isinstance(value, str):
            return hash(int.from_bytes(value.encode("utf-8", "surrogatepass") + b"\x01", "little"))
        return hash(int.from_bytes(orjson.dumps(value, option=orjson.OPT_SORT_KEYS) + b"\x02", "little"))


@dataclass(frozen=True, slots=True)
class _Rule:
    owner: str
    steps: list[Step] | None
    equals: frozenset[str]
    start: float
    end: float

    def holds(self, body: Any, t: float) -> bool:
        if not self.start <= t < self.end:
            return False
        if self.steps is None:
            return True
        return scalar_text(get_path(body, self.steps)) in self.equals


def _rule(r: OwnerRule) -> _Rule:
    return _Rule(
        owner=r.owner,
        steps=parse_json_path(r.path) if r.path else None,
        equals=frozenset(r.equals or ()),
        start=r.from_.timestamp() if r.from_ else float("-inf"),
        end=r.until.timestamp() if r.until else float("inf"),
    )


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    steps: list[Step]
    owner: str | None
    rules: tuple[_Rule, ...]

    def owner_at(self, body: Any, t: float) -> str | None:
        for r in self.rules:
            if r.holds(body, t):
                return r.owner
        return self.owner


def _field(name: str, f: FieldOwnership) -> _Field:
    return _Field(name, parse_json_path(f.path), f.owner, tuple(_rule(r) for r in f.rules))


class FlowMap:
    """One audited flow: how to find the record key, the fields and their owners."""

    def __init__(self, name: str, cfg: FlowAudit, max_unmapped: int) -> None:
        self.name = name
        self.window = cfg.sync_window
        self.record_steps = None if cfg.record_key == CORRELATION_ID else parse_json_path(cfg.record_key)
        self.fields = [_field(n, f) for n, f in cfg.fields.items()]
        self.key_steps = parse_json_path(cfg.idempotency_key) if cfg.idempotency_key else None
        self.key_ignore = [parse_json_path(p) for p in cfg.idempotency_ignore_fields]
        self.record_id_steps = parse_json_path(cfg.record_id) if cfg.record_id else None
        self.max_unmapped = max_unmapped
        self.systems = {f.owner for f in self.fields if f.owner} | {r.owner for f in self.fields for r in f.rules}

    def record_key(self, body: Any, corr: str) -> str | None:
        if self.record_steps is None:
            return corr
        return scalar_text(get_path(body, self.record_steps))

    def values(self, body: Any, t: float) -> Iterator[tuple[str, str, Any, str | None]]:
        """(field name, metric label, value, owner) of the fields present in the payload."""
        if self.fields:
            for f in self.fields:
                v = get_path(body, f.steps)
                if v is not MISSING:
                    yield f.name, f.name, v, f.owner_at(body, t) if f.rules else f.owner
            return
        for n, (path, v) in enumerate(leaves(body, "$", 0), start=1):
            yield path, UNMAPPED, v, None
            if n >= self.max_unmapped:
                return


def without(node: Any, steps: list[Step]) -> Any:
    """A copy of `node` without the value(s) at `steps` (a list item becomes null, so the other
    indexes keep their places); only the containers along the path are copied."""
    if not steps:
        return node
    step, rest = steps[0], steps[1:]
    if isinstance(node, dict) and not isinstance(step, int):
        keys = list(node) if step is None else [step] if step in node else []
        if not keys:
            return node
        out = dict(node)
        for k in keys:
            if rest:
                out[k] = without(node[k], rest)
            else:
                del out[k]
        return out
    if isinstance(node, list) and not isinstance(step, str):
        idxs = range(len(node)) if step is None else [step] if step < len(node) else []
        if not idxs:
            return node
        items = list(node)
        for i in idxs:
            items[i] = without(node[i], rest) if rest else None
        return items
    return node


def leaves(node: Any, path: str, depth: int) -> Iterator[tuple[str, Any]]:
    """Leaf fields of a payload by dotted path; a list is one value (its indexes are not stable)."""
    if isinstance(node, dict) and depth < MAX_DEPTH:
        for k, v in node.items():
            yield from leaves(v, f"{path}.{k}", depth + 1)
    elif path != "$":
        yield path, node
