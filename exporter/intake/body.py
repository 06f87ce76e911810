"""OTLP request bodies within a memory budget: reading, decompressing and parsing them, the large
ones on a small thread pool instead of the event loop, so concurrent large or compressed bodies
neither grow memory per request nor stall /healthz (figures: docs/performance.md).
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from syncwatch.intake.decode import JSON, OtlpError

# A receiver's parse step: (message, item count) of a decompressed body of a content type.
Parse = Callable[[bytes | bytearray, str], tuple[Any, int]]

CHUNK = 1024 * 1024  # decompression step: output produced (and accounted) at a time
IN_STEP = 64 * 1024  # compressed input fed to zlib at a time
# Bodies up to this size parse on the event loop (a thread hop costs more than parsing them);
# larger ones, and decompression beyond it, go to the pool. JSON parses ~100x slower than protobuf.
INLINE_PROTOBUF = 1024 * 1024
INLINE_JSON = 64 * 1024
# Each request holds this much without touching the shared budget, so the small exports of
# ordinary clients are never refused because large bodies are in flight.
FREE_PER_REQUEST = 256 * 1024
DECODE_WORKERS = 2
ENCODINGS = ("identity", "gzip", "deflate")


def _memory_refusal() -> OtlpError:
    return OtlpError(503, "syncwatch is holding as many large request bodies as it allows; retry later", "body_memory")


class BodyBudget:
    """Bytes of request bodies (raw and decompressed) held at once across both transports, from
    the first byte read until the request is answered.

    Requests charge it as their bytes arrive, so several large ones can each hold part of it and
    none could finish; the one that has held bytes the longest may therefore always take more
    (at most one request's bodies beyond the limit), so the oldest always completes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()
        self._holders: dict[Lease, None] = {}  # leases holding counted bytes, oldest first

    def lease(self) -> Lease:
        return Lease(self)

    def _admits(self, lease: Lease, extra: int) -> bool:
        if self.used + extra <= self.limit:
            return True
        return not self._holders or next(iter(self._holders)) is lease


class Lease:
    """One request's share of the budget. take() raises OtlpError(503, "body_memory") when the
    budget is spent by other requests; release() returns it all."""

    __slots__ = ("budget", "counted", "held")

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.held = 0  # bytes this request holds
        self.counted = 0  # of which charged to the budget (those beyond FREE_PER_REQUEST)

    def take(self, n: int) -> None:
        held = self.held + n
        counted = max(0, held - FREE_PER_REQUEST)
        extra = counted - self.counted
        if extra > 0:
            budget = self.budget
            with budget._lock:
                if not budget._admits(self, extra):
                    raise _memory_refusal()
                budget.used += extra
                budget._holders.setdefault(self)
        self.held, self.counted = held, counted

    def give_back(self, n: int) -> None:
        held = max(0, self.held - n)
        counted = max(0, held - FREE_PER_REQUEST)
        if counted != self.counted:
            budget = self.budget
            with budget._lock:
                budget.used -= self.counted - counted
                if not counted:
                    budget._holders.pop(self, None)
        self.held, self.counted = held, counted

    def release(self) -> None:
        self.give_back(self.held)

    def would_fit(self, n: int) -> bool:
        """Whether n more bytes fit now (a hint to refuse before reading a body, not a reservation)."""
        extra = max(0, self.held + n - FREE_PER_REQUEST) - self.counted
        budget = self.budget
        with budget._lock:
            return extra <= 0 or budget._admits(self, extra)


class _Inflater:
    """Decompresses a gzip or deflate body in steps of at most CHUNK bytes of output, each charged
    to the lease first, stopping past max_bytes (413). Resumable: a first step may run on the loop
    and the rest on the pool. Input goes in by slices, so zlib never copies the whole remainder."""

    def __init__(self, raw: bytes | bytearray, encoding: str, max_bytes: int, lease: Lease):
        self.encoding = encoding
        if encoding == "gzip":
            wbits = 16 + zlib.MAX_WBITS
        else:
            # HTTP's deflate is zlib-wrapped; some clients send raw deflate (aiohttp accepted both).
            wbits = zlib.MAX_WBITS if raw[:1] and raw[0] & 0x0F == 8 else -zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._raw = memoryview(raw)
        self._pos = 0
        self.max_bytes = max_bytes
        self.lease = lease
        self.out = bytearray()
        self.done = False

    def run(self, until: int | None = None) -> bool:
        """Inflate until done (True), or until `until` output bytes exist (False)."""
        out, raw = self.out, self._raw
        try:
            while not self.done:
                room = self.max_bytes + 1 - len(out)
                if until is not None:
                    if len(out) >= until:
                        return False
                    room = min(room, until - len(out))
                step = min(CHUNK, room)
                piece = raw[self._pos : self._pos + IN_STEP]
                self.lease.take(step)
                chunk = self._d.decompress(piece, step)
                self.lease.give_back(step - len(chunk))
                self._pos += len(piece) - len(self._d.unconsumed_tail)
                out += chunk
                if len(out) > self.max_bytes:
                    raise OtlpError(
                        413, f"request body over the {self.max_bytes}-byte limit (decompressed)", "too_large"
                    )
                if self._d.eof:
                    rest = self._d.unused_data + bytes(raw[self._pos :])
                    if self.encoding == "gzip" and rest.strip(b"\x00"):
                        # Another gzip member follows: concatenated members are one stream.
                        self._d, self._pos, raw = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, memoryview(rest)
                        self._raw = raw
                        continue
                    if rest and self.encoding != "gzip":
                        raise OtlpError(
                            400, "cannot read body: data after the end of the deflate stream", "bad_request"
                        )
                    self.done = True
                elif not chunk and self._pos >= len(raw):
                    raise OtlpError(400, f"cannot read body: truncated {self.encoding} stream", "bad_request")
        except zlib.error as exc:
            raise OtlpError(400, f"cannot read body: corrupt {self.encoding} stream ({exc})", "bad_request") from None
        return True


class BodyDecoder:
    """Shared by the OTLP/HTTP and OTLP/gRPC receivers: the budget and the decode pool."""

    def __init__(self, max_body_bytes: int, budget_bytes: int | None = None, workers: int = DECODE_WORKERS):
        self.max_body_bytes = max_body_bytes
        # Twice the largest body: one request, compressed and decompressed, always fits.
        self.budget = BodyBudget(budget_bytes if budget_bytes is not None else 2 * max_body_bytes)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="syncwatch-otlp-decode")
        # protobuf's parser holds the GIL for a whole body, and a message of tiny nested entries
        # takes many times its size: one large protobuf parse at a time (JSON parsing yields the GIL).
        self._protobuf_parse = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def decode(self, raw: bytes | bytearray, encoding: str, content_type: str, parse: Parse, lease: Lease) -> Any:
        """The message parse(body, content_type) makes of a raw (possibly compressed) body.
        Small bodies parse here on the loop; decompression past the inline size and parsing of
        large bodies run on the pool."""
        inline = INLINE_JSON if content_type == JSON else INLINE_PROTOBUF
        if encoding in ("identity", ""):
            if len(raw) <= inline:
                return parse(raw, content_type)
            return await self._offload(self._parse_large, None, raw, parse, content_type)
        inflater = _Inflater(raw, encoding, self.max_body_bytes, lease)
        del raw
        if inflater.run(until=inline + 1) and len(inflater.out) <= inline:
            return parse(inflater.out, content_type)
        return await self._offload(self._parse_large, inflater, None, parse, content_type)

    async def _offload(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _parse_large(
        self, inflater: _Inflater | None, raw: bytes | bytearray | None, parse: Parse, content_type: str
    ) -> Any:
        if inflater is not None:
            inflater.run()
            raw = inflater.out
        if raw is None:
            raise ValueError("_parse_large needs a body or an inflater")
        if content_type == JSON:
            return parse(raw, content_type)
        with self._protobuf_parse:
            try:
                return parse(raw, content_type)
            except OtlpError as err:
                # Without the parser's frames, a refused message is freed before the next parse.
                raise err.with_traceback(None) from None
