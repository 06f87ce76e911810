"""Settings of the `sql` reconciler: the databases it reads and each flow's two queries.

Checked at start, each error naming its key; a password is only ever named here (its
environment variable or file), never held in the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from syncwatch.collectors.base import check_env_name
from syncwatch.config.durations import Duration
from syncwatch.reconcile.base import ReconcileError, ReconcilerSettings

MAX_ID_CHARS = 256
PARAM = re.compile(r"(?<![:\w]):(window_start|window_end)\b")
SCHEMES = {
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
        if parts.scheme not in SCHEMES:
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
        kind = SCHEMES[urlsplit(self.url).scheme]
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
        names = set(PARAM.findall(v.query))
        if names != {"window_start", "window_end"}:
            raise ValueError("query: the source query must select by :window_start and :window_end")
        return v

    @field_validator("destination")
    @classmethod
    def _no_window(cls, v: QuerySettings) -> QuerySettings:
        if PARAM.search(v.query):
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
