"""Redaction of payload snapshots before anything is stored.

A redacted value becomes `[REDACTED:<kind>:<8 hex>]`, the hex being a keyed hash (BLAKE2b with a
secret key) of the value: two snapshots carrying the same card number show the same marker, so
they stay comparable, but without the key nobody can test guesses against the marker.

Rules (README's redaction section lists the encodings each one covers), one module each:
- keys: a value under a sensitive key (case-insensitive, any depth of a JSON body, whole value
  even if it is an object); JSON documents inside string values are parsed and redacted too
  (json_walk; json_fast does the same on the text when it can decide with certainty);
- paths: JSON paths from config (`$.customer.address.street`, `$.items[*].name`, `$.lines[0]`);
- patterns anywhere in text: payment card numbers that pass the Luhn check, e-mail addresses,
  IBANs that pass the mod-97 check (patterns, cards), plus patterns from config (user);
- text: `key=value` / `key: value` pairs and XML elements whose key is sensitive;
  `Authorization:` and `Cookie:` header lines up to their end.
Every rule runs in time linear in the text (bounded look-ahead, no nested search per match).
"""

from syncwatch.snapshots.redaction.cards import iban_ok, luhn_ok
from syncwatch.snapshots.redaction.json_walk import MAX_NESTED_JSON
from syncwatch.snapshots.redaction.markers import REDACTED_RE
from syncwatch.snapshots.redaction.paths import PathRule
from syncwatch.snapshots.redaction.redactor import RedactionResult, Redactor

__all__ = ["MAX_NESTED_JSON", "REDACTED_RE", "PathRule", "RedactionResult", "Redactor", "iban_ok", "luhn_ok"]
