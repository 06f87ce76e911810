"""Key rules in plain text: `key=value` / `key: value` pairs (also URL-encoded and quoted), header
lines (`Authorization:`, `Cookie:`) up to their end, and XML elements with a sensitive name.

Each character is looked at a bounded number of times: values are matched apart from their
keys, and only for a sensitive key; existing markers are matched and skipped.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable

from syncwatch.snapshots.redaction.keys import LINE_KINDS
from syncwatch.snapshots.redaction.markers import REDACTED_RE

# `password=hunter2`, `Authorization: Bearer abc`, `?api_key=x`, `"pwd": "a b"`, `api_key%3Dx`:
# a key, a separator (`=`, `:`, or their URL encodings; after the key's closing quote, escaped
# or not), then the value, matched apart (`_PAIR_VALUE`) and only for a sensitive key, so each
# character is looked at a bounded number of times. Existing markers are matched and skipped.
# A key starts after a non-key character or right after a `%XX` escape (`%3Fapi_key%3D…`); a
# quoted JSON-style key may hold any characters (`"api key": …`).
_PAIR_KEY = re.compile(
    r"(?P<marker>\[REDACTED:[A-Za-z0-9_.-]+:[0-9a-f]{8}\])"
    r"|(?:(?<![\w.%-])|(?<=%[0-9A-Fa-f]{2}))(?P<key>[\w.-]{1,64})(?P<sep>(?:\\*[\"'])?[ \t]*(?:[=:]|%3[DdAa])[ \t]*)"
    r"|(?<=\")(?P<qkey>[^\"\\\n]{1,64})(?P<qsep>\\*\"[ \t]*:[ \t]*)"
)
# A value that starts with a bracket is the whole bracketed value (brackets in strings skipped),
# or the rest of the text if it does not close. Each bracket, quote and backslash is seen once.
_BRACKET_TOKENS = re.compile(r'[\[\]{}"\\]')
# A quoted value (`"a b"`, `'a b'`, `\"a b\"`) runs to the same quote on the same line (at
# most MAX_QUOTED characters); any other value is a token up to whitespace, `&` (or `%26`), `;`,
# `,`, `"`, `<` or `>`.
_QUOTE = re.compile(r"\\*\"|'")
_PAIR_VALUE = re.compile(r"(?:\\*\"|')?(?P<v>(?i:bearer |basic |digest )?(?:[^\s&\";,<>%]|%(?!26))+)")
MAX_QUOTED = 1024
_LINE_END = re.compile(r"[\r\n]|\\[rn]")
# XML elements (`<password>`, `<wsse:Password Type="…">`): the element's content up to its
# closing tag is the value (or up to the next `<` if it has none).
_XML_OPEN = re.compile(r"<(?P<qname>(?:[\w.-]{1,64}:)?(?P<local>[\w.-]{1,64}))(?:\s[^<>]{0,4096})?(?<!/)>")
_XML_CLOSE = re.compile(r"</([\w.:-]{1,129})\s*>")


def _bracket_end(text: str, pos: int) -> int:
    depth = 0
    in_string = False
    escaped_until = -1
    for m in _BRACKET_TOKENS.finditer(text, pos):
        i = m.start()
        if i < escaped_until:
            continue  # the character after a backslash
        c = m.group()
        if c == "\\":
            escaped_until = i + 2
        elif c == '"':
            in_string = not in_string
        elif not in_string:
            depth += 1 if c in "{[" else -1
            if depth == 0:
                return i + 1
    return len(text)


def _pair_value(text: str, pos: int, header_line: bool) -> tuple[int, int, int] | None:
    """Where the value of a pair starting at `pos` is: (start, end, where scanning goes on). A
    bracketed value whole; a quoted one up to its closing quote; a header line's value up to
    the end of its line; else one token."""
    if text.startswith(("{", "["), pos):
        end = _bracket_end(text, pos)
        return pos, end, end
    q = _QUOTE.match(text, pos)
    if q is not None:
        quote = q.group()
        a = q.end()
        b = text.find(quote, a, a + MAX_QUOTED + len(quote))
        if b > a and text.find("\n", a, b) < 0 and text.find("\r", a, b) < 0:
            return a, b, b + len(quote)
        # A quote that does not close on its line opens no quoted value: a token follows.
    v = _PAIR_VALUE.match(text, pos)
    if v is None:
        return None
    a, b = v.span("v")
    if header_line:
        m = _LINE_END.search(text, a)
        line_b = m.start() if m else len(text)
        while line_b > a and text[line_b - 1] in " \t":
            line_b -= 1
        if line_b > a:
            b = line_b
    return a, b, b


class TextRules:
    """Pairs, header lines and XML elements whose key `key_kind` finds sensitive."""

    def __init__(self, key_kind: Callable[[str], str | None], marker: Callable[[str, str], str], *, enabled: bool):
        self.enabled = enabled  # any key sensitive at all
        self._key_kind = key_kind
        self._marker = marker

    def apply(self, text: str, counts: Counter[str]) -> str:
        """XML elements, then `key=value` / `key: value` pairs, with sensitive keys. `text`
        itself when nothing matched."""
        if not self.enabled:
            return text
        if "<" in text:
            text = self._xml(text, counts)
        if "=" in text or ":" in text or "%3" in text:
            text = self._pairs(text, counts)
        return text

    def _pairs(self, text: str, counts: Counter[str]) -> str:
        """Redact the value of every `key=value` / `key: value` whose key is sensitive. A pair
        with a harmless key consumes only its key and separator, so `url=https://x/?api_key=abc`
        still reaches `api_key`."""
        out: list[str] = []
        last = pos = 0
        while (m := _PAIR_KEY.search(text, pos)) is not None:
            if m.group("marker") is not None:
                pos = m.end()
                continue
            key = m.group("key")
            if key is None:
                key, sep = m.group("qkey"), m.group("qsep")
            else:
                sep = m.group("sep")
            kind = self._key_kind(key)
            if kind is None:
                pos = m.end()
                continue
            span = _pair_value(text, m.end(), kind in LINE_KINDS and (":" in sep or "%3a" in sep.lower()))
            if span is None:
                pos = m.end()
                continue
            a, b, end = span
            value = text[a:b]
            if REDACTED_RE.fullmatch(value):
                pos = end
                continue
            out.append(text[last:a])
            out.append(self._marker(kind, value))
            counts[kind] += 1
            last = b
            pos = end
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _xml(self, text: str, counts: Counter[str]) -> str:
        """Content of XML elements with a sensitive (local) name, up to the element's closing
        tag (found through one index of all closing tags), else up to the next `<`."""
        out: list[str] = []
        last = pos = 0
        closes: dict[str, list[int]] | None = None
        while (m := _XML_OPEN.search(text, pos)) is not None:
            kind = self._key_kind(m.group("local"))
            if kind is None:
                pos = m.end()
                continue
            a = m.end()
            if closes is None:
                closes = {}
                for c in _XML_CLOSE.finditer(text):
                    closes.setdefault(c.group(1), []).append(c.start())
            b = -1
            ends = closes.get(m.group("qname"))
            if ends:
                k = bisect.bisect_left(ends, a)
                if k < len(ends):
                    b = ends[k]
            if b < 0:
                b = text.find("<", a)
                if b < 0:
                    b = len(text)
            value = text[a:b]
            pos = b if b > a else a
            if not value.strip() or REDACTED_RE.fullmatch(value.strip()):
                continue
            out.append(text[last:a])
            out.append(self._marker(kind, value))
            counts[kind] += 1
            last = b
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)
