"""Queue selection by exact names or shell-style patterns (`orders-*`, `*.fifo`)."""

from __future__ import annotations

import fnmatch

_GLOB = set("*?[")


def is_pattern(text: str) -> bool:
    return any(c in _GLOB for c in text)


def literal_prefix(pattern: str) -> str:
    """The part before the first wildcard: brokers that filter by prefix get this much."""
    for i, c in enumerate(pattern):
        if c in _GLOB:
            return pattern[:i]
    return pattern


class Selector:
    def __init__(self, include: list[str], exclude: list[str] | None = None):
        self.include = list(include)
        self.exclude = list(exclude or [])
        self.names = [q for q in self.include if not is_pattern(q)]
        self.patterns = [q for q in self.include if is_pattern(q)]

    @property
    def needs_listing(self) -> bool:
        return bool(self.patterns)

    def matches(self, name: str) -> bool:
        if any(fnmatch.fnmatchcase(name, x) for x in self.exclude):
            return False
        return name in self.names or any(fnmatch.fnmatchcase(name, p) for p in self.patterns)
