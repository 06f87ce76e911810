"""Dead letters named by order: the messages in a DLQ, read without taking them out, each with the
correlation ID of the transaction it belongs to, why and when it was dead-lettered.

Opt-in per collector (`dead_letters.enabled`). A collector reads at most `max_per_queue` messages
per DLQ per cycle (RabbitMQ: get-messages with requeue; SQS: receive with a zero visibility
timeout) and returns them in its Sample; the DeadLetterBook redacts each body before anything is
stored, links it to the ledger and keeps the latest read per DLQ in its own SQLite file.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncwatch.config.jsonpath import Step, parse_json_path

log = logging.getLogger("syncwatch.collectors.deadletters")

# Longest correlation ID taken from a message (the ledger's default limit).
MAX_CORRELATION_ID = 256
# Rows kept per DLQ when its reads never cover it whole: the oldest seen go first.
MAX_ROWS_PER_QUEUE = 1000
# Deepest JSON body walked for the correlation ID's path.
MAX_JSON_DEPTH = 64


class CorrelationSource(BaseModel):
    """Where a dead letter carries its correlation ID: a header (RabbitMQ message header or
    property `correlation_id`/`message_id`; SQS message attribute), else a JSON path of the body."""

    model_config = ConfigDict(extra="forbid")

    header: str | None = Field(None, min_length=1)
    json_path: str | None = None

    @field_validator("json_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            parse_json_path(v)
        return v


class DeadLetterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    max_per_queue: int = Field(10, ge=1, le=100)  # messages read per DLQ per cycle
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=1024 * 1024)  # read and kept (redacted) per message
    correlation: CorrelationSource = Field(default_factory=CorrelationSource)

    @model_validator(mode="after")
    def _needs_a_source(self) -> DeadLetterSettings:
        if self.enabled and not (self.correlation.header or self.correlation.json_path):
            raise ValueError(
                "correlation: name a header (or SQS message attribute) or a json_path to take the correlation ID from"
            )
        return self


@dataclass
class DeadLetter:
    """One message as read from a DLQ; `body` is the raw (cut) body, never stored as is."""

    key: str  # stable per message: its message ID, else a hash of its content and death record
    correlation_id: str | None
    reason: str | None
    source_queue: str | None
    dead_lettered_at: float | None  # unix seconds (SQS: when it was first sent)
    deliveries: int | None  # RabbitMQ: x-death count; SQS: ApproximateReceiveCount
    body: bytes
    body_size: int
    truncated: bool


@dataclass
class DeadLetterRead:
    """What one cycle read from one DLQ; `complete` when it saw every message in it."""

    namespace: str
    queue: str
    letters: list[DeadLetter] = field(default_factory=list)
    complete: bool = False


def message_key(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return "sha256:" + h.hexdigest()[:32]


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_CORRELATION_ID:
        return None
    return text


def _walk(node: Any, steps: list[Step]) -> Any:
    for i, step in enumerate(steps):
        if step is None:  # wildcard: the first element that yields a value
            children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
            for child in children:
                found = _walk(child, steps[i + 1 :])
                if _id_text(found) is not None:
                    return found
            return None
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
            node = node[step]
        elif isinstance(node, dict):
            node = node.get(step)
        else:
            return None
    return node


def _too_deep(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def correlation_of(source: CorrelationSource, headers: Mapping[str, Any], body: bytes) -> str | None:
    """The correlation ID from the configured header, else the JSON path of the body."""
    if source.header:
        found = _id_text(headers.get(source.header))
        if found is not None:
            return found
    if source.json_path:
        try:
            text = body.decode("utf-8")
            if _too_deep(text):
                return None
            doc = json.loads(text)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        return _id_text(_walk(doc, parse_json_path(source.json_path)))
    return None


# --- the book -------------------------------------------------------------------------------------

DDL = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS letters(
    collector TEXT NOT NULL, namespace TEXT NOT NULL, queue TEXT NOT NULL, key TEXT NOT NULL,
    corr TEXT, reason TEXT, source_queue TEXT, dead_lettered_at REAL, deliveries INTEGER,
    body BLOB NOT NULL, content_type TEXT NOT NULL, body_size INTEGER NOT NULL, truncated INTEGER NOT NULL,
    redactions INTEGER NOT NULL, linked INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    PRIMARY KEY (collector, namespace, queue, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS letters_by_corr ON letters(corr);
"""

# redact(raw body, truncated) -> (redacted bytes, content type json|text|binary, redactions)
Redact = Callable[[bytes, bool], tuple[bytes, str, int]]


class DeadLetterBook:
    """The dead letters last read, per DLQ: redacted, linked to the ledger, in `path` (SQLite).

    `link(correlation_ids)` tells which of them the ledger knows (one ledger read per DLQ read).
    Called from worker threads only (the runner offloads it): every method opens its own connection."""

    def __init__(
        self, path: Path, redact: Redact, link: Callable[[list[str]], set[str]], clock: Callable[[], float] = time.time
    ):
        self.path = Path(path)
        self.redact = redact
        self.link = link
        self.clock = clock
        self._lock = threading.Lock()  # one writer at a time (collectors run concurrently)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as conn:
            conn.executescript(DDL)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5)
        conn.row_factory = sqlite3.Row
        return conn

    def record(self, collector: str, reads: Iterable[DeadLetterRead]) -> None:
        now = self.clock()
        rows = []
        done: list[tuple[str, str]] = []
        for read in reads:
            if read.complete:
                done.append((read.namespace, read.queue))
            corrs = sorted({letter.correlation_id for letter in read.letters if letter.correlation_id})
            known = self.link(corrs) if corrs else set()
            for letter in read.letters:
                body, content_type, redactions = self.redact(letter.body, letter.truncated)
                corr = letter.correlation_id
                linked = corr is not None and corr in known
                rows.append(
                    (
                        collector,
                        read.namespace,
                        read.queue,
                        letter.key,
                        corr,
                        letter.reason,
                        letter.source_queue,
                        letter.dead_lettered_at,
                        letter.deliveries,
                        body,
                        content_type,
                        letter.body_size,
                        int(letter.truncated),
                        redactions,
                        int(linked),
                        now,
                        now,
                    )
                )
        reads_seen = {(r[1], r[2]) for r in rows} | set(done)
        with self._lock, contextlib.closing(self._connect()) as conn, conn:
            conn.executemany(
                "INSERT INTO letters VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT "
                "(collector, namespace, queue, key) DO UPDATE SET corr=excluded.corr, reason=excluded.reason, "
                "source_queue=excluded.source_queue, dead_lettered_at=excluded.dead_lettered_at, "
                "deliveries=excluded.deliveries, body=excluded.body, content_type=excluded.content_type, "
                "body_size=excluded.body_size, truncated=excluded.truncated, redactions=excluded.redactions, "
                "linked=excluded.linked, last_seen=excluded.last_seen",
                rows,
            )
            for namespace, queue in done:  # read whole: what was not seen has left the DLQ
                conn.execute(
                    "DELETE FROM letters WHERE collector=? AND namespace=? AND queue=? AND last_seen < ?",
                    (collector, namespace, queue, now),
                )
            for namespace, queue in reads_seen:
                conn.execute(
                    "DELETE FROM letters WHERE collector=? AND namespace=? AND queue=? AND key NOT IN "
                    "(SELECT key FROM letters WHERE collector=? AND namespace=? AND queue=? ORDER BY last_seen DESC LIMIT ?)",
                    (collector, namespace, queue, collector, namespace, queue, MAX_ROWS_PER_QUEUE),
                )

    def forget_queues(self, collector: str, keep: set[tuple[str, str]]) -> None:
        """Drop the letters of DLQs the collector no longer reports (deleted, emptied and gone)."""
        with self._lock, contextlib.closing(self._connect()) as conn, conn:
            for ns, q in conn.execute(
                "SELECT DISTINCT namespace, queue FROM letters WHERE collector=?", (collector,)
            ).fetchall():
                if (ns, q) not in keep:
                    conn.execute(
                        "DELETE FROM letters WHERE collector=? AND namespace=? AND queue=?", (collector, ns, q)
                    )

    def list(
        self,
        queue: str | None = None,
        linked: bool | None = None,
        corr: str | None = None,
        collector: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("queue", queue), ("corr", corr), ("collector", collector)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if linked is not None:
            where.append("linked = ?")
            params.append(int(linked))
        # Column names from the literal tuple above; every value is a bound parameter.
        sql = "SELECT * FROM letters" + (" WHERE " + " AND ".join(where) if where else "")  # noqa: S608 -- the WHERE clauses are constants; values are bound parameters
        sql += " ORDER BY collector, namespace, queue, dead_lettered_at, key LIMIT ?"
        params.append(max(1, min(limit, 10_000)))
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_row(r) for r in rows]

    def dead_lettered(self, corrs: set[str]) -> set[str]:
        """Which of these correlation IDs have a message in a DLQ."""
        if not corrs:
            return set()
        ids = sorted(corrs)
        with contextlib.closing(self._connect()) as conn:
            found = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found |= {
                    r[0]
                    for r in conn.execute(f"SELECT DISTINCT corr FROM letters WHERE corr IN ({marks})", chunk)  # noqa: S608 -- the WHERE clauses are constants; values are bound parameters -- placeholders only
                }
        return found

    def counts(self) -> builtins.list[tuple[str, str, str, bool, int]]:
        """(collector, namespace, queue, linked, messages) for the metric."""
        with contextlib.closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT collector, namespace, queue, linked, COUNT(*) FROM letters GROUP BY collector, namespace, queue, linked"
            ).fetchall()
        return [(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]


def _row(r: sqlite3.Row) -> dict[str, Any]:
    body: bytes = r["body"]
    text = body.hex(" ") if r["content_type"] == "binary" else body.decode("utf-8", "replace")
    return {
        "collector": r["collector"],
        "namespace": r["namespace"],
        "queue": r["queue"],
        "key": r["key"],
        "correlation_id": r["corr"],
        "linked": bool(r["linked"]),
        "reason": r["reason"],
        "source_queue": r["source_queue"],
        "dead_lettered_at": r["dead_lettered_at"],
        "deliveries": r["deliveries"],
        "body": text,
        "content_type": r["content_type"],
        "body_size": r["body_size"],
        "truncated": bool(r["truncated"]),
        "redactions": r["redactions"],
        "first_seen": r["first_seen"],
        "last_seen": r["last_seen"],
    }


class DeadLetterMetric:
    """syncwatch_dead_letters{collector, namespace, queue, linked}: the dead letters last read,
    linked (the ledger knows the transaction) or not. Read from the book at scrape time."""

    def __init__(self, book: DeadLetterBook, registry: CollectorRegistry):
        self.book = book
        self.exported = True  # False on a replica that does not lead: its book is another's past
        registry.register(self)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "syncwatch_dead_letters",
            "Dead letters read from a DLQ (at most dead_letters.max_per_queue per cycle), by whether their "
            "correlation ID links to a ledger transaction.",
            labels=["collector", "namespace", "queue", "linked"],
        )
        if not self.exported:
            return
        try:
            counts = self.book.counts()
        except sqlite3.Error as exc:  # the scrape goes on without this family; say why
            log.warning("dead-letter book unreadable, syncwatch_dead_letters left out of this scrape: %s", exc)
            counts = []
        for collector, namespace, queue, linked, n in counts:
            g.add_metric([collector, namespace, queue, "true" if linked else "false"], n)
        yield g
