"""Where any of a few byte strings occur in a text, in one pass of native code when available.

The fast JSON path looks for every sensitive key's stem at once; ahocorasick-rs does that with a
SIMD prefilter instead of one scan of the text per stem.
"""

from __future__ import annotations

import importlib
from typing import Any


def _native() -> Any:
    try:
        return importlib.import_module("ahocorasick_rs")
    except ImportError:  # pragma: no cover - the pure-Python search in MultiFind takes over
        return None


_ac: Any = _native()


class MultiFind:
    """Where a few byte strings occur, as (needle index, start, end) in order of start: at least
    every occurrence that does not overlap an earlier one reported (leftmost-first, as
    ahocorasick-rs finds them). Without the wheel, a loop of `bytes.find` reports them all."""

    def __init__(self, needles: list[bytes]):
        self._needles = needles
        self._ac: Any = (
            _ac.BytesAhoCorasick(needles, matchkind=_ac.MatchKind.LeftmostFirst, implementation=_ac.Implementation.DFA)
            if _ac is not None and needles
            else None
        )

    def find(self, haystack: bytes) -> list[tuple[int, int, int]]:
        if self._ac is not None:
            found: list[tuple[int, int, int]] = self._ac.find_matches_as_indexes(haystack)
            return found
        out = []
        for i, needle in enumerate(self._needles):
            p = haystack.find(needle)
            while p != -1:
                out.append((i, p, p + len(needle)))
                p = haystack.find(needle, p + 1)
        out.sort(key=lambda m: m[1])
        return out
