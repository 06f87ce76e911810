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
        self._extra_keys = {_normalise(k): _kind_name(k) for k in extra_keys}
        self._paths = [PathRule(p) for p in paths]
        self._patterns = [(kind, re.compile(rx)) for kind, rx in (patterns or {}).items()]
        self._key_cache: dict[str, str | None] = {}
        self._safe_keys: set[str] = set()

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


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _kind_name(key: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "key"
