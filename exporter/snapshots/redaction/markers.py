"""What a redacted value becomes: `[REDACTED:<kind>:<8 hex>]`, the hex a keyed hash of the value.

The hash keeps equal values comparable across snapshots without letting anyone who lacks the
key test guesses against a marker.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

REDACTED_RE: Final = re.compile(r"\[REDACTED:[A-Za-z0-9_.-]+:[0-9a-f]{8}\]")

# A card number however written (groups, dashes, `%20`) gets the marker of its digits alone.
_CARD_LIKE: Final = re.compile(r"[0-9](?:[0-9 \t\u00a0.+\-]|%20)*[0-9]")
_NOT_DIGITS: Final = re.compile(r"%20|[^0-9]")
_CARD_KINDS: Final = ("card", "card_number")


class Markers:
    """Makes markers under one hash key (BLAKE2b, keyed with a digest of the configured key)."""

    def __init__(self, hash_key: bytes):
        if len(hash_key) < 16:
            raise ValueError("redaction hash key must be at least 16 bytes")
        # BLAKE2b takes a key of up to 64 bytes; derive a fixed-size one from whatever we got.
        key = hashlib.sha256(hash_key).digest()
        self._blake = hashlib.blake2b(digest_size=4, key=key)

    def marker(self, kind: str, value: str) -> str:
        if kind in _CARD_KINDS and _CARD_LIKE.fullmatch(value):
            value = _NOT_DIGITS.sub("", value)  # same card, same marker, however written
        h = self._blake.copy()  # keyed once: a copy skips hashing the key block again
        h.update(value.encode("utf-8", "surrogatepass"))
        digest = h.hexdigest()
        return f"[REDACTED:{kind}:{digest}]"
