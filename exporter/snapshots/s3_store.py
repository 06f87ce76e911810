"""Snapshot store on S3 (or any S3 API): `snapshots.backend: s3://bucket/prefix`.

Layout under the prefix:
  c/<corr>/<received_ms>-<uid>.sws               the snapshot (header + compressed body), listed by
                                                 correlation ID for the query API
  t/<YYYYMMDDHH>/<received_ms>-<uid>-<bytes>/<corr>  empty time-index marker, listed by hour for
                                                 the retention sweeper (and for store size/age)
  dicts/<id>.zdict                               zstd dictionaries (never deleted)
<corr> is percent-encoded (`.` and `..` too: some S3 clients and proxies resolve them as path
steps). A snapshot whose keys would pass S3's 1,024-byte limit is refused on its own
(snapshot_key_too_long); the rest of its batch is stored. The sweeper deletes at the retention
age; a bucket lifecycle rule on the prefix (README) is the backstop if syncwatch is down.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import boto3
import botocore.config
import botocore.exceptions

from syncwatch.config.errors import SyncwatchError
from syncwatch.snapshots.s3_layout import (
    MAX_KEY_BYTES,
    decode_object,
    encode_object,
    key_segment,
    object_keys,
    parse_marker,
    parse_s3_url,
    snapshot_from,
)
from syncwatch.snapshots.store import (
    KEY_TOO_LONG,
    STORE_ERROR,
    STORE_UNAVAILABLE,
    Codec,
    Refused,
    Snapshot,
    StoreError,
    StoreStats,
)

_T = TypeVar("_T")

# Answers that refuse one object's key, not the store: S3's, and MinIO's (255 bytes a segment).
_KEY_ERRORS = frozenset({"KeyTooLongError", "XMinioInvalidObjectName"})


class _KeyRefused(SyncwatchError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class S3SnapshotStore:
    name = "s3"

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        train_dictionary: bool = True,
        parallel: int = 8,
    ):
        self.bucket, prefix = parse_s3_url(url)
        self.prefix = prefix + "/" if prefix else ""
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            # Fail fast: a store that is down must show up as dropped snapshots within seconds,
            # not hold intake requests for minutes.
            config=botocore.config.Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=parallel * 2,
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="snapshot-s3")
        self.codec = Codec(self._save_dict, train=train_dictionary)
        self._lock = threading.Lock()
        self._bytes = 0
        self._oldest: float | None = None
        self._seq = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        def scan() -> None:
            for key in self._list_keys(self.prefix + "dicts/"):
                dict_id = int(key.rsplit("/", 1)[1].split(".")[0])
                self.codec.load(dict_id, self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            total, oldest = 0, None
            for key in self._list_keys(self.prefix + "t/"):
                received_ms, _, size = parse_marker(key)
                total += size
                if oldest is None or received_ms / 1000 < oldest:
                    oldest = received_ms / 1000
            with self._lock:
                self._bytes, self._oldest = total, oldest

        self._call(scan, "cannot open the S3 snapshot store")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- writes --------------------------------------------------------------------------------
    def put_many(self, snaps: list[Snapshot]) -> list[Refused]:
        """Store the snapshots; returns those refused on their own (keys too long). Raises
        StoreError when the store fails (then what was written is not known)."""
        refused: list[Refused] = []
        writes: list[tuple[Snapshot, str, str, bytes]] = []
        for s in snaps:
            if not s.blob and s.body:
                self.codec.compress(s)
            data = encode_object(s)
            data_key, marker_key = self._keys(s, len(data))
            if len(marker_key) > MAX_KEY_BYTES or len(data_key) > MAX_KEY_BYTES:
                refused.append(
                    Refused(
                        s,
                        KEY_TOO_LONG,
                        f"correlation ID too long for an S3 object key ({len(s.corr.encode())} bytes, "
                        f"{len(key_segment(s.corr))} encoded; keys are limited to {MAX_KEY_BYTES} bytes)",
                    )
                )
                continue
            writes.append((s, data_key, marker_key, data))
        futures = [self._pool.submit(self._put_one, *w) for w in writes]
        failed = []
        for w, f in zip(writes, futures, strict=False):
            exc = f.exception()
            if isinstance(exc, _KeyRefused):
                refused.append(Refused(w[0], KEY_TOO_LONG, exc.message))
            elif exc is not None:
                failed.append(exc)
        if failed:
            raise failed[0] if isinstance(failed[0], StoreError) else _store_error(failed[0], "cannot store snapshots")
        return refused

    def _keys(self, s: Snapshot, size: int) -> tuple[str, str]:
        with self._lock:
            self._seq += 1
            uid = f"{os.getpid():x}{self._seq:08x}"
        return object_keys(self.prefix, s, uid, size)

    def _put_one(self, s: Snapshot, data_key: str, marker_key: str, data: bytes) -> None:
        # Data first, then its index marker: a crash in between leaves an object only the
        # lifecycle rule removes, never a marker pointing at nothing.
        for key, body, what in ((data_key, data, "cannot store snapshot"), (marker_key, b"", "cannot index snapshot")):
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                if err.get("Code") in _KEY_ERRORS:
                    raise _KeyRefused(
                        f"S3 refused the object key of this correlation ID: {err.get('Code')} {err.get('Message')}"
                    ) from None
                raise _store_error(exc, what) from None
            except Exception as exc:
                raise _store_error(exc, what) from None
        with self._lock:
            self._bytes += len(data)
            if self._oldest is None or s.received < self._oldest:
                self._oldest = s.received

    def _save_dict(self, dict_id: int, data: bytes) -> None:
        self._call(
            lambda: self._client.put_object(Bucket=self.bucket, Key=f"{self.prefix}dicts/{dict_id}.zdict", Body=data),
            "cannot store dictionary",
        )

    # -- reads ---------------------------------------------------------------------------------
    def find(self, corr: str) -> list[Snapshot]:
        prefix = f"{self.prefix}c/{key_segment(corr)}/"
        if len(prefix) >= MAX_KEY_BYTES:
            return []  # no snapshot can be stored under it
        keys = self._call(lambda: list(self._list_keys(prefix)), "cannot list snapshots")
        bodies = list(
            self._pool.map(
                lambda k: self._call(
                    lambda: self._client.get_object(Bucket=self.bucket, Key=k)["Body"].read(), "cannot read snapshot"
                ),
                keys,
            )
        )
        out: list[Snapshot] = []
        for data in bodies:
            decoded = decode_object(data)
            if decoded is None:
                continue
            h, blob = decoded
            dict_id = h.get("dict_id", 0)
            if dict_id and not self.codec.knows(dict_id):
                raw = self._call(partial(self._get, f"{self.prefix}dicts/{dict_id}.zdict"), "cannot read dictionary")
                self.codec.load(dict_id, raw)
            out.append(snapshot_from(h, self.codec.decompress(dict_id, blob), len(data)))
        out.sort(key=lambda s: (s.time, s.received))
        return out

    # -- retention -----------------------------------------------------------------------------
    def sweep(self, cutoff: float, limit: int) -> int:
        """Delete up to `limit` snapshots received before `cutoff`: whole hours of markers are
        listed oldest first, each marker's snapshot deleted, then the marker."""
        cutoff_ms = int(cutoff * 1000)
        cutoff_hour = time.strftime("%Y%m%d%H", time.gmtime(cutoff))

        def run() -> int:
            deleted = 0
            for hour_prefix in self._list_prefixes(self.prefix + "t/"):
                hour = hour_prefix.rstrip("/").rsplit("/", 1)[1]
                if hour > cutoff_hour:
                    break
                batch: list[tuple[str, str, int]] = []
                done_with_hour = True
                for key in self._list_keys(hour_prefix):
                    received_ms, name, size = parse_marker(key)
                    if received_ms >= cutoff_ms:
                        done_with_hour = False
                        break
                    corr = key.rsplit("/", 1)[1]
                    batch.append((key, f"{self.prefix}c/{corr}/{name}.sws", size))
                    if len(batch) >= min(500, limit - deleted):
                        deleted += self._delete(batch)
                        batch = []
                        if deleted >= limit:
                            return deleted
                if batch:
                    deleted += self._delete(batch)
                if not done_with_hour or deleted >= limit:
                    break
            self._refresh_oldest()
            return deleted

        return self._call(run, "cannot delete expired snapshots")

    def compact(self, pages: int) -> int:
        return 0  # deleted objects free their space in S3 itself

    def _delete(self, batch: list[tuple[str, str, int]]) -> int:
        # Snapshots first, markers after: an interrupted sweep leaves markers, found again next time.
        for keys in ([b[1] for b in batch], [b[0] for b in batch]):
            resp = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
            if resp.get("Errors"):
                err = resp["Errors"][0]
                raise StoreError(STORE_ERROR, f"cannot delete {err.get('Key')}: {err.get('Code')} {err.get('Message')}")
        with self._lock:
            self._bytes = max(0, self._bytes - sum(b[2] for b in batch))
        return len(batch)

    def _refresh_oldest(self) -> None:
        oldest = None
        for hour_prefix in self._list_prefixes(self.prefix + "t/"):
            resp = self._client.list_objects_v2(Bucket=self.bucket, Prefix=hour_prefix, MaxKeys=1)
            contents = resp.get("Contents") or []
            if contents:
                oldest = parse_marker(contents[0]["Key"])[0] / 1000
                break
        with self._lock:
            self._oldest = oldest

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(bytes=self._bytes, oldest_received=self._oldest, dictionary_id=self.codec.current_id)

    # -- helpers -------------------------------------------------------------------------------
    def _list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents") or []:
                yield obj["Key"]

    def _get(self, key: str) -> bytes:
        data: bytes = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def _list_prefixes(self, prefix: str) -> list[str]:
        out: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            out.extend(p["Prefix"] for p in page.get("CommonPrefixes") or [])
        return sorted(out)

    def _call(self, fn: Callable[[], _T], what: str) -> _T:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as exc:  # boto raises many unrelated classes; classify, never leak raw
            raise _store_error(exc, what) from None


def _store_error(exc: BaseException, what: str) -> StoreError:
    if isinstance(
        exc,
        (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectionClosedError,
        ),
    ):
        return StoreError(STORE_UNAVAILABLE, f"{what}: S3 unreachable ({exc})")
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return StoreError(STORE_ERROR, f"{what}: {err.get('Code')} {err.get('Message')}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return StoreError(STORE_ERROR, f"{what}: no AWS credentials configured")
    return StoreError(STORE_ERROR, f"{what}: {type(exc).__name__}: {exc}")
