"""JSON path rules from config (`snapshots.redact.paths`: `$.customer.address.street`,
`$.items[*].name`, `$.lines[0]`): the value at each path is redacted whole, whatever its key.

They need the parsed structure, so a redactor with paths never takes the fast textual path.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from syncwatch.config.jsonpath import parse_json_path
from syncwatch.snapshots.redaction.markers import REDACTED_RE


class PathRule:
    """A JSON path rule of `snapshots.redact.paths` (syntax: syncwatch.config.jsonpath)."""

    def __init__(self, text: str):
        self.text = text
        self.steps = parse_json_path(text)


class PathRules:
    """Every configured path, applied in config order to a parsed body."""

    def __init__(self, paths: Iterable[str], marker: Callable[[str, str], str]):
        self.rules = [PathRule(p) for p in paths]
        self._marker = marker

    def apply(self, value: Any, counts: Counter[str]) -> Any:
        for rule in self.rules:
            value = self._apply(value, rule.steps, counts)
        return value

    def _apply(self, node: Any, steps: list[Any], counts: Counter[str]) -> Any:
        step, rest = steps[0], steps[1:]
        keys: list[Any]
        if isinstance(node, dict):
            keys = list(node) if step is None else ([step] if isinstance(step, str) and step in node else [])
        elif isinstance(node, list):
            if step is None:
                keys = list(range(len(node)))
            elif isinstance(step, int) and step < len(node):
                keys = [step]
            else:
                keys = []
        else:
            return node
        for k in keys:
            if rest:
                node[k] = self._apply(node[k], rest, counts)
            elif node[k] is not None and not (isinstance(node[k], str) and REDACTED_RE.fullmatch(node[k])):
                v = node[k]
                node[k] = self._marker("path", v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                counts["path"] += 1
        return node
