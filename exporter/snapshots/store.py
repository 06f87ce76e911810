"""What a stored snapshot is, what a snapshot store does, how its body is compressed, and how
stores report failure.

Both backends (SQLite, S3) store the same record: the redacted (and possibly truncated) body,
zstd-compressed, plus the facts needed to prove what was sent: the original size and the
HMAC-SHA256 of the original bytes (keyed with the snapshot hash key), whether the body was cut,
and the trace/span of the attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, runtime_checkable

import zstandard

from syncwatch.config.errors import SyncwatchError

# Reasons used in syncwatch_dropped_total{reason} when a store refuses a write. The last is one
# item refused, the store itself fine (not the store's fault: no `snapshot_store_` prefix).
StoreReason = Literal[
    "snapshot_store_full", "snapshot_store_unavailable", "snapshot_store_error", "snapshot_key_too_long"
]
STORE_FULL: Final = "snapshot_store_full"
STORE_UNAVAILABLE: Final = "snapshot_store_unavailable"
STORE_ERROR: Final = "snapshot_store_error"
KEY_TOO_LONG: Final = "snapshot_key_too_long"


class StoreError(SyncwatchError):
    """A write or read the store could not do. `reason` is one of the constants above."""

    def __init__(self, reason: StoreReason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Snapshot:
    corr: str
    direction: str  # request | response
    received: float  # unix seconds when syncwatch stored it: retention counts from here
    time: float  # the log record's own timestamp
    trace_id: bytes
    span_id: bytes
    flow: str | None
    destination: str | None
    content_type: str  # json | text | binary
    size: int  # original body size in bytes, before redaction and truncation
    # HMAC-SHA256 of the original body bytes under the snapshot hash key; b"" for snapshots stored
    # before bodies were hashed with a key (their unkeyed SHA-256 is never shown). The name is
    # the stored column's; `body_hmac` says what it holds.
    sha256: bytes
    truncated: bool
    redactions: int
    body: bytes = b""  # redacted, uncompressed (what the API shows)
    id: int | None = None
    stored_bytes: int = 0  # compressed size as stored
    # Filled by the codec before a write.
    dict_id: int = 0
    blob: bytes = field(default=b"", repr=False)

    @property
    def body_hmac(self) -> bytes:
        return self.sha256


@dataclass
class Refused:
    """A snapshot the store would not take, the others of its batch stored."""

    snapshot: Snapshot
    reason: str  # for syncwatch_dropped_total{reason}
    message: str  # for the OTLP answer's partial_success


@dataclass
class StoreStats:
    bytes: int
    oldest_received: float | None
    count: int | None = None
    dictionary_id: int = 0  # the zstd dictionary new snapshots are compressed with (0: none yet)


@runtime_checkable
class SnapshotStore(Protocol):
    """The whole contract between a snapshot backend and its callers (SnapshotIntake, the
    retention sweeper, the query API): they use these members only. Every method but `find` runs
    on the intake's single store thread; `find` may run on any thread, beside writes. Failures
    raise StoreError with a reason of StoreReason."""

    name: str  # the backend, for logs: "sqlite", "s3"

    def open(self) -> None:
        """Connect, create what is missing and load the stored zstd dictionaries."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is not used again."""
        ...

    def put_many(self, snaps: list[Snapshot]) -> list[Refused]:
        """Compress (filling `blob`, `dict_id`, `stored_bytes`) and store redacted snapshots.
        Returns those refused one by one, the others stored; raises when the store failed."""
        ...

    def find(self, corr: str) -> list[Snapshot]:
        """Every stored snapshot of one correlation ID, bodies decompressed, oldest first."""
        ...

    def sweep(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` snapshots received before `cutoff`; returns how many."""
        ...

    def compact(self, pages: int) -> int:
        """Give up to `pages` freed pages back to the file system; returns how many are left."""
        ...

    def stats(self) -> StoreStats:
        """Bytes in use, the oldest snapshot's receipt time, the dictionary in use."""
        ...


class Codec:
    """zstd per snapshot, with a dictionary trained on the first bodies stored.

    Order payloads are small and alike: alone each compresses to about a quarter of its size; with
    a dictionary of the shared structure to about a tenth. The dictionary is trained once, in a
    background thread, then persisted by the store (through `persist`) before its first use, so
    every stored blob can always be decompressed.
    """

    TRAIN_SAMPLES = 2000
    TRAIN_MAX_BYTES = 16 * 1024 * 1024
    DICT_SIZE = 110 * 1024
    DICT_K = 1024
    DICT_D = 8
    LEVEL = 3

    def __init__(self, persist: Callable[[int, bytes], None], train: bool = True):
        self._persist = persist
        self._plain = zstandard.ZstdCompressor(level=self.LEVEL)
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._decompressors: dict[int, zstandard.ZstdDecompressor] = {0: zstandard.ZstdDecompressor()}
        self._current_id = 0
        self._current: zstandard.ZstdCompressor = self._plain
        self._train = train
        self._samples: list[bytes] = []
        self._sample_bytes = 0
        self._trained: tuple[int, bytes] | None = None
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    @property
    def current_id(self) -> int:
        """The dictionary new snapshots are compressed with (0: plain zstd)."""
        return self._current_id

    def knows(self, dict_id: int) -> bool:
        """Whether blobs compressed with this dictionary can be decompressed already."""
        return dict_id in self._decompressors

    def load(self, dict_id: int, data: bytes) -> None:
        d = zstandard.ZstdCompressionDict(data)
        self._dicts[dict_id] = d
        self._decompressors[dict_id] = zstandard.ZstdDecompressor(dict_data=d)
        if dict_id > self._current_id:
            self._current_id = dict_id
            self._current = zstandard.ZstdCompressor(level=self.LEVEL, dict_data=d)
            self._train = False  # one dictionary is enough: shapes of payloads change slowly

    def compress(self, snap: Snapshot) -> None:
        self._maybe_switch()
        snap.dict_id = self._current_id
        snap.blob = self._current.compress(snap.body)
        snap.stored_bytes = len(snap.blob)
        if self._train and len(self._samples) < self.TRAIN_SAMPLES and snap.body:
            self._samples.append(snap.body[:16384])
            self._sample_bytes += min(len(snap.body), 16384)
            if len(self._samples) >= self.TRAIN_SAMPLES or self._sample_bytes >= self.TRAIN_MAX_BYTES:
                self._train = False
                samples, self._samples = self._samples, []
                threading.Thread(
                    target=self._train_dict, args=(samples,), name="snapshot-zstd-dict", daemon=True
                ).start()

    def decompress(self, dict_id: int, blob: bytes) -> bytes:
        try:
            d = self._decompressors[dict_id]
        except KeyError:
            raise StoreError(STORE_ERROR, f"snapshot compressed with unknown dictionary {dict_id}") from None
        if not blob:
            return b""
        with self._read_lock:  # API reads run in several threads; a zstd context is not shareable
            return d.decompress(blob)

    def _train_dict(self, samples: list[bytes]) -> None:
        try:
            # Fixed COVER parameters (segment k, d-mers of d): without them zstd tries dozens
            # of combinations, ~4x the CPU for a dictionary that compresses order payloads
            # within 1 % of the same size.
            trained = zstandard.train_dictionary(self.DICT_SIZE, [*samples], k=self.DICT_K, d=self.DICT_D)
        except zstandard.ZstdError:
            return  # too few or too varied samples: keep plain zstd
        with self._lock:
            self._trained = (self._current_id + 1, trained.as_bytes())

    def _maybe_switch(self) -> None:
        if self._trained is None:
            return
        with self._lock:
            dict_id, data = self._trained
            self._trained = None
        try:
            self._persist(dict_id, data)
        except Exception:
            return  # not persisted: never use it (stored blobs must stay readable)
        self.load(dict_id, data)
