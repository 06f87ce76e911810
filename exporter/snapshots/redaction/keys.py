"""Which keys are sensitive, and as what kind: the key rules every other rule asks.

A key is compared normalised (lower-case, separators removed): long key words anywhere in it,
short ones only as a whole word (`customer_ssn`, `cardCvv`, but not `company` for `pan`), and
the configured extra keys exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from syncwatch.snapshots.redaction.multifind import MultiFind

# Key words matched anywhere inside the normalised key (lower-case, separators removed).
KEY_SUBSTRINGS: Final = {
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
KEY_WORDS: Final = {
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
LINE_KINDS: Final = frozenset({"authorization", "cookie"})
# Lower-case stems every default sensitive key contains, for the fast path's text search
# (cvv2 contains cvv).
_DEFAULT_STEMS: Final = (
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
)
_WORD_SPLIT: Final = re.compile(r"[^a-z0-9]+")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_CACHE_MAX: Final = 100_000  # keys repeat across payloads; bound the cache anyway


def normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def kind_name(key: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "key"


class KeyRules:
    """The kind of a key (None: harmless), cached; and the stems the fast path searches for."""

    def __init__(self, *, defaults: bool, extra_keys: Iterable[str]):
        self.defaults = defaults
        raw = list(extra_keys)
        self.extra = {normalise(k): kind_name(k) for k in raw}
        # Key rules in text (pairs, XML elements, header lines) apply whenever any key is sensitive.
        self.any = defaults or bool(self.extra)
        self.cache: dict[str, str | None] = {}
        stems = {*_DEFAULT_STEMS, *(w for w in KEY_WORDS if w != "cvv2")}
        for k in raw:
            parts = [x for x in re.split(r"[^a-z0-9]+", k.lower()) if x]
            if parts:
                stems.add(max(parts, key=len))
        self.stems = MultiFind([x.encode() for x in sorted(stems)])

    def kind(self, key: str) -> str | None:
        try:
            return self.cache[key]
        except KeyError:
            pass
        kind = None
        norm = normalise(key)
        if norm in self.extra:
            kind = self.extra[norm]
        elif self.defaults:
            for word, k in KEY_SUBSTRINGS.items():
                if word in norm:
                    kind = k
                    break
            else:
                for w in _WORD_SPLIT.split(_CAMEL.sub("_", key).lower()):
                    if w in KEY_WORDS:
                        kind = KEY_WORDS[w]
                        break
        if len(self.cache) < _CACHE_MAX:
            self.cache[key] = kind
        return kind
