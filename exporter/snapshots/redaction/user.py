"""Patterns from config (`snapshots.redact.patterns`: kind -> regex), applied after the built-in rules.

Also decides which of them the fast JSON path may run over the whole text: those that find the
same there as inside one string value.
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from syncwatch.snapshots.redaction.markers import REDACTED_RE

# The parsed form of a regex, to tell which custom patterns the fast path may apply (private
# modules of `re`, without type information).
_re_constants: Any = importlib.import_module("re._constants")
_re_parser: Any = importlib.import_module("re._parser")


class UserPatterns:
    """The configured patterns, in config order; each match becomes a marker of its kind."""

    def __init__(self, patterns: dict[str, str] | None, marker: Callable[[str, str], str]):
        self.rules = [(kind, re.compile(rx)) for kind, rx in (patterns or {}).items()]
        self._marker = marker

    def context_free(self) -> bool:
        """Whether every pattern may run over a whole JSON text (see `context_free`)."""
        return all(context_free(rx) for _, rx in self.rules)

    def apply(self, text: str, counts: Counter[str]) -> str:
        for kind, rx in self.rules:

            def sub(m: re.Match[str], kind: str = kind) -> str:
                return self._sub(kind, m, counts)

            text = rx.sub(sub, text)
        return text

    def _sub(self, kind: str, m: re.Match[str], counts: Counter[str]) -> str:
        found = m.group(0)
        if not found or REDACTED_RE.fullmatch(found):
            return found
        counts[kind] += 1
        return self._marker(kind, found)


def context_free(rx: re.Pattern[str]) -> bool:
    """Whether a custom pattern finds the same in a JSON string value as in the whole JSON text
    around it: no anchors or look-arounds (a quote is what they would see at a string's edge),
    and nothing that can match a quote (so no match runs from one string into the next). The
    fast path applies such a pattern to the whole text; any other goes the structural way."""
    if rx.flags & re.VERBOSE:
        return False
    try:
        parsed = _re_parser.parse(rx.pattern, rx.flags)
    except Exception:
        return False
    ok_at = {_re_constants.AT_BOUNDARY, _re_constants.AT_NON_BOUNDARY}
    ok_categories = {_re_constants.CATEGORY_DIGIT, _re_constants.CATEGORY_WORD, _re_constants.CATEGORY_SPACE}
    c = _re_constants

    def items_ok(items: Any) -> bool:
        for op, av in items:
            if op is c.LITERAL:
                if av == 34:
                    return False
            elif op is c.IN:
                for iop, iav in av:
                    if iop is c.LITERAL:
                        if iav == 34:
                            return False
                    elif iop is c.RANGE:
                        if iav[0] <= 34 <= iav[1]:
                            return False
                    elif iop is c.CATEGORY:
                        if iav not in ok_categories:
                            return False
                    else:  # NEGATE and anything unforeseen
                        return False
            elif op is c.AT:
                if av not in ok_at:
                    return False
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT) or op is getattr(c, "POSSESSIVE_REPEAT", None):
                if not items_ok(av[2]):
                    return False
            elif op is c.SUBPATTERN:
                if not items_ok(av[3]):
                    return False
            elif op is getattr(c, "ATOMIC_GROUP", None):
                if not items_ok(av):
                    return False
            elif op is c.BRANCH:
                if not all(items_ok(branch) for branch in av[1]):
                    return False
            else:  # ANY, NOT_LITERAL, ASSERT, ASSERT_NOT, GROUPREF, ...
                return False
        return True

    return items_ok(parsed)
