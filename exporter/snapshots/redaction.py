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
# Fast path: digits, space and dash -> "0", capitals -> "A"; other bytes unchanged.
_CARD_CLASSES = bytes(range(256)).translate(bytes.maketrans(b"0123456789 -", b"0" * 12))
_IBAN_CLASSES = bytes(range(256)).translate(bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26))
_THIRTEEN = b"0" * 13
_ZEROS = re.compile(rb"0+")
# An e-mail address matched from the start of its local part (found by walking back from the @).
_EMAIL_AT = re.compile(rb"[\w.%+\-\x80-\xff]+@[\w\-\x80-\xff]{1,63}(?:\.[\w\-\x80-\xff]{1,63})*\.(?:[A-Za-z]|[\x80-\xff]){2,24}(?![\w\x80-\xff])")
_LOCAL_PART = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.%+-" + bytes(range(0x80, 0x100)))
_IBAN_B = re.compile(rb"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_KEY_BEFORE = re.compile(rb"(?<![\w.\-])([\w.\-]{1,64})[ \t]*$")
_VALUE_AFTER = re.compile(rb"[ \t]*((?i:bearer |basic |digest )?[^\s&\";,<>\\]+)")
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

    def marker(self, kind: str, value: str) -> str:
        if kind in ("card", "card_number") and _CARD_LIKE.fullmatch(value):
            value = value.replace(" ", "").replace("-", "")  # same card, same marker, however written
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=4, key=self._key).hexdigest()
        return f"[REDACTED:{kind}:{digest}]"

    # -- entry point ---------------------------------------------------------------------------
    def redact_body(self, body: Any) -> RedactionResult:
        """Redact an OTLP log body already converted to Python: str, bytes, dict/list (kvlist or
        array), or a scalar. Returns the bytes to store."""
        counts: Counter = Counter()
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                # Binary: scan it as latin-1 so card numbers or e-mails in ASCII parts are caught;
                # latin-1 maps bytes 1:1, so the result encodes back to the same layout.
                text = self._redact_text(body.decode("latin-1"), counts, _PAIR_TEXT)
                return RedactionResult(text.encode("latin-1", "replace"), "binary", counts)
        if isinstance(body, str):
            if body.lstrip()[:1] in ("{", "["):
                redacted = self._redact_json_text(body, counts)
                if redacted is not None:
                    return RedactionResult(redacted, "json", counts)
            return RedactionResult(self._redact_text(body, counts, _PAIR_TEXT).encode("utf-8", "surrogatepass"), "text", counts)
        if body is None:
            return RedactionResult(b"", "text", counts)
        # A key-value map, an array or a bare scalar: JSON, through the same path as JSON text.
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return RedactionResult(self._redact_json_text(text, counts) or b"", "json", counts)

    # -- JSON ----------------------------------------------------------------------------------
    def _redact_json_text(self, text: str, counts: Counter) -> bytes | None:
        """JSON text: the fast textual path when it applies, else the structural one. None if
        `text` is not JSON."""
        if self._defaults and not self._paths and text.rstrip()[-1:] in ("}", "]"):
            # Not parsed as a whole (that alone would cost a third of the budget per payload):
            # JSON-shaped text goes the fast way; a value that does not decode sends it to the
            # structural path, which parses and falls back to plain text if it is no JSON.
            local: Counter = Counter()
            data = self._redact_json_fast(text, local)
            if data is not None:
                counts.update(local)
                return data
        return self._redact_json_structural(text, counts)

    # The fast path works on the text itself, so a 4 KiB order costs a few C-level scans instead
    # of a Python call per object and per value. Anything it cannot decide with certainty
    # (escaped quotes around a key, odd nesting) sends the body down the structural path.
    def _redact_json_fast(self, text: str, counts: Counter) -> bytes | None:
        data = text.encode("utf-8", "surrogatepass")
        keyed = self._redact_keys_in_bytes(data, counts)
        if keyed is None:
            counts.clear()
            return None
        data = self._scan_json_bytes(keyed, counts)
        if self._patterns:
            out = data.decode("utf-8", "surrogatepass")
            for kind, rx in self._patterns:
                out = rx.sub(lambda m, kind=kind: self._custom_sub(kind, m, counts), out)
            data = out.encode("utf-8", "surrogatepass")
        return data

    def _redact_keys_in_bytes(self, data: bytes, counts: Counter) -> bytes | None:
        """Values under sensitive keys, found by searching the key stems in the lower-cased
        bytes; a hit counts only inside a string that is followed by `:` (a key)."""
        lower = data.lower()
        hits: list[int] = []
        for stem in self._key_stems_b:
            p = lower.find(stem)
            while p != -1:
                hits.append(p)
                p = lower.find(stem, p + 1)
        if not hits:
            return data
        hits.sort()
        out: list[bytes] = []
        last = 0
        n = len(data)
        for p in hits:
            if p < last:
                continue  # inside a value already replaced
            q1 = data.rfind(b'"', 0, p)
            q2 = data.find(b'"', p)
            if q1 < 0 or q2 < 0:
                continue
            key_b = data[q1 + 1:q2]
            if b"\\" in key_b or (q1 > 0 and data[q1 - 1] == 92):
                return None  # escapes around a key: leave it to the structural path
            k = q2 + 1
            while k < n and data[k] in b" \t\r\n":
                k += 1
            if k >= n or data[k] != 58:  # ":"
                continue  # a string value, not a key
            kind = self._key_kind(key_b.decode("utf-8", "surrogatepass"))
            if kind is None:
                continue
            v = k + 1
            while v < n and data[v] in b" \t\r\n":
                v += 1
            try:
                value, end = _decode_value(data, v)
            except ValueError:
                return None
            if value is None or (type(value) is str and REDACTED_RE.fullmatch(value)):
                continue
            out.append(data[last:v])
            marker = self.marker(kind, value if type(value) is str else json.dumps(value, sort_keys=True))
            out.append(b'"' + marker.encode() + b'"')
            counts[kind] += 1
            last = end
        if not out:
            return data
        out.append(data[last:])
        return b"".join(out)

    def _scan_json_bytes(self, data: bytes, counts: Counter) -> bytes:
        """Cards, IBANs, e-mails and `key=value` pairs in UTF-8 JSON text. Candidates are found
        on translated copies (digits, space and dash -> 0; capitals -> A) with C-level searches;
        only candidates meet a regex or a checksum."""
        reps: list[tuple[int, int, bytes, str]] = []
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
                    if not _in_json_string(data, s):
                        new = f'"{new}"'  # a card sent as a bare JSON number becomes a string
                    reps.append((s, e, new.encode(), "card"))
            i = t.find(_THIRTEEN, run_end)
        t = data.translate(_IBAN_CLASSES)
        i = t.find(b"AA00")
        while i != -1:
            mm = _IBAN_B.match(data, i)
            if mm and iban_ok(mm.group().decode()):
                reps.append((mm.start(), mm.end(), self.marker("iban", mm.group().decode().replace(" ", "")).encode(), "iban"))
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
                reps.append((mm.start(), mm.end(), self.marker("email", value).encode(), "email"))
                at = mm.end() - 1
            at = data.find(b"@", at + 1)
        for sep in (b"=", b": "):
            i = data.find(sep)
            while i != -1:
                if sep == b": " and i > 0 and data[i - 1] == 34:  # `"key": value` is JSON itself
                    i = data.find(sep, i + 1)
                    continue
                km = _KEY_BEFORE.search(data, max(0, i - 64), i)
                vm = _VALUE_AFTER.match(data, i + len(sep)) if km else None
                if km and vm:
                    kind = self._key_kind(km.group(1).decode("utf-8", "replace"))
                    value = vm.group(1)
                    if kind is not None and not REDACTED_RE.fullmatch(value.decode("utf-8", "replace")):
                        reps.append((vm.start(1), vm.end(1), self.marker(kind, value.decode("utf-8", "replace")).encode(), kind))
                i = data.find(sep, i + 1)
        if not reps:
            return data
        reps.sort()
        out: list[bytes] = []
        last = 0
        for s, e, new, kind in reps:
            if s < last:
                continue  # overlaps one already applied (an IBAN's digits, say)
            out.append(data[last:s])
            out.append(new)
            counts[kind] += 1
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
        if self._defaults and len(value) >= 6:
            if "@" in value or (len(value) >= 13 and len(value) - len(value.translate(_DROP_DIGITS)) >= 8):
                new = _DEFAULT_PATTERN.sub(lambda m: self._default_sub(m, counts), new)
            if "=" in new or ": " in new:
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
    """The JSON value starting at byte `pos`, and the byte offset after it. A string (the usual
    case) is cut out by its closing quote and decoded alone; anything else by the C decoder."""
    if data[pos:pos + 1] == b'"':
        q = data.find(b'"', pos + 1)
        while q != -1:
            backslashes = 0
            while data[q - 1 - backslashes] == 92:
                backslashes += 1
            if backslashes % 2 == 0:
                return json.loads(data[pos:q + 1]), q + 1
            q = data.find(b'"', q + 1)
        raise ValueError("unterminated string")
    tail = data[pos:].decode("utf-8", "surrogatepass")
    value, end_chars = _DECODER.raw_decode(tail)
    return value, pos + len(tail[:end_chars].encode("utf-8", "surrogatepass"))


def _in_json_string(data: bytes, pos: int) -> bool:
    """Whether `pos` is inside a JSON string: an odd number of unescaped quotes before it."""
    quotes = data.count(b'"', 0, pos) - data.count(b'\\"', 0, pos) + data.count(b'\\\\"', 0, pos)
    return quotes % 2 == 1


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _kind_name(key: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "key"
