"""The built-in `sql` reconciler: read-only queries against PostgreSQL (asyncpg), MySQL/MariaDB
(asyncmy) and SQLite files (the standard library's sqlite3, in a thread), one connection per database per run, inside a read-only repeatable-read transaction with
a statement timeout. The source side is keyset-paginated on the ID; the destination is looked up by
the IDs of each source page, so neither side is ever read whole into memory.

The user's query is wrapped as a subquery: `SELECT q.id, q.changed_at FROM (<query>) AS q WHERE q.id > ?
ORDER BY q.id LIMIT ?`; it names the window as :window_start and :window_end.
"""

from __future__ import annotations

import abc
import asyncio
import json
import math
import re
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from syncwatch.collectors.base import check_env_name
from syncwatch.config.durations import Duration
from syncwatch.reconcile.base import (
    DestinationRow,
    ReconcileError,
    Reconciler,
    ReconcilerSettings,
    SourceRow,
)

MAX_ID_CHARS = 256
_PARAM = re.compile(r"(?<![:\w]):(window_start|window_end)\b")
_SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # postgresql://user@host:5432/dbname or mysql://user@host:3306/dbname (mariadb:// too), or
    # sqlite:////absolute/path.db (opened read-only; the window is passed as unix seconds).
    url: str
    # The password comes from an environment variable or a file (a mounted Kubernetes Secret),
    # never from the URL or the config file; the file is read again at each run.
    password_env: str | None = None
    password_file: Path | None = None
    # Time zone of timestamps stored without one.
    timezone: str = "UTC"
    connect_timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                "expected postgresql://user@host:port/database, mysql://user@host:port/database or sqlite:////path.db"
            )
        if parts.scheme == "sqlite":
            if parts.netloc or not parts.path.startswith("//") or len(parts.path) < 3:
                raise ValueError("expected sqlite:////absolute/path.db (three slashes, then the absolute path)")
            return v
        if parts.password is not None:
            raise ValueError("a password in the URL: use password_env or password_file (the value is not shown)")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected postgresql://user@host:port/database: a host and a database name are needed")
        try:
            parts.port  # noqa: B018 -- raises on a bad port
        except ValueError:
            raise ValueError("the port is not a number") from None
        return v

    _env = field_validator("password_env")(check_env_name)

    @field_validator("password_env")
    @classmethod
    def _env_set(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        context = info.context if isinstance(info.context, dict) else {}
        environ = context.get("environ")
        if environ is None:
            import os

            environ = os.environ
        if not environ.get(v):
            raise ValueError(f"environment variable {v} is not set or empty")
        return v

    @field_validator("password_file")
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} does not exist or is not a file")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _one_password(self) -> DatabaseSettings:
        if self.password_env and self.password_file:
            raise ValueError("password_env: set password_env or password_file, not both")
        return self

    @property
    def kind(self) -> Literal["postgresql", "mysql", "sqlite"]:
        kind = _SCHEMES[urlsplit(self.url).scheme]
        return "postgresql" if kind == "postgresql" else "sqlite" if kind == "sqlite" else "mysql"

    def target(self) -> str:
        """host:port/database, for messages (the URL has no secret, but this is shorter)."""
        p = urlsplit(self.url)
        if self.kind == "sqlite":
            return p.path[1:]
        return f"{p.hostname}:{p.port or self.default_port}/{p.path.strip('/')}"

    @property
    def default_port(self) -> int:
        return 5432 if self.kind == "postgresql" else 3306

    def password(self, environ: Mapping[str, str]) -> str | None:
        if self.password_env:
            return environ.get(self.password_env) or None
        if self.password_file:
            try:
                return self.password_file.read_text().strip() or None
            except OSError as exc:
                raise ReconcileError(
                    "unauthorized", f"cannot read password_file {self.password_file}: {exc.strerror}"
                ) from None
        return None


class QuerySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database: str
    query: str

    @field_validator("query")
    @classmethod
    def _select(cls, v: str) -> str:
        text = v.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", text):
            raise ValueError("expected one SELECT (or WITH ... SELECT) statement")
        if ";" in text:
            raise ValueError("expected one statement: no `;` inside the query")
        return text


class SqlFlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Columns `id` and `changed_at`; it must use :window_start and :window_end.
    source: QuerySettings
    # Columns `id` (the source's ID), `record_id` (the destination's own) and `arrived_at` (may be NULL).
    destination: QuerySettings
    # How the source ID appears as a correlation ID in spans, e.g. "order-{id}".
    correlation_id: str = "{id}"

    @field_validator("correlation_id")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count("{id}") != 1 or v.replace("{id}", "").count("{") or v.replace("{id}", "").count("}"):
            raise ValueError("expected a template with {id} once, e.g. order-{id}")
        return v

    @field_validator("source")
    @classmethod
    def _window(cls, v: QuerySettings) -> QuerySettings:
        names = set(_PARAM.findall(v.query))
        if names != {"window_start", "window_end"}:
            raise ValueError("query: the source query must select by :window_start and :window_end")
        return v

    @field_validator("destination")
    @classmethod
    def _no_window(cls, v: QuerySettings) -> QuerySettings:
        if _PARAM.search(v.query):
            raise ValueError(
                "query: the destination query is looked up by ID; it takes no :window_start or :window_end"
            )
        return v


class SqlSettings(ReconcilerSettings):
    type: Literal["sql"] = "sql"
    databases: dict[str, DatabaseSettings] = Field(min_length=1)
    flows: dict[str, SqlFlowSettings] = Field(min_length=1)
    # Source IDs per page, and per destination lookup.
    batch_size: int = Field(5000, ge=10, le=100_000)
    statement_timeout: Duration = 30.0

    @model_validator(mode="after")
    def _databases_known(self) -> SqlSettings:
        for name, flow in self.flows.items():
            for side in ("source", "destination"):
                db = getattr(flow, side).database
                if db not in self.databases:
                    known = ", ".join(sorted(self.databases))
                    raise ValueError(f"flows: {name}.{side}.database {db!r} is not one of databases ({known})")
        return self

    def flow_names(self) -> list[str]:
        return list(self.flows)

    def correlation_template(self, flow: str) -> str:
        return self.flows[flow].correlation_id


# ---- values ----------------------------------------------------------------------------------


def _id_text(value: Any, column: str, side: str) -> str:
    if isinstance(value, str):
        if 0 < len(value) <= MAX_ID_CHARS:
            return value
        raise ReconcileError(
            "bad_result", f"{side} query: column {column} holds an empty text or one over {MAX_ID_CHARS} characters"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    shown = "NULL" if value is None else type(value).__name__
    raise ReconcileError(
        "bad_result", f"{side} query: column {column} returned {shown}, not an ID (an integer, text or UUID)"
    )


def _epoch(
    value: Any, tz: ZoneInfo, column: str, side: str, nullable: bool = False, text: bool = False
) -> float | None:
    if text and isinstance(value, str):  # SQLite keeps times as text (ISO 8601) as often as numbers
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ReconcileError(
                "bad_result", f"{side} query: column {column} holds text that is not an ISO 8601 time"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if value is None and nullable:
        return None
    shown = "NULL" if value is None else type(value).__name__
    raise ReconcileError("bad_result", f"{side} query: column {column} returned {shown}, not a timestamp")


def _positional(query: str, style: Literal["postgresql", "mysql", "sqlite"], first: int = 1) -> tuple[str, list[str]]:
    """`:window_start`/`:window_end` as the driver's placeholders; returns the SQL and the order of names."""
    order: list[str] = []
    if style == "mysql":
        query = query.replace("%", "%%")  # the driver formats the query with %: a LIKE 'a%' stays literal

    def sub(m: re.Match[str]) -> str:
        if style != "postgresql":
            order.append(m.group(1))
            return "%s" if style == "mysql" else "?"
        if m.group(1) not in order:
            order.append(m.group(1))
        return f"${first + order.index(m.group(1))}"

    return _PARAM.sub(sub, query), order


# ---- connections -----------------------------------------------------------------------------


class _Connection(abc.ABC):
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


class _Postgres(_Connection):
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
            return ReconcileError("unauthorized", f"{where}: permission denied: {_first_line(exc)}")
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return ReconcileError("unreachable", f"{where}: database does not exist")
        if isinstance(exc, asyncpg.PostgresError):
            return ReconcileError("query_error", f"{where}: {exc.sqlstate}: {_first_line(exc)}")
        if isinstance(exc, TimeoutError):
            return ReconcileError("timeout", f"{where}: no answer within {self.settings.connect_timeout:g}s")
        if isinstance(exc, OSError | socket.gaierror | asyncpg.exceptions.InterfaceError | ConnectionError):
            return ReconcileError("unreachable", f"{where}: {type(exc).__name__}: {_first_line(exc)}")
        return ReconcileError("other", f"{where}: {type(exc).__name__}: {_first_line(exc)}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            rows = await asyncio.wait_for(self.conn.fetch(sql, *params), self.statement_timeout + 5)
        except BaseException as exc:
            raise self.translate(exc) from None
        return [tuple(r) for r in rows]

    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        sql, order = _positional(query, "postgresql")
        n = len(order)
        after = "" if first_page else f" WHERE q.id > ${n + 2}"
        # Numbered placeholders: the values go window first, then limit ($n+1), then after ($n+2).
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT ${n + 1}", [
            *order,
            "limit",
            *([] if first_page else ["after"]),
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, order = _positional(query, "postgresql")
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
            values = [u for u in (_uuid(i) for i in ids) if u is not None]
        params = [window[name] for name in order] + [values]
        try:
            rows = await asyncio.wait_for(stmt.fetch(*params), self.statement_timeout + 5)
        except BaseException as exc:
            raise self.translate(exc) from None
        return [tuple(r) for r in rows]


class _MySQL(_Connection):
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
            return ReconcileError("unreachable", f"{where}: {_first_line(exc)}")
        if isinstance(exc, MySQLError):
            return ReconcileError("query_error", f"{where}: {_first_line(exc)}")
        if isinstance(exc, TimeoutError):
            return ReconcileError("timeout", f"{where}: no answer within {self.settings.connect_timeout:g}s")
        if isinstance(exc, OSError | ConnectionError):
            return ReconcileError("unreachable", f"{where}: {type(exc).__name__}: {_first_line(exc)}")
        return ReconcileError("other", f"{where}: {type(exc).__name__}: {_first_line(exc)}")

    async def fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with self.conn.cursor() as cur:
                await asyncio.wait_for(cur.execute(sql, tuple(params)), self.statement_timeout + 5)
                return list(await cur.fetchall())
        except BaseException as exc:
            raise self.translate(exc) from None

    def source_sql(self, query: str, first_page: bool) -> tuple[str, list[str]]:
        sql, order = _positional(query, "mysql")
        after = "" if first_page else " WHERE q.id > %s"
        # Placeholders in order of appearance: the key before the limit.
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT %s", [
            *order,
            *([] if first_page else ["after"]),
            "limit",
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, order = _positional(query, "mysql")
        marks = ",".join(["%s"] * len(ids))
        full = f"SELECT d.id, d.record_id, d.arrived_at FROM ({sql}) AS d WHERE d.id IN ({marks})"
        return await self.fetch(full, [window[name] for name in order] + list(ids))


class _SQLite(_Connection):
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
        text = _first_line(exc)
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
        sql, order = _positional(query, "sqlite")
        after = "" if first_page else " WHERE q.id > ?"
        return f"SELECT q.id, q.changed_at FROM ({sql}) AS q{after} ORDER BY q.id LIMIT ?", [
            *order,
            *([] if first_page else ["after"]),
            "limit",
        ]

    async def lookup(self, query: str, ids: list[str], window: dict[str, datetime]) -> list[tuple[Any, ...]]:
        sql, _ = _positional(query, "sqlite")
        full = (
            f"SELECT d.id, d.record_id, d.arrived_at FROM ({sql}) AS d WHERE d.id IN (SELECT value FROM json_each(?))"
        )
        return await self.fetch(full, [json.dumps(ids)])


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _source_rows(rows: list[tuple[Any, ...]], tz: ZoneInfo, text: bool = False) -> list[SourceRow]:
    page: list[SourceRow] = []
    for row in rows:
        if len(row) != 2:
            raise ReconcileError("bad_result", "source query: expected the columns id and changed_at")
        changed = _epoch(row[1], tz, "changed_at", "source", text=text)
        assert changed is not None
        page.append(SourceRow(_id_text(row[0], "id", "source"), changed))
    return page


def _destination_rows(rows: list[tuple[Any, ...]], tz: ZoneInfo, text: bool = False) -> list[DestinationRow]:
    out = []
    for row in rows:
        if len(row) != 3:
            raise ReconcileError("bad_result", "destination query: expected the columns id, record_id and arrived_at")
        out.append(
            DestinationRow(
                _id_text(row[0], "id", "destination"),
                _id_text(row[1], "record_id", "destination"),
                _epoch(row[2], tz, "arrived_at", "destination", nullable=True, text=text),
            )
        )
    return out


# ---- the plug-in -----------------------------------------------------------------------------


class SqlReconciler(Reconciler):
    Settings = SqlSettings
    settings: SqlSettings

    def __init__(self, settings: ReconcilerSettings, environ: Mapping[str, str] | None = None):
        assert isinstance(settings, SqlSettings)
        super().__init__(settings)
        import os

        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self._conns: dict[str, _Connection] = {}

    def _connection(self, name: str) -> _Connection:
        db = self.settings.databases[name]
        kinds: dict[str, type[_Postgres | _MySQL | _SQLite]] = {
            "postgresql": _Postgres,
            "mysql": _MySQL,
            "sqlite": _SQLite,
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
    def _window(conn: _Connection, start: float, end: float) -> dict[str, Any]:
        if isinstance(conn, _SQLite):  # SQLite has no time type: unix seconds
            return {"window_start": start, "window_end": end}
        if isinstance(conn, _MySQL):  # MySQL has no zone on DATETIME: the database's own time zone, naive
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
                _source_rows, rows, conn.tz, isinstance(conn, _SQLite)
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
        return await asyncio.to_thread(_destination_rows, rows, conn.tz, isinstance(conn, _SQLite))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "sql",
            "name": self.name,
            "databases": {name: f"{db.kind} {db.target()}" for name, db in self.settings.databases.items()},
        }
