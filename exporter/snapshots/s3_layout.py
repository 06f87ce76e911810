"""How the S3 snapshot store lays snapshots out: object keys, time-index markers, object format.

Pure functions, no S3 calls: s3_store.py does the I/O. The layout is the stored format, read
back by every later version, so it changes only with a new magic.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any, Final
from urllib.parse import quote

from syncwatch.snapshots.store import Snapshot

MAGIC: Final = b"SWS1"
MAX_KEY_BYTES: Final = 1024  # S3's limit on an object key (UTF-8); ours are ASCII


def key_segment(corr: str) -> str:
    """A correlation ID as one key segment: percent-encoded, and never `.` or `..`."""
    seg = quote(corr, safe="")
    if seg in (".", ".."):
        seg = seg.replace(".", "%2E")
    return seg


def parse_s3_url(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def object_keys(prefix: str, s: Snapshot, uid: str, size: int) -> tuple[str, str]:
    """The snapshot's data key (listed by correlation ID) and its time-index marker key (listed
    by hour, carrying the object's size)."""
    corr = key_segment(s.corr)
    name = f"{int(s.received * 1000):013d}-{uid}"
    hour = time.strftime("%Y%m%d%H", time.gmtime(s.received))
    return f"{prefix}c/{corr}/{name}.sws", f"{prefix}t/{hour}/{name}-{size}/{corr}"


def parse_marker(key: str) -> tuple[int, str, int]:
    """(received in ms, object name, object size) of a marker key
    `.../t/<hour>/<received_ms>-<uid>-<bytes>/<corr>`."""
    part = key.rsplit("/", 2)[1]
    received_ms, uid, size = part.split("-")
    return int(received_ms), f"{received_ms}-{uid}", int(size)


def encode_object(s: Snapshot) -> bytes:
    """Magic, header length, JSON header, then the compressed body."""
    header = json.dumps(
        {
            "corr": s.corr,
            "direction": s.direction,
            "received": s.received,
            "time": s.time,
            "trace_id": s.trace_id.hex(),
            "span_id": s.span_id.hex(),
            "flow": s.flow,
            "destination": s.destination,
            "content_type": s.content_type,
            "size": s.size,
            "body_hmac": s.sha256.hex(),
            "truncated": s.truncated,
            "redactions": s.redactions,
            "dict_id": s.dict_id,
        },
        separators=(",", ":"),
    ).encode()
    return MAGIC + struct.pack(">I", len(header)) + header + s.blob


def decode_object(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    """The header and the compressed body of a stored object; None if it is not one of ours."""
    if data[:4] != MAGIC:
        return None
    (n,) = struct.unpack(">I", data[4:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + n])
    return header, data[8 + n :]


def snapshot_from(h: dict[str, Any], body: bytes, stored_bytes: int) -> Snapshot:
    return Snapshot(
        corr=h["corr"],
        direction=h["direction"],
        received=h["received"],
        time=h["time"],
        trace_id=bytes.fromhex(h["trace_id"]),
        span_id=bytes.fromhex(h["span_id"]),
        flow=h["flow"],
        destination=h["destination"],
        content_type=h["content_type"],
        size=h["size"],
        # Objects written before the body hash was keyed carry an unkeyed "sha256": not shown.
        sha256=bytes.fromhex(h.get("body_hmac", "")),
        truncated=h["truncated"],
        redactions=h["redactions"],
        body=body,
        stored_bytes=stored_bytes,
        dict_id=h.get("dict_id", 0),
    )
