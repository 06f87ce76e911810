"""The built-in `sql` reconciler: read-only queries against PostgreSQL (asyncpg), MySQL/MariaDB
(asyncmy) and SQLite files (the standard library's sqlite3, in a thread), one connection per database per run, inside a read-only repeatable-read transaction with
a statement timeout. The source side is keyset-paginated on the ID; the destination is looked up by
the IDs of each source page, so neither side is ever read whole into memory.

The user's query is wrapped as a subquery: `SELECT q.id, q.changed_at FROM (<query>) AS q WHERE q.id > ?
ORDER BY q.id LIMIT ?`; it names the window as :window_start and :window_end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from syncwatch.reconcile.base import DestinationRow, Reconciler, ReconcilerSettings, SourceRow
from syncwatch.reconcile.sql_dialects import Connection, MySQL, Postgres, SQLite
from syncwatch.reconcile.sql_settings import DatabaseSettings, SqlFlowSettings, SqlSettings
from syncwatch.reconcile.sql_values import destination_rows, source_rows

# Re-exported: the reference generator and the entry point import these from here.
__all__ = ["DatabaseSettings", "SqlFlowSettings", "SqlReconciler", "SqlSettings"]


class SqlReconciler(Reconciler):
    Settings = SqlSettings
    settings: SqlSettings

    def __init__(self, settings: ReconcilerSettings, environ: Mapping[str, str] | None = None):
        assert isinstance(settings, SqlSettings)
        super().__init__(settings)
        import os

        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self._conns: dict[str, Connection] = {}

    def _connection(self, name: str) -> Connection:
        db = self.settings.databases[name]
        kinds: dict[str, type[Postgres | MySQL | SQLite]] = {
            "postgresql": Postgres,
            "mysql": MySQL,
            "sqlite": SQLite,
        }
        return kinds[db.kind](name, db, self.settings.statement_timeout)

    async def open(self) -> None:
        await self.close()
        used = {side.database for flow in self.settings.flows.values() for side in (flow.source, flow.destination)}
        for name in sorted(used):
            conn = self._connection(name)
            await conn.open(self.settings.databases[name].password(self.environ))
            self._conns[name] = conn

    async def close(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.close()

    @staticmethod
    def _window(conn: Connection, start: float, end: float) -> dict[str, Any]:
        if isinstance(conn, SQLite):  # SQLite has no time type: unix seconds
            return {"window_start": start, "window_end": end}
        if isinstance(conn, MySQL):  # MySQL has no zone on DATETIME: the database's own time zone, naive
            return {
                "window_start": datetime.fromtimestamp(start, conn.tz).replace(tzinfo=None),
                "window_end": datetime.fromtimestamp(end, conn.tz).replace(tzinfo=None),
            }
        return {"window_start": datetime.fromtimestamp(start, UTC), "window_end": datetime.fromtimestamp(end, UTC)}

    async def source_pages(self, flow: str, start: float, end: float) -> AsyncIterator[list[SourceRow]]:
        spec = self.settings.flows[flow].source
        conn = self._conns[spec.database]
        window = self._window(conn, start, end)
        limit = self.settings.batch_size
        after: Any = None
        first = True
        while True:
            sql, order = conn.source_sql(spec.query, first)
            values = {**window, "limit": limit, "after": after}
            rows = await conn.fetch(sql, [values[n] for n in order])
            page = await asyncio.to_thread(
                source_rows, rows, conn.tz, isinstance(conn, SQLite)
            )  # a page of checks, off the loop
            if page:
                yield page
            if len(rows) < limit:
                return
            after, first = rows[-1][0], False

    async def destination_lookup(self, flow: str, ids: list[str]) -> list[DestinationRow]:
        spec = self.settings.flows[flow].destination
        conn = self._conns[spec.database]
        rows = await conn.lookup(spec.query, ids, {})
        return await asyncio.to_thread(destination_rows, rows, conn.tz, isinstance(conn, SQLite))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "sql",
            "name": self.name,
            "databases": {name: f"{db.kind} {db.target()}" for name, db in self.settings.databases.items()},
        }
