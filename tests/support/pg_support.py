"""A uniquely named PostgreSQL database on the machine's server (127.0.0.1:5432, user postgres,
trust auth), created for a test module and dropped afterwards, and syncwatch config pointing at it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_HOST, PG_PORT = "127.0.0.1", 5432


def dsn(db: str, port: int = PG_PORT) -> str:
    return f"postgresql://postgres@{PG_HOST}:{port}/{db}"


@contextmanager
def scratch_database(prefix: str = "syncwatch_test", options: str = "") -> Iterator[str]:
    """`options`: more CREATE DATABASE options, e.g. a collation other than the server's default."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" {options}')
    try:
        yield name
    finally:
        with psycopg.connect(dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def storage_config(db: str, workdir: Path, port: int = PG_PORT) -> dict:
    """storage.* for syncwatch on `db`: the DSN in a file, as a mounted Secret would hold it."""
    workdir.mkdir(parents=True, exist_ok=True)
    dsn_file = workdir / "pg.dsn"
    dsn_file.write_text(dsn(db, port) + "\n")
    return {"backend": "postgresql", "postgresql": {"dsn_file": str(dsn_file), "statement_timeout": "5s"}}


def reset(db: str) -> None:
    """Empty the ledger tables between tests (the schema stays)."""
    with psycopg.connect(dsn(db), autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('open_tx')").fetchone() != (None,):
            conn.execute("TRUNCATE open_tx, closed_tx, applies")
        if conn.execute("SELECT to_regclass('handoff')").fetchone() != (None,):
            conn.execute("TRUNCATE handoff, leader_lease")
        if conn.execute("SELECT to_regclass('handoff_rejected')").fetchone() != (None,):
            conn.execute("TRUNCATE handoff_rejected")
