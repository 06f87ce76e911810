"""Redaction of payload snapshots before anything is stored.

A redacted value becomes `[REDACTED:<kind>:<8 hex>]`, the hex being a keyed hash (BLAKE2b with a
secret key) of the value: two snapshots carrying the same card number show the same marker, so
they stay comparable, but without the key nobody can test guesses against the marker.

Rules (README's redaction section lists the encodings each one covers):
- keys: a value under a sensitive key (case-insensitive, any depth of a JSON body, whole value
  even if it is an object); JSON documents inside string values are parsed and redacted too;
- paths: JSON paths from config (`$.customer.address.street`, `$.items[*].name`, `$.lines[0]`);
- patterns anywhere in text: payment card numbers that pass the Luhn check, e-mail addresses,
  IBANs that pass the mod-97 check, plus patterns from config;
- in text (and inside string values): `key=value` / `key: value` pairs and XML elements whose
  key is sensitive; `Authorization:` and `Cookie:` header lines up to their end.
Every rule runs in time linear in the text (bounded look-ahead, no nested search per match).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from syncwatch.config.jsonpath import parse_json_path

try:  # the parsed form of a regex, to tell which custom patterns the fast path may apply
    import re._constants as _re_constants
    import re._parser as _re_parser
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _re_constants  # type: ignore[no-redef]
    import sre_parse as _re_parser  # type: ignore[no-redef]

try:
    from ahocorasick_rs import (
        BytesAhoCorasick as _AhoCorasick,
    )
    from ahocorasick_rs import (
        Implementation as _ACImplementation,
    )
    from ahocorasick_rs import (
        MatchKind as _ACMatchKind,
    )
except ImportError:  # pragma: no cover - the pure-Python search in _MultiFind takes over
    _AhoCorasick = None

REDACTED_RE = re.compile(r"\[REDACTED:[A-Za-z0-9_.-]+:[0-9a-f]{8}\]")

# Key words matched anywhere inside the normalised key (lower-case, separators removed).
_KEY_SUBSTRINGS = {
    "password": "password",
    "passwd": "password",
    "passphrase": "password",
    "secret": "secret",
    "privatekey": "secret",
    "token": "token",
    "authorization": "authorization",
    "apikey": "api_key",
    "cardnumber": "card_number",
    "creditcard": "card_number",
    "iban": "iban",
    "socialsecurity": "ssn",
    "cookie": "cookie",
}
# Short key words matched only as a whole word of the key (`customer_ssn`, `cardCvv`), so that
# `company` is not taken for `pan`.
_KEY_WORDS = {
    "pwd": "password",
    "cvv": "cvv",
    "cvv2": "cvv",
    "cvc": "cvv",
    "csc": "cvv",
    "pan": "card_number",
    "ssn": "ssn",
}
# `Authorization: Digest a="1", b="2"` and `Cookie: a=1; b=2`: as header lines the whole rest of
# the line is the secret, not only its first token.
_LINE_KINDS = frozenset({"authorization", "cookie"})
# JSON documents inside string values are parsed this many levels deep; deeper ones (each level
# doubles the backslashes) still meet the text rules, which see through escaped quotes.
MAX_NESTED_JSON = 8

# Deleted before the stem search that mirrors `_normalise` (quotes stay: they end a key).
_NOT_NORMALISED = bytes(c for c in range(256) if c not in b'"0123456789abcdefghijklmnopqrstuvwxyz')
_JSON_WS = frozenset(b" \t\r\n")
# Text with any of these goes the structural way: a backslash starts an escape (which can hide a
# digit, an @ or a key's letters); İ and K (U+212A) are the only characters whose lower case
# `_normalise` turns into ASCII letters, which the byte-level stem search would not see.
_UNKNOWN = object()
_CAPITAL_I_DOT = "\u0130".encode()
_KELVIN = "\u212a".encode()
_NUMBER_CHARS = frozenset(b"0123456789+-.eE")
# The key plain-text scanning would see right before `":` (what `_PAIR_KEY` takes as key).
_TAIL_KEY = re.compile(r"(?<![\w.-])[\w.-]{1,64}\Z")
# A JSON value that is not a string, for the fast path: a scalar token, or the brackets and
# strings that delimit an object or array (text without backslashes: a string ends at a quote).
_SCALAR = re.compile(rb"-?[0-9][0-9.eE+-]*|true|false|null")
_NESTING = re.compile(rb'"[^"]*"|[\[\]{}]')
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Card numbers: 13-19 digits in groups, the groups separated by up to three of: space, tab,
# no-break space, `-`, `.`, `+` or `%20` (form and URL encodings of a space). A run is every
# group so joined; the card is a span of whole groups inside it (`_card_windows`). Each loop
# step takes separators and one digit, so a run is found without backtracking. Patterns are
# searched in UTF-8 bytes (a no-break space is C2 A0), candidates first found by C-level scans
# of translated copies: digits and separator bytes -> "0"; letters -> "A", digits -> "0".
_CARD_RUN = re.compile(r"(?<![0-9])[0-9](?:(?:[ \t\u00a0.+\-]|%20){0,3}[0-9]){12,}")
_CARD_RUN_B = re.compile(rb"(?<![0-9])[0-9](?:(?:[ \t.+\-]|\xc2\xa0|%20){0,3}[0-9]){12,}")
_CARD_CLASSES = bytes(48 if c in b"0123456789 \t.+-%\xc2\xa0" else c for c in range(256))  # "0" or itself
_THIRTEEN = b"0" * 13
_ZEROS = re.compile(rb"0+")
_CARD_LIKE = re.compile(r"[0-9](?:[0-9 \t\u00a0.+\-]|%20)*[0-9]")
_NOT_DIGITS = re.compile(r"%20|[^0-9]")
_DIGIT_GROUP = re.compile(r"[0-9]+")
_LUHN_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
# IBANs in either case, compact or in groups of four (one or two spaces or no-break spaces).
# A match that fails mod-97 is tried again without its trailing groups (`... 7034 from`).
_IBAN_B = re.compile(
    rb"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:(?: |\xc2\xa0){0,2}[A-Za-z0-9]{4}){2,7}"
    rb"(?:(?: |\xc2\xa0){0,2}[A-Za-z0-9]{1,4})?(?![A-Za-z0-9])"
)
_IBAN_CLASSES = bytes(65 if chr(c).isascii() and chr(c).isalpha() else 48 if 48 <= c <= 57 else c for c in range(256))
_IBAN_GAP = re.compile(r"[ \u00a0]+")
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


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = _IBAN_GAP.sub("", text)
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


_IBAN_DIGITS = str.maketrans({c: str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"})


_IBAN_GROUPS: dict[str, tuple[int, int]] = {}  # a group -> (value, 10**digits), mod 97


def _iban_length(candidate: str) -> int:
    """Length of the longest prefix of an IBAN-shaped match, ending with one of its groups, that
    passes mod-97; 0 if none. One pass: the check value of each prefix follows from the one
    before it (the country code and check digits, moved to the end, add a fixed 6 digits)."""
    groups = candidate[4:].split()
    head = int(candidate[:4].translate(_IBAN_DIGITS))
    cache = _IBAN_GROUPS
    rest = 0
    compact = 4
    best = -1
    for i, group in enumerate(groups):
        vs = cache.get(group)
        if vs is None:
            digits = group.translate(_IBAN_DIGITS)
            vs = (int(digits) % 97, pow(10, len(digits), 97))
            if len(cache) < 65536:
                cache[group] = vs
        rest = (rest * vs[1] + vs[0]) % 97
        compact += len(group)
        if 15 <= compact <= 34 and (rest * 1_000_000 + head) % 97 == 1:
            best = i
    if best < 0:
        return 0
    pos = 4
    for group in groups[: best + 1]:
        pos = candidate.find(group, pos) + len(group)
    return pos


def _card_windows(run: str) -> list[tuple[int, int, str]]:
    """Card numbers inside one run of digit groups, as (start, end, digits): from the leftmost
    group on, the longest span of whole groups with 13-19 digits that passes the Luhn check.
    Linear: Luhn sums of every span come from two prefix sums, and a span has at most 19 groups."""
    if run.isdigit():  # the usual case: one group, the whole run
        return [(0, len(run), run)] if len(run) <= 19 and luhn_ok(run) else []
    spans = [m.span() for m in _DIGIT_GROUP.finditer(run)]
    groups = [run[s:e] for s, e in spans]
    digits = "".join(groups)
    n_digits = len(digits)
    if n_digits < 13:
        return []
    raw = digits.encode("ascii")
    plain, doubled = raw.translate(_LUHN_PLAIN), raw.translate(_LUHN_DOUBLED)
    # Luhn doubles every second digit counted from the right end of the span: at odd indexes
    # when the span ends at an even index (sums0), at even ones otherwise (sums1).
    v0 = bytearray(plain)
    v0[1::2] = doubled[1::2]
    v1 = bytearray(plain)
    v1[0::2] = doubled[0::2]
    sums0 = list(accumulate(v0, initial=0))
    sums1 = list(accumulate(v1, initial=0))
    bounds = list(accumulate(map(len, groups), initial=0))  # digit offset where each group starts
    n = len(groups)
    out: list[tuple[int, int, str]] = []
    i = 0
    hi = 1  # largest group end with at most 19 digits from group i on
    while i < n:
        base = bounds[i]
        if n_digits - base < 13:
            break
        if hi <= i:
            hi = i + 1
        while hi < n and bounds[hi + 1] - base <= 19:
            hi += 1
        found = 0
        j = hi
        while j > i:
            end = bounds[j]
            width = end - base
            if width < 13:
                break
            if width <= 19:
                sums = sums1 if (end - 1) & 1 else sums0
                if (sums[end] - sums[base]) % 10 == 0:
                    out.append((spans[i][0], spans[j - 1][1], digits[base:end]))
                    found = j
                    break
            j -= 1
        i = found or i + 1
    return out


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


def _decode_value(data: bytes, pos: int) -> tuple[Any, int]:
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
    m = _SCALAR.match(data, pos)
    if m is None:
        raise ValueError("no JSON value")
    return json.loads(m.group()), m.end()


class PathRule:
    """A JSON path rule of `snapshots.redact.paths` (syntax: syncwatch.config.jsonpath)."""

    def __init__(self, text: str):
        self.text = text
        self.steps = parse_json_path(text)


@dataclass
class RedactionResult:
    data: bytes
    content_type: str  # json | text | binary
    counts: Counter = field(default_factory=Counter)


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
        if len(hash_key) < 16:
            raise ValueError("redaction hash key must be at least 16 bytes")
        # BLAKE2b takes a key of up to 64 bytes; derive a fixed-size one from whatever we got.
        self._key = hashlib.sha256(hash_key).digest()
        self._blake = hashlib.blake2b(digest_size=4, key=self._key)
        self._defaults = defaults
        self._extra_keys_raw = list(extra_keys)
        self._extra_keys = {_normalise(k): _kind_name(k) for k in self._extra_keys_raw}
        # Key rules in text (pairs, XML elements, header lines) apply whenever any key is sensitive.
        self._text_keys = defaults or bool(self._extra_keys)
        self._paths = [PathRule(p) for p in paths]
        self._patterns = [(kind, re.compile(rx)) for kind, rx in (patterns or {}).items()]
        self._key_cache: dict[str, str | None] = {}
        self._safe_keys: set[str] = set()
        # Lower-case stems every sensitive key contains, for the fast path's text search.
        stems = {
            "pass",
            "secret",
            "private",
            "token",
            "authoriz",
            "api",
            "card",
            "iban",
            "social",
            "cookie",
            *(w for w in _KEY_WORDS if w != "cvv2"),
        }  # cvv2 contains cvv
        for k in self._extra_keys_raw:
            parts = [x for x in re.split(r"[^a-z0-9]+", k.lower()) if x]
            if parts:
                stems.add(max(parts, key=len))
        self._key_stems_b = [x.encode() for x in sorted(stems)]
        self._stems = _MultiFind(self._key_stems_b)
        # The textual fast path: default rules, no JSON paths (they need the parsed structure),
        # custom patterns that match the same inside one string as in the whole text, and
        # extra keys that all contain a letter or digit (the stem the fast path looks for).
        self._fast = (
            defaults
            and not self._paths
            and all(_context_free(rx) for _, rx in self._patterns)
            and all(self._extra_keys)
        )

    def marker(self, kind: str, value: str) -> str:
        if kind in ("card", "card_number") and _CARD_LIKE.fullmatch(value):
            value = _NOT_DIGITS.sub("", value)  # same card, same marker, however written
        h = self._blake.copy()  # keyed once: a copy skips hashing the key block again
        h.update(value.encode("utf-8", "surrogatepass"))
        digest = h.hexdigest()
        return f"[REDACTED:{kind}:{digest}]"

    # -- entry point ---------------------------------------------------------------------------
    def redact_body(self, body: Any, encoded: bytes | None = None) -> RedactionResult:
        """Redact an OTLP log body already converted to Python: str, bytes, dict/list (kvlist or
        array), or a scalar. Returns the bytes to store. `encoded`: a str body as UTF-8
        (surrogatepass), if the caller has it already."""
        counts: Counter = Counter()
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
        counts: Counter = Counter()
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
    def _redact_json_text(self, text: str, counts: Counter, data: bytes | None = None) -> bytes | None:
        """JSON text (`data`: the same, UTF-8 encoded, if at hand): the fast textual path when it
        applies, else the structural one. None if `text` is not JSON."""
        if self._fast and text.rstrip()[-1:] in ("}", "]"):
            # Not parsed as a whole (that alone would cost a third of the budget per payload):
            # JSON-shaped text goes the fast way; whatever it cannot decide with certainty goes
            # to the structural path, which parses and falls back to plain text if it is no JSON.
            out = self._redact_json_fast(text, counts, data)
            if out is not None:
                return out
        out_text = self._structural(text, counts, 0)
        if out_text is None:
            return None
        if out_text is text and data is not None:
            return data
        return out_text.encode("utf-8", "surrogatepass")

    # The fast path works on the UTF-8 text itself, so a 4 KiB order costs a few C-level scans
    # instead of a Python call per object and per value. It only runs on text without a
    # backslash: there every JSON string is the plain bytes between two quotes (no escape can
    # hide a digit, an @ or a key's letters, and a quote's parity tells inside from outside).
    # Whatever it cannot decide with certainty returns None: the structural path then decides.
    def _redact_json_fast(self, text: str, counts: Counter, data: bytes | None = None) -> bytes | None:
        if data is None:
            data = text.encode("utf-8", "surrogatepass")
        keyed = self._redact_keys_in_bytes(data, counts)
        if keyed is None:
            return None
        out = self._scan_patterns(keyed, counts, json_text=True)
        if self._patterns:
            text = out.decode("utf-8", "surrogatepass")
            for kind, rx in self._patterns:
                text = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), text)
            out = text.encode("utf-8", "surrogatepass")
        return out

    def _redact_keys_in_bytes(self, data: bytes, counts: Counter) -> bytes | None:
        """Values under sensitive keys, and the text rules inside string values. Both need a
        sensitive key, and every sensitive key contains one of the stems once lower-cased and
        stripped of all but letters and digits (as `_normalise` does). So the stems are searched
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
        find = self._stems.find
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
        rule_counts: Counter | None = None
        key_cache = self._key_cache
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
                found: Counter = Counter()
                new = self._text_rules(s, found)
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
                kind = self._key_kind(s)
            if kind is None:
                tail = _TAIL_KEY.search(s, max(0, len(s) - 64))
                if tail is not None and tail.start() > 0 and self._key_kind(tail.group()) is not None:
                    return None  # `"x pwd": 1`: plain-text scanning would take `pwd` as a key
                continue
            v = k + 1
            while v < n and data[v] in _JSON_WS:
                v += 1
            try:
                value, end = _decode_value(data, v)
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

    def _structural(self, text: str, counts: Counter, depth: int) -> str | None:
        """Key rules run in the decoder's object hook (one Python call per object, no second
        walk); string values are scanned there too, numbers in the number hooks. `text` itself
        if nothing changed; None if it is no JSON (or nested too deep to walk)."""
        changed = [False]
        found: Counter = Counter()
        hooks: dict[str, Any] = {"object_hook": self._object_hook(found, changed, depth)}
        if self._defaults:
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
            if self._paths and depth == 0:
                before = sum(found.values())
                parsed = self._apply_paths(parsed, found)
                changed[0] = changed[0] or sum(found.values()) != before
            out = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")) if changed[0] else text
        except (ValueError, RecursionError):
            return None
        counts.update(found)
        return out

    def _number_hook(self, counts: Counter, changed: list[bool], convert):
        cards_in = self._cards_in

        def hook(token: str):
            # A card number sent as a JSON number (sign, fraction and exponent kept around the
            # marker) becomes a string, as the fast path makes it.
            if len(token) >= 13:
                new = cards_in(token, counts)
                if new is not token:
                    changed[0] = True
                    return new
            return convert(token)

        return hook

    def _object_hook(self, counts: Counter, changed: list[bool], depth: int):
        safe_keys = self._safe_keys
        key_kind = self._key_kind
        scan_str = self._scan_str
        marker = self.marker
        always_scan = bool(self._patterns)

        def hook(obj: dict) -> dict:
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
                        elif len(safe_keys) < 100_000:
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

    def _scan_list(self, items: list, counts: Counter, changed: list[bool], depth: int) -> list:
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

    def _scan_key(self, key: str, counts: Counter) -> str:
        """Patterns in an object key (`{"jane@example.com": …}`), as the fast path finds them."""
        new = key
        if self._defaults and (len(key) >= 13 or "@" in key or "%40" in key):
            new = self._patterns_in_str(key, counts)
        for kind, rx in self._patterns:
            new = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), new)
        return key if new == key else new

    def _scan_str(self, value: str, counts: Counter, depth: int = 0) -> str:
        """Rules on one JSON string value: a JSON document in it is redacted as JSON (nested up
        to MAX_NESTED_JSON levels); otherwise the text rules and patterns apply."""
        if depth < MAX_NESTED_JSON:
            head = value[:1]
            looks_like_json = head in ("{", "[") or (head.isspace() and value.lstrip()[:1] in ("{", "["))
            if looks_like_json and value.rstrip()[-1:] in ("}", "]"):
                nested = self._structural(value, counts, depth + 1)
                if nested is not None:
                    return nested
        new = value
        if self._text_keys:
            new = self._text_rules(new, counts)
        if self._defaults and (len(new) >= 13 or "@" in new or "%40" in new):
            new = self._patterns_in_str(new, counts)
        for kind, rx in self._patterns:
            new = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), new)
        return value if new == value else new

    def _key_kind(self, key: str) -> str | None:
        try:
            return self._key_cache[key]
        except KeyError:
            pass
        kind = None
        norm = _normalise(key)
        if norm in self._extra_keys:
            kind = self._extra_keys[norm]
        elif self._defaults:
            for word, k in _KEY_SUBSTRINGS.items():
                if word in norm:
                    kind = k
                    break
            else:
                for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()):
                    if w in _KEY_WORDS:
                        kind = _KEY_WORDS[w]
                        break
        if len(self._key_cache) < 100_000:  # keys repeat across payloads; bound the cache anyway
            self._key_cache[key] = kind
        return kind

    def _apply_paths(self, value: Any, counts: Counter) -> Any:
        for rule in self._paths:
            value = self._apply_path(value, rule.steps, counts)
        return value

    def _apply_path(self, node: Any, steps: list[Any], counts: Counter) -> Any:
        step, rest = steps[0], steps[1:]
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
                node[k] = self._apply_path(node[k], rest, counts)
            elif node[k] is not None and not (isinstance(node[k], str) and REDACTED_RE.fullmatch(node[k])):
                v = node[k]
                node[k] = self.marker("path", v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                counts["path"] += 1
        return node

    # -- plain text ----------------------------------------------------------------------------
    def _redact_text(self, text: str, counts: Counter) -> str:
        if self._text_keys:
            text = self._text_rules(text, counts)
        if self._defaults:
            text = self._patterns_in_str(text, counts)
        for kind, rx in self._patterns:
            text = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), text)
        return text

    def _text_rules(self, text: str, counts: Counter) -> str:
        """XML elements, then `key=value` / `key: value` pairs, with sensitive keys. `text`
        itself when nothing matched."""
        if not self._text_keys:
            return text
        if "<" in text:
            text = self._xml(text, counts)
        if "=" in text or ":" in text or "%3" in text:
            text = self._pairs(text, counts)
        return text

    def _pairs(self, text: str, counts: Counter) -> str:
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
            span = _pair_value(text, m.end(), kind in _LINE_KINDS and (":" in sep or "%3a" in sep.lower()))
            if span is None:
                pos = m.end()
                continue
            a, b, end = span
            value = text[a:b]
            if REDACTED_RE.fullmatch(value):
                pos = end
                continue
            out.append(text[last:a])
            out.append(self.marker(kind, value))
            counts[kind] += 1
            last = b
            pos = end
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _xml(self, text: str, counts: Counter) -> str:
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
            out.append(self.marker(kind, value))
            counts[kind] += 1
            last = b
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    # -- patterns --------------------------------------------------------------------------------
    def _patterns_in_str(self, text: str, counts: Counter) -> str:
        data = text.encode("utf-8", "surrogatepass")
        out = self._scan_patterns(data, counts)
        return text if out is data else out.decode("utf-8", "surrogatepass")

    def _scan_patterns(self, data: bytes, counts: Counter, json_text: bool = False) -> bytes:
        """Cards, IBANs and e-mail addresses in UTF-8 text (`data` itself if none). In JSON text
        without backslashes (`json_text`) no match can span two JSON tokens, so each is what
        the structural path finds in one string value; a card in a bare number turns the whole
        number token into a string, as the structural path's number hooks do."""
        spans: list[tuple[int, int, bytes, str, int]] = []
        n = len(data)
        t = data.translate(_CARD_CLASSES)
        i = t.find(_THIRTEEN)
        while i != -1:
            run_end = _ZEROS.match(t, i).end()
            for m in _CARD_RUN_B.finditer(data, i, run_end):
                run = m.group().decode("utf-8")  # digits, ASCII separators, no-break spaces
                base = m.start()
                for s, e, digits in _card_windows(run):
                    if not run.isascii():
                        s, e = len(run[:s].encode()), len(run[:e].encode())
                    spans.append((base + s, base + e, self.marker("card", digits).encode(), "card", 1))
            i = t.find(_THIRTEEN, run_end)
        t = data.translate(_IBAN_CLASSES)  # letters -> "A", digits -> "0"
        i = t.find(b"AA00")
        while i != -1:
            m = _IBAN_B.match(data, i)
            k = _iban_length(m.group().decode("utf-8")) if m is not None else 0
            if k:
                found = m.group().decode("utf-8")[:k]
                k = len(found.encode())
                value = _IBAN_GAP.sub("", found).upper()
                spans.append((i, i + k, self.marker("iban", value).encode(), "iban", 1))
            i = t.find(b"AA00", i + max(k, 1))
        needles = [x for x in (b"@", b"%40") if x[0] in data and x in data]  # memchr first
        if needles:
            local = None
            for needle in needles:
                at = data.find(needle)
                while at != -1:
                    if local is None:
                        local = data.translate(_LOCAL_CLASSES)
                    start = local.rfind(b" ", max(0, at - 64), at) + 1 or max(0, at - 64)
                    m = _EMAIL_AT.match(data, start) if start < at else None
                    if m is not None and m.end() > at:
                        value = m.group().decode("utf-8", "replace").lower().replace("%40", "@")
                        spans.append((m.start(), m.end(), self.marker("email", value).encode(), "email", 1))
                        at = m.end() - 1
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
                found_cards: Counter = Counter()
                token = self._cards_in(data[s:e].decode("utf-8", "surrogatepass"), found_cards)
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

    def _cards_in(self, text: str, counts: Counter) -> str:
        spans = []
        for m in _CARD_RUN.finditer(text):
            base = m.start()
            for s, e, digits in _card_windows(m.group()):
                spans.append((base + s, base + e, self.marker("card", digits), "card", 1))
        return self._apply_spans(text, spans, counts)

    @staticmethod
    def _apply_spans(text: str, spans: list[tuple[int, int, str, str, int]], counts: Counter) -> str:
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

    def _custom_sub(self, kind: str, m: re.Match, counts: Counter) -> str:
        found = m.group(0)
        if not found or REDACTED_RE.fullmatch(found):
            return found
        counts[kind] += 1
        return self.marker(kind, found)


class _MultiFind:
    """Where a few byte strings occur, as (needle index, start, end) in order of start: at least
    every occurrence that does not overlap an earlier one reported (leftmost-first, as
    ahocorasick-rs finds them in one pass of native code with a SIMD prefilter, instead of one
    scan of the text per needle). Without the wheel, a loop of `bytes.find` reports them all."""

    def __init__(self, needles: list[bytes]):
        self._needles = needles
        self._ac = (
            _AhoCorasick(needles, matchkind=_ACMatchKind.LeftmostFirst, implementation=_ACImplementation.DFA)
            if _AhoCorasick is not None and needles
            else None
        )

    def find(self, haystack: bytes) -> list[tuple[int, int, int]]:
        if self._ac is not None:
            return self._ac.find_matches_as_indexes(haystack)
        out = []
        for i, needle in enumerate(self._needles):
            p = haystack.find(needle)
            while p != -1:
                out.append((i, p, p + len(needle)))
                p = haystack.find(needle, p + 1)
        out.sort(key=lambda m: m[1])
        return out


def _context_free(rx: re.Pattern) -> bool:
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

    def items_ok(items) -> bool:
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


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _kind_name(key: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "key"
