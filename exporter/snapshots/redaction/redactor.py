"""The redactor: which path a body takes (fast JSON, structural JSON, plain text, binary), built
from the rule modules of this package.

It holds no rule of its own: each concern lives in one module (keys, text, patterns, cards, user,
paths, markers) and the two JSON paths (json_fast, json_walk) combine them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from syncwatch.snapshots.redaction.json_fast import FastJson
from syncwatch.snapshots.redaction.json_walk import JsonWalk
from syncwatch.snapshots.redaction.keys import KeyRules
from syncwatch.snapshots.redaction.markers import Markers
from syncwatch.snapshots.redaction.paths import PathRules
from syncwatch.snapshots.redaction.patterns import PatternScanner
from syncwatch.snapshots.redaction.text import TextRules
from syncwatch.snapshots.redaction.user import UserPatterns


@dataclass
class RedactionResult:
    data: bytes
    content_type: str  # json | text | binary
    counts: Counter[str] = field(default_factory=Counter)


class Redactor:
    def __init__(
        self,
        hash_key: bytes,
        *,
        defaults: bool = True,
        extra_keys: Iterable[str] = (),
        paths: Iterable[str] = (),
        patterns: dict[str, str] | None = None,
    ):
        markers = Markers(hash_key)
        self.marker = markers.marker
        self._keys = keys = KeyRules(defaults=defaults, extra_keys=extra_keys)
        self._text = text = TextRules(keys.kind, markers.marker, enabled=keys.any)
        self._patterns = scanner = PatternScanner(markers.marker)
        self._user = user = UserPatterns(patterns, markers.marker)
        path_rules = PathRules(paths, markers.marker)
        self._walk = JsonWalk(keys, text, scanner, user, path_rules, markers)
        self._fast_json = FastJson(keys, text, scanner, user, markers)
        # The textual fast path: default rules, no JSON paths (they need the parsed structure),
        # custom patterns that match the same inside one string as in the whole text, and
        # extra keys that all contain a letter or digit (the stem the fast path looks for).
        self._fast = defaults and not path_rules.rules and user.context_free() and all(keys.extra)

    # -- entry point ---------------------------------------------------------------------------
    def redact_body(self, body: Any, encoded: bytes | None = None) -> RedactionResult:
        """Redact an OTLP log body already converted to Python: str, bytes, dict/list (kvlist or
        array), or a scalar. Returns the bytes to store. `encoded`: a str body as UTF-8
        (surrogatepass), if the caller has it already."""
        counts: Counter[str] = Counter()
        if not isinstance(body, str):
            encoded = None
        if isinstance(body, bytes):
            try:
                encoded, body = body, body.decode("utf-8")
            except UnicodeDecodeError:
                # Binary: scan it as latin-1 so card numbers or e-mails in ASCII parts are caught;
                # latin-1 maps bytes 1:1, so the result encodes back to the same layout.
                text = self._redact_text(body.decode("latin-1"), counts)
                return RedactionResult(text.encode("latin-1", "replace"), "binary", counts)
        if isinstance(body, str):
            if body.lstrip()[:1] in ("{", "["):
                redacted = self._redact_json_text(body, counts, encoded)
                if redacted is not None:
                    return RedactionResult(redacted, "json", counts)
            return RedactionResult(self._redact_text(body, counts).encode("utf-8", "surrogatepass"), "text", counts)
        if body is None:
            return RedactionResult(b"", "text", counts)
        # A key-value map, an array or a bare scalar: JSON, through the same path as JSON text.
        try:
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        except RecursionError:
            text = repr(body)  # nested beyond what the encoder takes: the text rules still apply
            return RedactionResult(self._redact_text(text, counts).encode("utf-8", "surrogatepass"), "text", counts)
        return RedactionResult(self._redact_json_text(text, counts) or b"", "json", counts)

    def redact_head(self, data: bytes, size: int) -> RedactionResult:
        """The first `size` bytes of a body too large to redact whole, of which less is kept:
        text rules and patterns, no parse. In JSON text the key rules still hold through
        `"key": value` pairs (a bracketed value whole); values the cut splits are not kept."""
        counts: Counter[str] = Counter()
        head = data[:size]
        try:
            text = head.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:
                text = self._redact_text(head.decode("latin-1"), counts)
                return RedactionResult(text.encode("latin-1", "replace"), "binary", counts)
            text = head[: exc.start].decode("utf-8", "surrogatepass")  # cut inside a character
        kind = "json" if text.lstrip()[:1] in ("{", "[") else "text"
        return RedactionResult(self._redact_text(text, counts).encode("utf-8", "surrogatepass"), kind, counts)

    # -- JSON ----------------------------------------------------------------------------------
    def _redact_json_text(self, text: str, counts: Counter[str], data: bytes | None = None) -> bytes | None:
        """JSON text (`data`: the same, UTF-8 encoded, if at hand): the fast textual path when it
        applies, else the structural one. None if `text` is not JSON."""
        if self._fast and text.rstrip()[-1:] in ("}", "]"):
            # Not parsed as a whole (that alone would cost a third of the budget per payload):
            # JSON-shaped text goes the fast way; whatever it cannot decide with certainty goes
            # to the structural path, which parses and falls back to plain text if it is no JSON.
            out = self._fast_json.redact(text, counts, data)
            if out is not None:
                return out
        out_text = self._walk.structural(text, counts, 0)
        if out_text is None:
            return None
        if out_text is text and data is not None:
            return data
        return out_text.encode("utf-8", "surrogatepass")

    def _structural(self, text: str, counts: Counter[str], depth: int) -> str | None:
        """The structural path alone (tests hold the fast path to its output)."""
        return self._walk.structural(text, counts, depth)

    # -- plain text ----------------------------------------------------------------------------
    def _redact_text(self, text: str, counts: Counter[str]) -> str:
        if self._text.enabled:
            text = self._text.apply(text, counts)
        if self._keys.defaults:
            text = self._patterns.in_str(text, counts)
        if self._user.rules:
            text = self._user.apply(text, counts)
        return text
