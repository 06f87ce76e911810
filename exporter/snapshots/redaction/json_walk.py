"""The structural path for JSON: parse, apply the key rules in the decoder's hooks, dump again.

Used when the fast textual path cannot decide, when path rules need the parsed structure, and
for JSON documents inside string values (parsed up to MAX_NESTED_JSON levels deep).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

from syncwatch.snapshots.redaction.keys import KeyRules
from syncwatch.snapshots.redaction.markers import REDACTED_RE, Markers
from syncwatch.snapshots.redaction.paths import PathRules
from syncwatch.snapshots.redaction.patterns import PatternScanner
from syncwatch.snapshots.redaction.text import TextRules
from syncwatch.snapshots.redaction.user import UserPatterns

# JSON documents inside string values are parsed this many levels deep; deeper ones (each level
# doubles the backslashes) still meet the text rules, which see through escaped quotes.
MAX_NESTED_JSON: Final = 8
_SAFE_KEYS_MAX: Final = 100_000


class JsonWalk:
    """Key rules, path rules, text rules and patterns over a parsed JSON document."""

    def __init__(
        self,
        keys: KeyRules,
        text: TextRules,
        patterns: PatternScanner,
        user: UserPatterns,
        paths: PathRules,
        markers: Markers,
    ):
        self._keys = keys
        self._text = text
        self._patterns = patterns
        self._user = user
        self._paths = paths
        self.marker = markers.marker
        self._safe_keys: set[str] = set()  # keys seen and known harmless

    def structural(self, text: str, counts: Counter[str], depth: int) -> str | None:
        """Key rules run in the decoder's object hook (one Python call per object, no second
        walk); string values are scanned there too, numbers in the number hooks. `text` itself
        if nothing changed; None if it is no JSON (or nested too deep to walk)."""
        changed = [False]
        found: Counter[str] = Counter()
        hooks: dict[str, Any] = {"object_hook": self._object_hook(found, changed, depth)}
        if self._keys.defaults:
            hooks["parse_int"] = self._number_hook(found, changed, int)
            hooks["parse_float"] = self._number_hook(found, changed, float)
        try:
            parsed = json.loads(text, **hooks)
            if type(parsed) is list:
                parsed = self._scan_list(parsed, found, changed, depth)
            elif type(parsed) is str:
                new = self._scan_str(parsed, found, depth)
                if new is not parsed:
                    parsed, changed[0] = new, True
            if self._paths.rules and depth == 0:
                before = sum(found.values())
                parsed = self._paths.apply(parsed, found)
                changed[0] = changed[0] or sum(found.values()) != before
            out = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")) if changed[0] else text
        except (ValueError, RecursionError):
            return None
        counts.update(found)
        return out

    def _number_hook(
        self, counts: Counter[str], changed: list[bool], convert: Callable[[str], Any]
    ) -> Callable[[str], Any]:
        cards_in = self._patterns.cards_in

        def hook(token: str) -> Any:
            # A card number sent as a JSON number (sign, fraction and exponent kept around the
            # marker) becomes a string, as the fast path makes it.
            if len(token) >= 13:
                new = cards_in(token, counts)
                if new is not token:
                    changed[0] = True
                    return new
            return convert(token)

        return hook

    def _object_hook(
        self, counts: Counter[str], changed: list[bool], depth: int
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        safe_keys = self._safe_keys
        key_kind = self._keys.kind
        scan_str = self._scan_str
        marker = self.marker
        always_scan = bool(self._user.rules)

        def hook(obj: dict[str, Any]) -> dict[str, Any]:
            # Runs once per JSON object, on the dict the C decoder built; nested objects were
            # handled already. Most objects only have keys seen before and known harmless.
            keys = obj.keys()
            if not keys <= safe_keys:
                renamed: dict[str, str] | None = None
                for k in list(keys - safe_keys):
                    kind = key_kind(k)
                    if kind is None:
                        new_k = self._scan_key(k, counts)
                        if new_k is not k:
                            renamed = renamed or {}
                            renamed[k] = new_k
                        elif len(safe_keys) < _SAFE_KEYS_MAX:
                            safe_keys.add(k)
                        continue
                    v = obj[k]
                    t = type(v)
                    if v is not None and not (t is str and REDACTED_RE.fullmatch(v)):
                        obj[k] = marker(kind, v if t is str else json.dumps(v, sort_keys=True))
                        counts[kind] += 1
                        changed[0] = True
                if renamed:
                    obj = {renamed.get(k, k): v for k, v in obj.items()}
                    changed[0] = True
            for k, v in obj.items():
                t = type(v)
                if t is str:
                    # Inline cheap test (this loop runs for every value): a card number or IBAN
                    # needs 13+ characters; an e-mail, a pair, an element or a JSON document one
                    # of these characters.
                    if (
                        always_scan
                        or len(v) >= 13
                        or "@" in v
                        or "=" in v
                        or ":" in v
                        or "<" in v
                        or "%" in v
                        or "{" in v
                        or "[" in v
                    ):
                        if REDACTED_RE.fullmatch(v):
                            continue
                        new = scan_str(v, counts, depth)
                        if new is not v:
                            obj[k] = new
                            changed[0] = True
                elif t is list:
                    self._scan_list(v, counts, changed, depth)
            return obj

        return hook

    def _scan_list(self, items: list[Any], counts: Counter[str], changed: list[bool], depth: int) -> list[Any]:
        # Objects inside were handled by the hook already, numbers by the number hooks; strings
        # and nested lists not. A stack, not recursion: the decoder allows deeper nesting.
        stack = [items]
        while stack:
            lst = stack.pop()
            for i, v in enumerate(lst):
                t = type(v)
                if t is str:
                    new = self._scan_str(v, counts, depth)
                    if new is not v:
                        lst[i] = new
                        changed[0] = True
                elif t is list:
                    stack.append(v)
        return items

    def _scan_key(self, key: str, counts: Counter[str]) -> str:
        """Patterns in an object key (`{"jane@example.com": …}`), as the fast path finds them."""
        new = key
        if self._keys.defaults and (len(key) >= 13 or "@" in key or "%40" in key):
            new = self._patterns.in_str(key, counts)
        if self._user.rules:
            new = self._user.apply(new, counts)
        return key if new == key else new

    def _scan_str(self, value: str, counts: Counter[str], depth: int = 0) -> str:
        """Rules on one JSON string value: a JSON document in it is redacted as JSON (nested up
        to MAX_NESTED_JSON levels); otherwise the text rules and patterns apply."""
        if depth < MAX_NESTED_JSON:
            head = value[:1]
            looks_like_json = head in ("{", "[") or (head.isspace() and value.lstrip()[:1] in ("{", "["))
            if looks_like_json and value.rstrip()[-1:] in ("}", "]"):
                nested = self.structural(value, counts, depth + 1)
                if nested is not None:
                    return nested
        new = value
        if self._text.enabled:
            new = self._text.apply(new, counts)
        if self._keys.defaults and (len(new) >= 13 or "@" in new or "%40" in new):
            new = self._patterns.in_str(new, counts)
        if self._user.rules:
            new = self._user.apply(new, counts)
        return value if new == value else new
