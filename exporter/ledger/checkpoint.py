"""Copies the ledger's write-ahead log back into the database file, from a thread of its own.

SQLite's automatic checkpoint runs inside the committing transaction, so the writer would stop
taking spans while pages are copied and the file is synced. With correlation IDs that arrive in
random order (UUIDs), every closed transaction dirties its own index page and checkpoints come
often: in a sustained run with UUID IDs (bench/ingest.py --sustained), intake sank to ~52-58k
spans/s as the ledger grew, the sidecar 12-17 % idle waiting for fsync. A PASSIVE checkpoint from another
connection never blocks the writer; the writer keeps an automatic checkpoint only as a backstop
(sqlite_store.WAL_AUTOCHECKPOINT_PAGES) in case this thread falls behind or fails.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("syncwatch.ledger")

CHECKPOINT_SECONDS = 1.0


class WalCheckpointer:
    def __init__(self, path: Path, interval: float = CHECKPOINT_SECONDS):
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="syncwatch-ledger-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        from syncwatch.ledger.sqlite_store import connect  # the same pragmas as the writer's connection

        conn = connect(self.path)
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    # Nothing is lost: the WAL only grows until the writer's backstop checkpoint runs.
                    self.failures += 1
                    log.warning("ledger checkpoint failed (%d so far): %s", self.failures, exc)
        finally:
            conn.close()
