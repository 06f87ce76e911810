"""A span's (or resource's) attributes as a dict of Python values, from the raw bytes the view holds.

The intake's TraceView keeps each attribute as the bytes of its OTLP KeyValue (see trace_view.py),
so the parser builds no message object per attribute. `AttributeDecoder.of` turns a span's list of
those bytes into {key: value}; the values are what intake and the rules compare:

- a string, an integer, a float or a bool as itself, except that an empty string is None;
- bytes as their hex text (empty: None); an array or a key-value list as protobuf's text form
  of the AnyValue;
- an AnyValue with no value set: None.

Spans of one integration repeat most attributes byte for byte (`messaging.system`, the method, the
host, most URLs, status codes), so each decoded KeyValue is remembered by its bytes in a bounded
table: a repeated attribute costs a dictionary lookup. The canonical encodings of string, integer,
bool and double values are read here; anything else goes through opentelemetry-proto's KeyValue.

Protobuf refuses a string that is not UTF-8 when it parses a message: here that is found per
attribute, so a span with such an attribute is refused on its own (BadAttribute) instead of
failing the whole request.

A span (or resource) with more than MAX_DECODED attributes (the SDK's default limit is 128) is
read only for the keys intake and the rules can use (`AttributeDecoder(wanted=...)`): the others
are skipped by their key's bytes, so a hostile span of a million tiny attributes costs a scan,
not a million decodes. Attributes skipped so are not checked for UTF-8.
"""

from __future__ import annotations

import struct
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from syncwatch.config.errors import SyncwatchError

MAX_REMEMBERED = 4096  # decoded KeyValues kept (cleared when full)
MAX_DECODED = 256  # attributes of one span decoded in full; beyond, only the wanted keys
MAX_REMEMBERED_BYTES = 256  # longer KeyValues are decoded each time (bounds the table to ~3 MiB)
_INT64 = 1 << 63
_double = struct.Struct("<d").unpack


class BadAttribute(SyncwatchError):
    """An attribute of a span or resource that is not a valid KeyValue (e.g. a string not UTF-8)."""


def any_value(v: Any) -> Any:
    """Python value of an opentelemetry-proto AnyValue, as the module docstring describes."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return v.string_value or None
    if kind == "bytes_value":
        return v.bytes_value.hex() or None
    if kind in ("array_value", "kvlist_value"):
        return str(v)
    return getattr(v, kind)


def _varint(data: bytes, at: int) -> int | None:
    """The varint that fills data[at:] exactly, or None."""
    value = shift = 0
    end = len(data)
    while at < end:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value if at == end and shift < 64 else None
        shift += 7
    return None


def _fast_value(av: bytes) -> tuple[bool, Any]:
    """(True, value) for the canonical encoding of an unset, string, integer, bool or double
    AnyValue; (False, None) for anything else. Raises UnicodeDecodeError."""
    n = len(av)
    if n == 0:
        return True, None
    tag = av[0]
    if tag == 0x0A:  # string_value
        if n >= 2 and av[1] == n - 2 and av[1] < 0x80:
            return True, av[2:].decode() or None
    elif tag == 0x18:  # int_value (int64 as varint)
        value = _varint(av, 1)
        if value is not None and value < 1 << 64:
            return True, value - (1 << 64) if value >= _INT64 else value
    elif tag == 0x10:  # bool_value
        if n == 2 and av[1] < 2:
            return True, av[1] == 1
    elif tag == 0x21 and n == 9:  # double_value
        return True, _double(av[1:])[0]
    return False, None


def decode(raw: bytes) -> tuple[str, Any]:
    """(key, value) of one KeyValue's bytes. Raises BadAttribute."""
    n = len(raw)
    # The canonical encoding with a key shorter than 128 bytes: 0x0A len key 0x12 len AnyValue.
    if n >= 4 and raw[0] == 0x0A and raw[1] < 0x80:
        at = raw[1] + 2
        if at + 2 <= n and raw[at] == 0x12 and raw[at + 1] == n - at - 2 and raw[at + 1] < 0x80:
            try:
                if n >= at + 4 and raw[at + 2] == 0x0A and raw[at + 3] == n - at - 4:  # a short string value
                    return raw[2:at].decode(), raw[at + 4 :].decode() or None
                ok, value = _fast_value(raw[at + 2 :])
                if ok:
                    return raw[2:at].decode(), value
            except UnicodeDecodeError:
                pass  # the full parse below names the problem
    try:
        kv = KeyValue.FromString(raw)
    except (DecodeError, ValueError, RuntimeError):
        raise BadAttribute(_why(raw)) from None
    return kv.key, any_value(kv.value)


def _why(raw: bytes) -> str:
    """What is wrong with an attribute protobuf refused: an invalid UTF-8 key or value, or the bytes."""
    if raw[:1] == b"\x0a" and len(raw) > 1 and raw[1] < 0x80:
        key = raw[2 : 2 + raw[1]]
        try:
            name = key.decode()
        except UnicodeDecodeError:
            return "an attribute key is not valid UTF-8"
        return f"attribute {name[:60]!r} is not a valid OTLP value (a string that is not UTF-8?)"
    return "an attribute is not a valid OTLP KeyValue"


class AttributeDecoder(dict):
    """KeyValue bytes -> (key, value), remembered (at most MAX_REMEMBERED, cleared when full).
    One per extractor: it runs on the ledger writer thread only. `wanted`: the keys read of spans
    with more than MAX_DECODED attributes (None: all)."""

    __slots__ = ("wanted",)

    def __init__(self, wanted: frozenset[str] | None = None):
        super().__init__()
        self.wanted = None if wanted is None else frozenset(key.encode() for key in wanted)

    def __missing__(self, raw: bytes) -> tuple[str, Any]:
        pair = decode(raw)
        if len(raw) <= MAX_REMEMBERED_BYTES:
            if len(self) >= MAX_REMEMBERED:
                self.clear()
            self[raw] = pair
        return pair

    def of(self, raws: Any) -> dict[str, Any]:
        """{key: value} of a span's or resource's attribute bytes (the last of a repeated key
        wins, as in a protobuf map). Raises BadAttribute."""
        if len(raws) > MAX_DECODED and self.wanted is not None:
            return self.wanted_of(raws)
        return dict(map(self.__getitem__, raws))

    def wanted_of(self, raws: Any) -> dict[str, Any]:
        """As `of`, for the wanted keys only (and any KeyValue not in the canonical encoding)."""
        wanted = self.wanted
        assert wanted is not None
        found: dict[str, Any] = {}
        for raw in raws:
            if len(raw) > 2 and raw[0] == 0x0A and raw[1] < 0x80 and raw[2 : raw[1] + 2] not in wanted:
                continue
            key, value = decode(raw)
            found[key] = value
        return found
