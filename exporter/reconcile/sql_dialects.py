"""One connection per database kind (PostgreSQL, MySQL/MariaDB, SQLite): open read-only,
run a query with a statement timeout, page the source and look up IDs on the destination.

Split from the reconciler: each dialect's driver quirks and error translation read on their own.
"""

from __future__ import annotations

import abc
import asyncio
import json
import re
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

from syncwatch.reconcile.base import ReconcileError
from syncwatch.reconcile.sql_settings import DatabaseSettings
from syncwatch.reconcile.sql_values import as_uuid, first_line, positional


class Connection(abc.ABC):
    def __init__(self, name: str, settings: DatabaseSettings, statement_timeout: float):
        self.name = name
        self.settings = settings
        self.statement_timeout = statement_timeout
        self.tz = ZoneInfo(settings.timezone)

    @abc.abstractmethod
    async def open(self, password: str | None) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        """The keyset-paginated page query, and the names of its parameters in the order the
        driver takes them (window_start, window_end, limit, after)."""

    @abc.abstractmethod
    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]: ...

    def where(self) -> str:
        return f"database {self.name} ({self.settings.target()})"


class Postgres(Connection):
    conn: Any = None

    async def open(self, password: str | None) -> None:
        import asyncpg

        p = urlsplit(self.settings.url)
        try:
            self.conn = await asyncpg.connect(
                host=p.hostname,
                port=p.port or 5432,
                user=unquote(p.username or "") or None,
                password=password,
                database=unquote(p.path.strip("/")),
                timeout=self.settings.connect_timeout,
                statement_cache_size=0,  # one run, a handful of statements; also safe behind PgBouncer
                server_settings={"application_name": "syncwatch-reconcile"},
            )
            await self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            await self.conn.execute(f"SET LOCAL statement_timeout = {max(1, int(self.statement_timeout * 1000))}")
        except BaseException as exc:
            await self.close()
            raise self.translate(exc) from None

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()

    def translate(self, exc: BaseException) -> BaseException:
        import asyncpg

        if isinstance(exc, ReconcileError | asyncio.CancelledError):
            return exc
        where = self.where()
        if isinstance(exc, asyncpg.QueryCanceledError):
            return ReconcileError(
                "timeout", f"{where}: query cancelled after statement_timeout {self.statement_timeout:g}s"
            )
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
            return ReconcileError("unauthorized", f"{where}: authentication failed ({exc.sqlstate})")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return ReconcileError("unauthorized", f"{where}: permission denied: {first_line(exc)}")
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return ReconcileError("unreachable", f"{where}: database does not exist")
        if isinstance(exc, asyncpg.PostgresError):
            return ReconcileError("query_error", f"{where}: {exc.sqlstate}: {first_line(exc)}")
        if isinstance(exc, TimeoutError):
            return ReconcileError("timeout", f"{where}: no answer within {self.settings.connect_timeout:g}s")
        if isinstance(exc, OSError | socket.gaierror | asyncpg.exceptions.InterfaceError | ConnectionError):
            return ReconcileError("unreachable", f"{where}: {type(exc).__name__}: {first_line(exc)}")
        return ReconcileError("other", f"{where}: {type(exc).__name__}: {first_line(exc)}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            rows = await asyncio.wait_for(self.conn.fetch(sql, *params), self.statement_timeout + 5)
        except BaseException as exc:
            raise self.translate(exc) from None
        return [tuple(r) for r in rows]

    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        sql, order = positional(query, "postgresql")
        n = len(order)
        after = "" if first_page else f" WHERE q.id > ${n + 2}"
        # Numbered placeholders: the values go window first, then limit ($n+1), then after ($n+2).
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT ${n + 1}", [
            *order,
            "limit",
            *([] if first_page else ["after"]),
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, order = positional(query, "postgresql")
        n = len(order)
        full = f"SELECT d.id, d.record_id, d.arrived_at FROM ({sql}) AS d WHERE d.id = ANY(${n + 1})"
        try:
            stmt = await asyncio.wait_for(self.conn.prepare(full), self.statement_timeout + 5)
            kind = stmt.get_parameters()[n].name.lstrip("_")
        except BaseException as exc:
            raise self.translate(exc) from None
        values: list[Any] = ids
        if kind in ("int2", "int4", "int8", "numeric"):
            values = [int(i) for i in ids if re.fullmatch(r"-?\d{1,19}", i)]
        elif kind == "uuid":
            values = [u for u in (as_uuid(i) for i in ids) if u is not None]
        params = [window[name] for name in order] + [values]
        try:
            rows = await asyncio.wait_for(stmt.fetch(*params), self.statement_timeout + 5)
        except BaseException as exc:
            raise self.translate(exc) from None
        return [tuple(r) for r in rows]


class MySQL(Connection):
    conn: Any = None

    async def open(self, password: str | None) -> None:
        import asyncmy

        p = urlsplit(self.settings.url)
        try:
            self.conn = await asyncio.wait_for(
                asyncmy.connect(
                    host=p.hostname or "",
                    port=p.port or 3306,
                    user=unquote(p.username or "") or None,
                    password=password or "",
                    database=unquote(p.path.strip("/")),
                    connect_timeout=self.settings.connect_timeout,
                    autocommit=False,
                    charset="utf8mb4",
                ),
                self.settings.connect_timeout + 1,
            )
            async with self.conn.cursor() as cur:
                await cur.execute("SELECT VERSION()")
                (version,) = await cur.fetchone()
                if "mariadb" in str(version).lower():
                    await cur.execute(f"SET SESSION max_statement_time = {max(0.001, self.statement_timeout):.3f}")
                else:
                    await cur.execute(f"SET SESSION max_execution_time = {max(1, int(self.statement_timeout * 1000))}")
                await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await cur.execute("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
        except BaseException as exc:
            await self.close()
            raise self.translate(exc) from None

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.ensure_closed(), 5)
            except Exception:
                conn.close()

    def translate(self, exc: BaseException) -> BaseException:
        from asyncmy.errors import MySQLError

        if isinstance(exc, ReconcileError | asyncio.CancelledError):
            return exc
        where = self.where()
        code = exc.args[0] if isinstance(exc, MySQLError) and exc.args else None
        if code in (1969, 3024):  # MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT
            return ReconcileError(
                "timeout", f"{where}: query stopped after statement_timeout {self.statement_timeout:g}s"
            )
        if code in (1044, 1045, 1142, 1143, 1227, 1698):
            return ReconcileError("unauthorized", f"{where}: access denied ({code})")
        if code == 1049:
            return ReconcileError("unreachable", f"{where}: database does not exist")
        if isinstance(code, int) and 2000 <= code < 3000:  # client errors: cannot connect, lost connection
            return ReconcileError("unreachable", f"{where}: {first_line(exc)}")
        if isinstance(exc, MySQLError):
            return ReconcileError("query_error", f"{where}: {first_line(exc)}")
        if isinstance(exc, TimeoutError):
            return ReconcileError("timeout", f"{where}: no answer within {self.settings.connect_timeout:g}s")
        if isinstance(exc, OSError | ConnectionError):
            return ReconcileError("unreachable", f"{where}: {type(exc).__name__}: {first_line(exc)}")
        return ReconcileError("other", f"{where}: {type(exc).__name__}: {first_line(exc)}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with self.conn.cursor() as cur:
                await asyncio.wait_for(cur.execute(sql, tuple(params)), self.statement_timeout + 5)
                return list(await cur.fetchall())
        except BaseException as exc:
            raise self.translate(exc) from None

    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        sql, order = positional(query, "mysql")
        after = "" if first_page else " WHERE q.id > %s"
        # Placeholders in order of appearance: the key before the limit.
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT %s", [
            *order,
            *([] if first_page else ["after"]),
            "limit",
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, order = positional(query, "mysql")
        marks = ",".join(["%s"] * len(ids))
        full = f"SELECT d.id, d.record_id, d.arrived_at FROM ({sql}) AS d WHERE d.id IN ({marks})"
        return await self.fetch(full, [window[name] for name in order] + list(ids))


class SQLite(Connection):
    """A SQLite file, read-only, in a worker thread; the statement timeout interrupts the query."""

    conn: Any = None

    async def open(self, password: str | None) -> None:
        import sqlite3
        from urllib.parse import quote

        path = quote(self.settings.target())
        try:
            self.conn = await asyncio.to_thread(
                sqlite3.connect,
                f"file:{path}?mode=ro",
                uri=True,
                timeout=self.settings.connect_timeout,
                check_same_thread=False,
            )
            await asyncio.to_thread(self.conn.execute, "BEGIN")  # one read snapshot for the run
        except BaseException as exc:
            await self.close()
            raise self.translate(exc) from None

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    def translate(self, exc: BaseException) -> BaseException:
        import sqlite3

        if isinstance(exc, ReconcileError | asyncio.CancelledError):
            return exc
        where = self.where()
        text = first_line(exc)
        if isinstance(exc, sqlite3.OperationalError) and "interrupted" in text:
            return ReconcileError(
                "timeout", f"{where}: query stopped after statement_timeout {self.statement_timeout:g}s"
            )
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
            return ReconcileError("unreachable", f"{where}: {text}")
        if isinstance(exc, sqlite3.DatabaseError):
            return ReconcileError("query_error", f"{where}: {text}")
        return ReconcileError("other", f"{where}: {type(exc).__name__}: {text}")

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        import time

        deadline = time.monotonic() + self.statement_timeout
        self.conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            return [tuple(r) for r in self.conn.execute(sql, tuple(params)).fetchall()]
        finally:
            self.conn.set_progress_handler(None, 0)

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return await asyncio.to_thread(self._run, sql, params)
        except BaseException as exc:
            raise self.translate(exc) from None

    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        sql, order = positional(query, "sqlite")
        after = "" if first_page else " WHERE q.id > ?"
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT ?", [
            *order,
            *([] if first_page else ["after"]),
            "limit",
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, _ = positional(query, "sqlite")
        full = (
            f"SELECT d.id, d.record_id, d.arrived_at FROM ({sql}) AS d WHERE d.id IN (SELECT value FROM json_each(?))"
        )
        return await self.fetch(full, [json.dumps(ids)])
