"""The fast textual path for JSON: key rules and patterns applied to the UTF-8 text itself.

A 4 KiB order then costs a few C-level scans instead of a Python call per object and per value.
It only runs on text without a backslash: there every JSON string is the plain bytes between two
quotes (no escape can hide a digit, an @ or a key's letters, and a quote's parity tells inside
from outside). Whatever it cannot decide with certainty returns None: the structural walk
(json_walk) then decides, and tests/test_redaction.py holds the two to the same output.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Final

from syncwatch.snapshots.redaction.keys import KeyRules
from syncwatch.snapshots.redaction.markers import REDACTED_RE, Markers
from syncwatch.snapshots.redaction.patterns import PatternScanner
from syncwatch.snapshots.redaction.text import TextRules
from syncwatch.snapshots.redaction.user import UserPatterns

# Deleted before the stem search that mirrors `keys.normalise` (quotes stay: they end a key).
_NOT_NORMALISED = bytes(c for c in range(256) if c not in b'"0123456789abcdefghijklmnopqrstuvwxyz')
_JSON_WS = frozenset(b" \t\r\n")
# Text with any of these goes the structural way: a backslash starts an escape (which can hide a
# digit, an @ or a key's letters); İ and K (U+212A) are the only characters whose lower case
# `keys.normalise` turns into ASCII letters, which the byte-level stem search would not see.
_CAPITAL_I_DOT = "\u0130".encode()
_KELVIN = "\u212a".encode()
_UNKNOWN: Final = "\0unknown"  # never a kind (kinds are [a-z0-9_]): not yet in the key cache
# The key plain-text scanning would see right before `":` (what text.py's `_PAIR_KEY` takes as key).
_TAIL_KEY = re.compile(r"(?<![\w.-])[\w.-]{1,64}\Z")
# A JSON value that is not a string, for the fast path: a scalar token, or the brackets and
# strings that delimit an object or array (text without backslashes: a string ends at a quote).
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_NESTING = re.compile(rb'"[^"]*"|[\[\]{}]')


def decode_value(data: bytes, pos: int) -> tuple[Any, int]:
    """The JSON value starting at byte `pos` of text without backslashes, and the byte offset
    after it. Only the value's own bytes are decoded: a string is the bytes up to the next
    quote, an object or array ends where its brackets balance (strings skipped)."""
    c = data[pos : pos + 1]
    if c == b'"':
        q = data.find(b'"', pos + 1)
        if q == -1:
            raise ValueError("unterminated string")
        return data[pos + 1 : q].decode("utf-8", "surrogatepass"), q + 1
    if c in (b"{", b"["):
        depth = 0
        for m in _NESTING.finditer(data, pos):
            token = m.group()
            if token[0] == 34:
                continue
            depth += 1 if token in (b"{", b"[") else -1
            if depth == 0:
                return json.loads(data[pos : m.end()]), m.end()
        raise ValueError("unbalanced brackets")
    scalar = _SCALAR.match(data, pos)
    if scalar is None:
        raise ValueError("no JSON value")
    return json.loads(scalar.group()), scalar.end()


class FastJson:
    """The fast path over JSON text; shares its rules with the redactor that builds it."""

    def __init__(self, keys: KeyRules, text: TextRules, patterns: PatternScanner, user: UserPatterns, markers: Markers):
        self._keys = keys
        self._text = text
        self._patterns = patterns
        self._user = user
        self.marker = markers.marker

    def redact(self, text: str, counts: Counter[str], data: bytes | None = None) -> bytes | None:
        """`text` (`data`: the same, UTF-8 encoded, if at hand) redacted, or None when the
        structural walk has to decide (`counts` then left as it was)."""
        if data is None:
            data = text.encode("utf-8", "surrogatepass")
        keyed = self._keys_in_bytes(data, counts)
        if keyed is None:
            return None
        out = self._patterns.scan(keyed, counts, json_text=True)
        if self._user.rules:
            out = self._user.apply(out.decode("utf-8", "surrogatepass"), counts).encode("utf-8", "surrogatepass")
        return out

    def _keys_in_bytes(self, data: bytes, counts: Counter[str]) -> bytes | None:
        """Values under sensitive keys, and the text rules inside string values. Both need a
        sensitive key, and every sensitive key contains one of the stems once lower-cased and
        stripped of all but letters and digits (as `keys.normalise` does). So the stems are searched
        twice: in the lower-cased text, which gives the strings to look at, and in the text
        stripped that way (quotes kept, so no match spans two strings): a string with a stem
        there but none in the plain text has it split by a separator (`p_assword`), and the
        structural path decides. Strings are told apart by counting quotes: without
        backslashes, the text between quote 2k-1 and quote 2k is the k-th string.
        None when the structural path has to decide (`counts` is left as it was)."""
        if b"\\" in data or (b"\xb0" in data and _CAPITAL_I_DOT in data) or (b"\xaa" in data and _KELVIN in data):
            return None  # one-byte searches (memchr) first: the characters are rare
        lower = data.lower()
        norm = lower.translate(None, _NOT_NORMALISED)
        find = self._keys.stems.find
        norm_hits = find(norm)
        if not norm_hits:
            return data  # no stem in the stripped text: none in the plain text either
        stem_strings = set()  # quote counts before each stem in the stripped text
        quotes = counted = 0
        for _, p, _ in norm_hits:
            quotes += norm.count(b'"', counted, p)
            counted = p
            stem_strings.add(quotes)
        hits = find(lower)
        n = len(data)
        reps: list[tuple[int, int, bytes]] = []
        kinds: list[str] = []  # counted once the whole text is through (None leaves counts alone)
        rule_counts: Counter[str] | None = None
        key_cache = self._keys.cache
        seen = set()
        quotes = counted = 0  # quotes in data[:counted]
        done = 0  # stems before this offset are handled (same string, or inside a value replaced)
        for _, p, _ in hits:
            quotes += data.count(b'"', counted, p)
            counted = p
            seen.add(quotes)
            if p < done:
                continue
            if not quotes & 1:
                return None  # a stem outside strings: no JSON
            q1 = data.rfind(b'"', 0, p)
            q2 = data.find(b'"', p)
            if q2 < 0:
                return None
            done = q2 + 1
            s = data[q1 + 1 : q2].decode("utf-8", "surrogatepass")
            k = q2 + 1
            while k < n and data[k] in _JSON_WS:
                k += 1
            is_key = k < n and data[k] == 58  # ":"
            # Pairs, XML elements and header lines inside this string, as the structural path
            # finds them in a string value; in a key it leaves them, so that is its decision.
            if "=" in s or ":" in s or "<" in s or "%3" in s:  # what `_text_rules` looks for
                found: Counter[str] = Counter()
                new = self._text.apply(s, found)
                if new is not s:
                    if is_key:
                        return None
                    reps.append((q1 + 1, q2, new.encode("utf-8", "surrogatepass")))
                    rule_counts = found if rule_counts is None else rule_counts + found
            if not is_key:
                if k < n and data[k] not in b",}]":
                    return None  # `"pwd"="x"`: not what follows a JSON string, no JSON
                continue
            kind = key_cache.get(s, _UNKNOWN)
            if kind is _UNKNOWN:
                kind = self._keys.kind(s)
            if kind is None:
                tail = _TAIL_KEY.search(s, max(0, len(s) - 64))
                if tail is not None and tail.start() > 0 and self._keys.kind(tail.group()) is not None:
                    return None  # `"x pwd": 1`: plain-text scanning would take `pwd` as a key
                continue
            v = k + 1
            while v < n and data[v] in _JSON_WS:
                v += 1
            try:
                value, end = decode_value(data, v)
            except ValueError:
                return None
            e = end
            while e < n and data[e] in _JSON_WS:
                e += 1
            if e < n and data[e] not in b",}]":
                return None  # not what follows a JSON value: no JSON
            done = end
            if type(value) is str:
                if value.startswith("[REDACTED:") and REDACTED_RE.fullmatch(value):
                    continue
            elif value is None:
                continue
            else:
                value = json.dumps(value, sort_keys=True)
            reps.append((v, end, b'"' + self.marker(kind, value).encode() + b'"'))
            kinds.append(kind)
        if not stem_strings <= seen:
            return None  # a stem split by a separator, in a key or a value: parse it
        for kind in kinds:
            counts[kind] += 1
        if rule_counts:
            counts.update(rule_counts)
        if not reps:
            return data
        out: list[bytes] = []
        last = 0
        for s_, e_, new_b in reps:
            out.append(data[last:s_])
            out.append(new_b)
            last = e_
        out.append(data[last:])
        return b"".join(out)
