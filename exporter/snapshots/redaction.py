"""Redaction of payload snapshots before anything is stored.

A redacted value becomes `[REDACTED:<kind>:<8 hex>]`, the hex being a keyed hash (BLAKE2b with a
secret key) of the value: two snapshots carrying the same card number show the same marker, so
they stay comparable, but without the key nobody can test guesses against the marker.

Rules:
- keys: a value under a sensitive key (case-insensitive, any depth of a JSON body, whole value
  even if it is an object);
- paths: JSON paths from config (`$.customer.address.street`, `$.items[*].name`, `$.lines[0]`);
- patterns anywhere in text: payment card numbers that pass the Luhn check, e-mail addresses,
  IBANs that pass the mod-97 check, plus patterns from config; in non-JSON text also
  `key=value` / `key: value` pairs whose key is sensitive (form bodies, header dumps).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

try:  # the parsed form of a regex, to tell which custom patterns the fast path may apply
    import re._constants as _re_constants
    import re._parser as _re_parser
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _re_constants  # type: ignore[no-redef]
    import sre_parse as _re_parser  # type: ignore[no-redef]

try:
    from ahocorasick_rs import BytesAhoCorasick as _AhoCorasick, Implementation as _ACImplementation, MatchKind as _ACMatchKind
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
_KEY_WORDS = {"pwd": "password", "cvv": "cvv", "cvv2": "cvv", "cvc": "cvv", "csc": "cvv", "pan": "card_number", "ssn": "ssn"}

_DECODER = json.JSONDecoder()
# Fast path: digits, space and dash -> "0", a card number is a run of 13+ of them; digits -> "0"
# and capitals -> "A", an IBAN starts at "AA00". Other bytes unchanged.
_CARD_CLASSES = bytes(range(256)).translate(bytes.maketrans(b"0123456789 -", b"0" * 12))
_IBAN_CLASSES = bytes(range(256)).translate(bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26))
_THIRTEEN = b"0" * 13
_ZEROS = re.compile(rb"0+")
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
# The key plain-text scanning would see right before `":` (what `_PAIR_TEXT` takes as key).
_TAIL_KEY = re.compile(r"(?<![\w.-])[\w.-]{1,64}\Z")
# An e-mail address matched from the start of its local part (found by walking back from the @).
# Limits in bytes, wide enough for the character limits of `_EMAIL` in any UTF-8 (4 bytes each).
_EMAIL_AT = re.compile(rb"[\w.%+\-\x80-\xff]+@[\w\-\x80-\xff]{1,252}(?:\.[\w\-\x80-\xff]{1,252})*\.(?:[A-Za-z]|[\x80-\xff]){2,96}(?![\w\x80-\xff])")
_LOCAL_PART = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-" + bytes(range(0x80, 0x100)))
_IBAN_B = re.compile(rb"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_DROP_DIGITS = str.maketrans("", "", "0123456789")
_CARD_LIKE = re.compile(r"[0-9][0-9 -]*[0-9]")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Each alternative only starts at the beginning of a run of its characters (look-behind), which
# keeps the scan linear on long inputs such as base64 blobs.
_CARD = r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])"
_EMAIL = r"(?<![\w.%+-])[\w.%+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[^\W\d_]{2,24}(?![\w])"
_IBAN = r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
_DEFAULT_PATTERN = re.compile(f"(?P<card>{_CARD})|(?P<email>{_EMAIL})|(?P<iban>{_IBAN})")
# `password=hunter2`, `Authorization: Bearer abc`, `?api_key=x` in text: any `key=value` or
# `key: value`; the callback decides by the key. Existing markers are matched first and kept.
# In JSON text the separator may not carry quotes, so JSON's own `"key":"value"` pairs (already
# handled structurally) are not matched, only pairs embedded inside string values.
_MARKER = r"(?P<marker>\[REDACTED:[A-Za-z0-9_.-]+:[0-9a-f]{8}\])"
_PAIR_VALUE = r"(?P<value>(?i:bearer |basic |digest )?[^\s&\";,<>]+)"
_PAIR_TEXT = re.compile(_MARKER + r"|(?<![\w.-])(?P<key>[\w.-]{1,64})(?P<sep>\"?[ \t]*[=:][ \t]*\"?)" + _PAIR_VALUE)
_PAIR_JSON = re.compile(_MARKER + r"|(?<![\w.-])(?P<key>[\w.-]{1,64})(?P<sep>[ \t]*[=:][ \t]*)" + _PAIR_VALUE)



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
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


class PathRule:
    """A JSON path: `$`, then `.name`, `['name']`, `[n]`, `[*]` or `.*` steps."""

    _STEP = re.compile(r"\.([A-Za-z0-9_$@-]+)|\.\*|\[\*\]|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")

    def __init__(self, text: str):
        self.text = text
        if not text.startswith("$"):
            raise ValueError(f"JSON path must start with $: {text!r}")
        steps: list[Any] = []
        pos = 1
        while pos < len(text):
            m = self._STEP.match(text, pos)
            if not m:
                raise ValueError(f"cannot parse JSON path {text!r} at position {pos}")
            name, index, q1, q2 = m.groups()
            if name is not None:
                steps.append(name)
            elif index is not None:
                steps.append(int(index))
            elif q1 is not None or q2 is not None:
                steps.append(q1 if q1 is not None else q2)
            else:
                steps.append(None)  # wildcard
            pos = m.end()
        if not steps:
            raise ValueError("JSON path $ alone would redact the whole body; name a field")
        self.steps = steps


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
        self._paths = [PathRule(p) for p in paths]
        self._patterns = [(kind, re.compile(rx)) for kind, rx in (patterns or {}).items()]
        self._key_cache: dict[str, str | None] = {}
        self._safe_keys: set[str] = set()
        # Lower-case stems every sensitive key contains, for the fast path's text search.
        stems = {"pass", "secret", "private", "token", "authoriz", "api", "card", "iban", "social", "cookie",
                 *(w for w in _KEY_WORDS if w != "cvv2")}  # cvv2 contains cvv
        for k in self._extra_keys_raw:
            parts = [x for x in re.split(r"[^a-z0-9]+", k.lower()) if x]
            if parts:
                stems.add(max(parts, key=len))
        self._key_stems_b = [x.encode() for x in sorted(stems)]
        self._stems = _MultiFind(self._key_stems_b)
        # The textual fast path: default rules, no JSON paths (they need the parsed structure),
        # custom patterns that match the same inside one string as in the whole text, and
        # extra keys that all contain a letter or digit (the stem the fast path looks for).
        self._fast = (defaults and not self._paths and all(_context_free(rx) for _, rx in self._patterns)
                      and all(self._extra_keys))

    def marker(self, kind: str, value: str) -> str:
        if kind in ("card", "card_number") and _CARD_LIKE.fullmatch(value):
            value = value.replace(" ", "").replace("-", "")  # same card, same marker, however written
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
                text = self._redact_text(body.decode("latin-1"), counts, _PAIR_TEXT)
                return RedactionResult(text.encode("latin-1", "replace"), "binary", counts)
        if isinstance(body, str):
            if body.lstrip()[:1] in ("{", "["):
                redacted = self._redact_json_text(body, counts, encoded)
                if redacted is not None:
                    return RedactionResult(redacted, "json", counts)
            return RedactionResult(self._redact_text(body, counts, _PAIR_TEXT).encode("utf-8", "surrogatepass"), "text", counts)
        if body is None:
            return RedactionResult(b"", "text", counts)
        # A key-value map, an array or a bare scalar: JSON, through the same path as JSON text.
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return RedactionResult(self._redact_json_text(text, counts) or b"", "json", counts)

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
        return self._redact_json_structural(text, counts)

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
        data = self._scan_json_bytes(keyed, counts)
        if self._patterns:
            out = data.decode("utf-8", "surrogatepass")
            for kind, rx in self._patterns:
                out = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), out)
            data = out.encode("utf-8", "surrogatepass")
        return data

    def _redact_keys_in_bytes(self, data: bytes, counts: Counter) -> bytes | None:
        """Values under sensitive keys, and `key=value` pairs inside string values. Both need a
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
        pair_counts: Counter | None = None
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
            s = data[q1 + 1:q2].decode("utf-8", "surrogatepass")
            k = q2 + 1
            while k < n and data[k] in _JSON_WS:
                k += 1
            is_key = k < n and data[k] == 58  # ":"
            # `key=value` / `key: value` inside this string. JSON string values are scanned for
            # them when they hold `=` or `: ` (as the structural path does); anything else
            # that plain-text scanning would redact (a key's text, `pwd:x`) is only left as
            # it is if the body is valid JSON, which the structural path checks.
            if "=" in s or ":" in s:
                found: Counter = Counter()
                new = self._pairs(_PAIR_JSON, s, found)
                if new is not s:
                    if is_key or ("=" not in s and ": " not in s):
                        return None
                    reps.append((q1 + 1, q2, new.encode("utf-8", "surrogatepass")))
                    pair_counts = found if pair_counts is None else pair_counts + found
            if not is_key:
                if k < n and data[k] not in b",}]":
                    return None  # `"pwd"="x"`: not what follows a JSON string, no JSON
                continue
            kind = key_cache.get(s, _UNKNOWN)
            if kind is _UNKNOWN:
                kind = self._key_kind(s)
            if kind is None:
                tail = _TAIL_KEY.search(s)
                if tail is not None and tail.start() > 0 and self._key_kind(tail.group()) is not None:
                    return None  # `"x pwd": 1`: plain-text scanning would take `pwd` as a key
                continue
            v = k + 1
            while v < n and data[v] in _JSON_WS:
                v += 1
            if v < n and data[v] == 34:  # a string (the usual case): the bytes up to the next quote
                end = data.find(b'"', v + 1) + 1
                if not end:
                    return None
                value = data[v + 1:end - 1].decode("utf-8", "surrogatepass")
            else:
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
        if pair_counts:
            counts.update(pair_counts)
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

    def _scan_json_bytes(self, data: bytes, counts: Counter) -> bytes:
        """Cards, IBANs and e-mails in UTF-8 JSON text without backslashes. Candidates are found
        on translated copies (digits, space and dash -> 0; capitals -> A) and by the @ with
        C-level searches; only candidates meet a regex or a checksum."""
        reps: list[tuple[int, int, bytes, str, int]] = []
        t = data.translate(_CARD_CLASSES)
        i = t.find(_THIRTEEN)
        while i != -1:
            run_end = _ZEROS.match(t, i).end()
            s, e = i, run_end
            while s < e and data[s] in b" -":
                s += 1
            while e > s and data[e - 1] in b" -":
                e -= 1
            chunk = data[s:e]
            if len(chunk.translate(None, b" -")) >= 13:
                found: Counter = Counter()
                new = self._card_inside(chunk.decode("ascii"), found)
                if found:
                    if data.count(b'"', 0, s) & 1 == 0:
                        # A card sent as a bare JSON number becomes a string: the whole number
                        # token (sign, fraction, exponent) gives way to it, so the JSON stays valid.
                        while s > 0 and data[s - 1] in _NUMBER_CHARS:
                            s -= 1
                        while e < len(data) and data[e] in _NUMBER_CHARS:
                            e += 1
                        new = f'"{new}"'
                    reps.append((s, e, new.encode(), "card", found["card"]))
            i = t.find(_THIRTEEN, run_end)
        t = data.translate(_IBAN_CLASSES)
        i = t.find(b"AA00")
        while i != -1:
            mm = _IBAN_B.match(data, i)
            if mm and iban_ok(mm.group().decode()):
                reps.append((mm.start(), mm.end(), self.marker("iban", mm.group().decode().replace(" ", "")).encode(), "iban", 1))
            i = t.find(b"AA00", i + 1)
        at = data.find(b"@")
        while at != -1:
            # Walk back to where the local part starts, then match there once.
            start = at
            while start > 0 and data[start - 1] in _LOCAL_PART:
                start -= 1
            mm = _EMAIL_AT.match(data, start) if start < at else None
            if mm is not None and mm.end() > at:
                value = mm.group().decode("utf-8", "replace").lower()
                reps.append((mm.start(), mm.end(), self.marker("email", value).encode(), "email", 1))
                at = mm.end() - 1
            at = data.find(b"@", at + 1)
        if not reps:
            return data
        reps.sort()
        out: list[bytes] = []
        last = 0
        for s, e, new, kind, found_n in reps:
            if s < last:
                continue  # overlaps one already applied (an IBAN's digits, say)
            out.append(data[last:s])
            out.append(new)
            counts[kind] += found_n
            last = e
        out.append(data[last:])
        return b"".join(out)

    def _redact_json_structural(self, text: str, counts: Counter) -> bytes | None:
        """Key rules run in the decoder's object hook (one Python call per object, no second
        walk); string values are scanned for patterns there too. None if `text` is not JSON."""
        changed = [False]
        try:
            parsed = json.loads(text, object_hook=self._object_hook(counts, changed))
        except (ValueError, RecursionError):
            return None
        if type(parsed) is list:
            parsed = self._scan_list(parsed, counts, changed)
        elif type(parsed) is str:
            new = self._scan_str(parsed, counts)
            if new is not parsed:
                parsed, changed[0] = new, True
        elif type(parsed) is int:
            new = self._scan_int(parsed, counts)
            if new is not parsed:
                parsed, changed[0] = new, True
        if self._paths:
            before = sum(counts.values())
            parsed = self._apply_paths(parsed, counts)
            changed[0] = changed[0] or sum(counts.values()) != before
        if not changed[0]:
            return text.encode("utf-8", "surrogatepass")  # untouched: keep the exact original text
        return json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")

    def _object_hook(self, counts: Counter, changed: list[bool]):
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
                for k in list(keys - safe_keys):
                    kind = key_kind(k)
                    if kind is None:
                        if len(safe_keys) < 100_000:
                            safe_keys.add(k)
                        continue
                    v = obj[k]
                    t = type(v)
                    if v is not None and not (t is str and REDACTED_RE.fullmatch(v)):
                        obj[k] = marker(kind, v if t is str else json.dumps(v, sort_keys=True))
                        counts[kind] += 1
                        changed[0] = True
            for k, v in obj.items():
                t = type(v)
                if t is str:
                    # Inline cheap test (this loop runs for every value): a card number or IBAN
                    # needs 13+ characters, an e-mail an @, a `key=value` pair a separator.
                    if always_scan or len(v) >= 13 or "@" in v or "=" in v or ": " in v:
                        if REDACTED_RE.fullmatch(v):
                            continue
                        new = scan_str(v, counts)
                        if new is not v:
                            obj[k] = new
                            changed[0] = True
                elif t is list:
                    self._scan_list(v, counts, changed)
                elif t is int and v >= 10**12:
                    new = self._scan_int(v, counts)
                    if new is not v:
                        obj[k] = new
                        changed[0] = True
            return obj

        return hook

    def _scan_list(self, items: list, counts: Counter, changed: list[bool]) -> list:
        # Objects inside were handled by the hook already; strings, numbers and nested lists not.
        for i, v in enumerate(items):
            t = type(v)
            if t is str:
                new = self._scan_str(v, counts)
            elif t is list:
                new = self._scan_list(v, counts, changed)
            elif t is int:
                new = self._scan_int(v, counts)
            else:
                continue
            if new is not v:
                items[i] = new
                changed[0] = True
        return items

    def _scan_int(self, value: int, counts: Counter) -> Any:
        if self._defaults and 10**12 <= value < 10**19:
            digits = str(value)
            if luhn_ok(digits):
                counts["card"] += 1
                return self.marker("card", digits)
        return value

    def _scan_str(self, value: str, counts: Counter) -> str:
        """Patterns on one JSON string value. Cheap checks first: the regexes only run when the
        value could hold a card number or IBAN (8+ digits) or an e-mail address (an @)."""
        new = value
        if self._defaults:
            if len(value) >= 6 and ("@" in value or (len(value) >= 13 and len(value) - len(value.translate(_DROP_DIGITS)) >= 8)):
                new = _DEFAULT_PATTERN.sub(lambda m: self._default_sub(m, counts), new)
            if "=" in new or ": " in new:  # `pwd=1` is short, still a pair
                new = self._pairs(_PAIR_JSON, new, counts)
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
    def _redact_text(self, text: str, counts: Counter, pairs: re.Pattern | None = None) -> str:
        if self._defaults:
            if pairs is not None:
                text = self._pairs(pairs, text, counts)
            text = _DEFAULT_PATTERN.sub(lambda m: self._default_sub(m, counts), text)
        for kind, rx in self._patterns:
            text = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), text)
        return text

    def _pairs(self, rx: re.Pattern, text: str, counts: Counter) -> str:
        """Redact the value of every `key=value` / `key: value` whose key is sensitive. A pair
        with a harmless key consumes only its key, so `url=https://x/?api_key=abc` still
        reaches `api_key`."""
        out: list[str] = []
        last = pos = 0
        while (m := rx.search(text, pos)) is not None:
            if m.group("marker") is not None:
                pos = m.end()
                continue
            value = m.group("value")
            kind = self._key_kind(m.group("key"))
            if kind is None or REDACTED_RE.fullmatch(value):
                pos = m.end("sep")
                continue
            out.append(text[last:m.start("value")])
            out.append(self.marker(kind, value))
            counts[kind] += 1
            last = pos = m.end()
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def _default_sub(self, m: re.Match, counts: Counter) -> str:
        kind = m.lastgroup
        found = m.group(0)
        if kind == "card":
            digits = found.replace(" ", "").replace("-", "")
            if not (13 <= len(digits) <= 19 and luhn_ok(digits)):
                return self._card_inside(found, counts)
            value = digits
        elif kind == "iban":
            if not iban_ok(found):
                return found
            value = found.replace(" ", "")
        else:
            value = found.lower()
        counts[kind] += 1
        return self.marker(kind, value)

    def _card_inside(self, found: str, counts: Counter) -> str:
        """The digit run as a whole is no card number; a card may still sit inside it, next to
        other digit groups (`4111 1111 1111 1111 2`): try runs of whole groups, longest first."""
        parts = re.split(r"([ -])", found)
        groups, seps = parts[0::2], parts[1::2]
        out: list[str] = []
        i = 0
        while i < len(groups):
            for j in range(len(groups), i, -1):
                digits = "".join(groups[i:j])
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    counts["card"] += 1
                    out.append(self.marker("card", digits))
                    i = j
                    break
            else:
                out.append(groups[i])
                i += 1
            if i < len(groups):
                out.append(seps[i - 1])
        return "".join(out)

    def _custom_sub(self, kind: str, m: re.Match, counts: Counter) -> str:
        found = m.group(0)
        if not found or REDACTED_RE.fullmatch(found):
            return found
        counts[kind] += 1
        return self.marker(kind, found)


def _decode_value(data: bytes, pos: int) -> tuple[Any, int]:
    """The JSON value starting at byte `pos` of text without backslashes, and the byte offset
    after it. A string (the usual case) is the bytes up to the next quote; anything else goes
    to the C decoder."""
    if data[pos:pos + 1] == b'"':
        q = data.find(b'"', pos + 1)
        if q == -1:
            raise ValueError("unterminated string")
        return data[pos + 1:q].decode("utf-8", "surrogatepass"), q + 1
    tail = data[pos:].decode("utf-8", "surrogatepass")
    value, end_chars = _DECODER.raw_decode(tail)
    return value, pos + len(tail[:end_chars].encode("utf-8", "surrogatepass"))


class _MultiFind:
    """Where a few byte strings occur, as (needle index, start, end) in order of start: at least
    every occurrence that does not overlap an earlier one reported (leftmost-first, as
    ahocorasick-rs finds them in one pass of native code with a SIMD prefilter, instead of one
    scan of the text per needle). Without the wheel, a loop of `bytes.find` reports them all."""

    def __init__(self, needles: list[bytes]):
        self._needles = needles
        self._ac = (_AhoCorasick(needles, matchkind=_ACMatchKind.LeftmostFirst, implementation=_ACImplementation.DFA)
                    if _AhoCorasick is not None and needles else None)

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
