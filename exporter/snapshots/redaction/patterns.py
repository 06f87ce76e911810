"""The built-in patterns anywhere in text: card numbers (Luhn), IBANs (mod-97), e-mail addresses.

Searched in UTF-8 bytes, candidates first found by C-level scans of translated copies, so a
4 KiB payload costs a few passes of native code and every rule stays linear in the text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Final

from syncwatch.snapshots.redaction.cards import (
    CARD_CLASSES,
    CARD_RUN,
    CARD_RUN_B,
    IBAN_B,
    IBAN_CLASSES,
    IBAN_GAP,
    THIRTEEN,
    ZEROS,
    card_windows,
    iban_length,
)

# E-mail addresses, also with the @ URL-encoded (`jane%40example.com`): found from each @ by
# walking back over at most 64 bytes of local part (RFC 5321's limit; on a class map, one
# C-level rfind), then matched there once. Bytes >= 0x80 count as letters (any UTF-8 letter).
_EMAIL_AT = re.compile(
    rb"[\w.%+\-\x80-\xff]{1,64}(?:@|%40)[\w\-\x80-\xff]{1,252}(?:\.[\w\-\x80-\xff]{1,252})*"
    rb"\.(?:[A-Za-z]|[\x80-\xff]){2,96}(?![\w\x80-\xff])"
)
_LOCAL_PART = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-" + bytes(range(0x80, 0x100))
)
_LOCAL_CLASSES = bytes(76 if c in _LOCAL_PART else 32 for c in range(256))  # "L" or " "
# What a JSON number token is made of: a card in a bare number turns the whole token into a string.
_NUMBER_CHARS: Final = frozenset(b"0123456789+-.eE")

# (start, end, replacement, kind, how many redactions it counts)
Span = tuple[int, int, bytes, str, int]
TextSpan = tuple[int, int, str, str, int]


class PatternScanner:
    """Cards, IBANs and e-mail addresses, each replaced by its marker."""

    def __init__(self, marker: Callable[[str, str], str]):
        self.marker = marker

    def in_str(self, text: str, counts: Counter[str]) -> str:
        data = text.encode("utf-8", "surrogatepass")
        out = self.scan(data, counts)
        return text if out is data else out.decode("utf-8", "surrogatepass")

    def scan(self, data: bytes, counts: Counter[str], json_text: bool = False) -> bytes:
        """Cards, IBANs and e-mail addresses in UTF-8 text (`data` itself if none). In JSON text
        without backslashes (`json_text`) no match can span two JSON tokens, so each is what
        the structural path finds in one string value; a card in a bare number turns the whole
        number token into a string, as the structural path's number hooks do."""
        spans: list[Span] = []
        n = len(data)
        t = data.translate(CARD_CLASSES)
        i = t.find(THIRTEEN)
        while i != -1:
            zeros = ZEROS.match(t, i)
            assert zeros is not None  # t[i:i + 13] is zeros
            run_end = zeros.end()
            for m in CARD_RUN_B.finditer(data, i, run_end):
                run = m.group().decode("utf-8")  # digits, ASCII separators, no-break spaces
                base = m.start()
                for s, e, digits in card_windows(run):
                    if not run.isascii():
                        s, e = len(run[:s].encode()), len(run[:e].encode())
                    spans.append((base + s, base + e, self.marker("card", digits).encode(), "card", 1))
            i = t.find(THIRTEEN, run_end)
        t = data.translate(IBAN_CLASSES)  # letters -> "A", digits -> "0"
        i = t.find(b"AA00")
        while i != -1:
            im = IBAN_B.match(data, i)
            k = iban_length(im.group().decode("utf-8")) if im is not None else 0
            if k and im is not None:
                found = im.group().decode("utf-8")[:k]
                k = len(found.encode())
                value = IBAN_GAP.sub("", found).upper()
                spans.append((i, i + k, self.marker("iban", value).encode(), "iban", 1))
            i = t.find(b"AA00", i + max(k, 1))
        needles = [x for x in (b"@", b"%40") if x[0] in data and x in data]  # memchr first
        if needles:
            local: bytes | None = None
            for needle in needles:
                at = data.find(needle)
                while at != -1:
                    if local is None:
                        local = data.translate(_LOCAL_CLASSES)
                    start = local.rfind(b" ", max(0, at - 64), at) + 1 or max(0, at - 64)
                    em = _EMAIL_AT.match(data, start) if start < at else None
                    if em is not None and em.end() > at:
                        value = em.group().decode("utf-8", "replace").lower().replace("%40", "@")
                        spans.append((em.start(), em.end(), self.marker("email", value).encode(), "email", 1))
                        at = em.end() - 1
                    at = data.find(needle, at + 1)
        if not spans:
            return data
        spans.sort(key=lambda sp: sp[0])
        if json_text:
            quotes = counted = 0
            for j, (s, e, _new, kind, _n) in enumerate(spans):
                if kind != "card":
                    continue
                quotes += data.count(b'"', counted, s)
                counted = s
                if quotes & 1:
                    continue  # inside a string
                while s > 0 and data[s - 1] in _NUMBER_CHARS:
                    s -= 1
                while e < n and data[e] in _NUMBER_CHARS:
                    e += 1
                found_cards: Counter[str] = Counter()
                token = self.cards_in(data[s:e].decode("utf-8", "surrogatepass"), found_cards)
                spans[j] = (s, e, b'"' + token.encode("utf-8", "surrogatepass") + b'"', "card", found_cards["card"])
            spans.sort(key=lambda sp: sp[0])
        out: list[bytes] = []
        last = 0
        for s, e, new, kind, found_n in spans:
            if s < last:
                continue  # overlaps one already applied (an IBAN's digits, say)
            out.append(data[last:s])
            out.append(new)
            counts[kind] += found_n
            last = e
        out.append(data[last:])
        return b"".join(out)

    def cards_in(self, text: str, counts: Counter[str]) -> str:
        spans: list[TextSpan] = []
        for m in CARD_RUN.finditer(text):
            base = m.start()
            for s, e, digits in card_windows(m.group()):
                spans.append((base + s, base + e, self.marker("card", digits), "card", 1))
        return self._apply_spans(text, spans, counts)

    @staticmethod
    def _apply_spans(text: str, spans: list[TextSpan], counts: Counter[str]) -> str:
        if not spans:
            return text
        spans.sort(key=lambda sp: sp[0])
        out: list[str] = []
        last = 0
        for s, e, new, kind, n in spans:
            if s < last:
                continue  # overlaps one already applied (an IBAN's digits, say)
            out.append(text[last:s])
            out.append(new)
            counts[kind] += n
            last = e
        out.append(text[last:])
        return "".join(out)
