"""The read side of the ledger (store.py is the write side): what the query API, the web view, the
reconcilers and the dead-letter links ask of it, on whichever backend holds it. `open_queries` is the
one place that picks the backend; the answers are shaped in read_model.py, so both give the same JSON.

Readers are called from worker threads (asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from syncwatch.config.errors import SyncwatchError
from syncwatch.config.models import Config


class LedgerUnavailable(SyncwatchError):
    """The ledger could not be read just now (its database is down, unreachable or too slow): the
    caller answers 503 and may retry. The message names the reason, never the DSN."""


class LedgerReader(Protocol):
    """Read-only queries of the ledger. Each call sees committed rows only and raises
    LedgerUnavailable when the backend cannot answer; a bad cursor raises read_model.BadCursor."""

    def timeline(self, corr: str) -> dict[str, Any] | None:
        """Everything known about one correlation ID, per (destination, flow); None when nothing is."""

    def timelines(self, corrs: list[str]) -> dict[str, dict[str, Any]]:
        """timeline() of each of these correlation IDs, in one read (for a page of IDs, a few
        hundred); IDs the ledger does not know are absent."""

    def states_of(self, flow: str, corrs: list[str]) -> dict[str, str]:
        """The state (pending, overdue, confirmed, failed, expired) of each of these correlation IDs
        in `flow`; IDs never seen are absent. Several destinations: the least settled state wins."""

    def reconciliation(
        self, state: str, flow: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a reconciliation list (read_model.STATES) and the cursor of the next page."""


def open_queries(config: Config, clock: Callable[[], float] = time.time) -> LedgerReader:
    """The reader of the configured ledger (storage.backend). A PostgreSQL DSN that cannot be read
    fails here, naming the key; the database itself is only reached by the first query."""
    if config.storage.backend == "postgresql":
        from syncwatch.ledger.postgres_reader import PostgresQueries  # psycopg only when it is used

        return PostgresQueries(config, clock)
    from syncwatch.ledger.queries import LedgerQueries

    return LedgerQueries(config.storage.ledger_path, clock)


def ledger_location(config: Config) -> str:
    """Where the ledger lives, fit to print: the SQLite file, or which setting holds the DSN (the
    DSN itself holds a password and is never shown)."""
    storage = config.storage
    if storage.backend != "postgresql":
        return str(storage.ledger_path)
    pg = storage.postgresql
    if pg is not None and pg.dsn_file is not None:
        return f"PostgreSQL (DSN in storage.postgresql.dsn_file {pg.dsn_file})"
    if pg is not None and pg.dsn_env is not None:
        return f"PostgreSQL (DSN in environment variable {pg.dsn_env})"
    return "PostgreSQL"
