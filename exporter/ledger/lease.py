"""The leader lease of replicas on one PostgreSQL ledger: a row in leader_lease, taken and renewed on
the database's clock (now()), so the replicas' clocks never matter. Each new term bumps the epoch;
the leader's write transactions check (holder, epoch) with a row lock (PostgresStore._fenced), so a
paused old leader cannot commit after another replica took over.

A thread of its own renews every ttl/4 on a connection of its own: a slow batch on the writer's
connection never lets the lease lapse, and a lost database ends the term after at most ttl.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any

import psycopg

log = logging.getLogger("syncwatch.ledger")

LEASE_NAME = "ledger"

# A renewal extends the running term; it changes no key, so it never waits for the leader's own
# write transactions (their fence holds FOR KEY SHARE on the row).
_RENEW = (
    "UPDATE leader_lease SET expires_at = now() + make_interval(secs => %s) "
    "WHERE name = %s AND holder = %s AND epoch = %s RETURNING epoch"
)
# A new term replaces the row of an expired one (or of ours, given up): the DELETE waits for a write
# transaction of the old term still running, so no old commit lands after the new term begins.
_END_TERM = "DELETE FROM leader_lease WHERE name = %s AND (expires_at < now() OR holder = %s) RETURNING epoch"
_NEW_TERM = (
    "INSERT INTO leader_lease (name, holder, epoch, expires_at) "
    "VALUES (%s, %s, %s, now() + make_interval(secs => %s)) ON CONFLICT (name) DO NOTHING RETURNING epoch"
)
_RELEASE = "UPDATE leader_lease SET expires_at = now() WHERE name = %s AND holder = %s AND epoch = %s"


def holder_id() -> str:
    """hostname (the pod's name in Kubernetes), pid and a random part: unique per process start."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class Lease:
    """Keeps trying to hold the lease; `epoch()` is the term this process holds now, None when it
    holds none (or can no longer be sure it does: the last renewal is older than the ttl)."""

    def __init__(self, dsn: str, ttl: float, connect_timeout: int, name: str = LEASE_NAME):
        self.dsn = dsn
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        self.name = name
        self.holder = holder_id()
        self._epoch: int | None = None
        self._valid_until = 0.0  # time.monotonic() up to which the held term is certain
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    # ---- what the writer reads -------------------------------------------------------------------
    def epoch(self) -> int | None:
        with self._lock:
            if self._epoch is not None and time.monotonic() >= self._valid_until:
                log.warning("leader lease: not renewed within %.1fs, giving up the term", self.ttl)
                self._epoch = None
            return self._epoch

    def give_up(self, epoch: int) -> None:
        """The writer found the term over (its fence check failed): stop claiming it."""
        with self._lock:
            if self._epoch == epoch:
                self._epoch = None

    # ---- the renewal thread --------------------------------------------------------------------
    def start(self) -> None:
        self.renew()  # the first attempt before the writer starts: a single replica leads at once
        self._thread = threading.Thread(target=self._run, name="syncwatch-leader-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and hand the lease on at once (a clean shutdown needs no ttl wait)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl + self.connect_timeout)
        with self._lock:
            epoch, self._epoch = self._epoch, None
        if epoch is not None:
            try:
                self._c().execute(_RELEASE, (self.name, self.holder, epoch))
            except psycopg.Error as exc:
                log.warning("leader lease: release failed (it expires by itself): %s", _reason(exc))
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            self.renew()

    def renew(self) -> None:
        """One attempt to renew the held term, or else to begin a new one."""
        with self._lock:
            held = self._epoch
        started = time.monotonic()
        try:
            epoch = self._renew(held) if held is not None else None
            if epoch is None:
                epoch = self._new_term()
        except psycopg.Error as exc:
            self._drop_broken()
            if held is not None:
                log.warning("leader lease: renewal failed: %s", _reason(exc))
            return  # the term (if any) lasts until _valid_until; epoch() ends it then
        with self._lock:
            if epoch is None:
                if self._epoch is not None:
                    log.warning("leader lease: another replica holds it now")
                self._epoch = None
                return
            if self._epoch != epoch:
                log.info("leader lease: this replica (%s) leads, epoch %d", self.holder, epoch)
            self._epoch = epoch
            self._valid_until = started + self.ttl  # the database's expiry is later than this

    def _renew(self, held: int) -> int | None:
        row = self._c().execute(_RENEW, (self.ttl, self.name, self.holder, held)).fetchone()
        return None if row is None else int(row[0])

    def _new_term(self) -> int | None:
        conn = self._c()
        with conn.transaction():
            ended = conn.execute(_END_TERM, (self.name, self.holder)).fetchone()
            epoch = 1 if ended is None else int(ended[0]) + 1  # no row at all: the first term
            row = conn.execute(_NEW_TERM, (self.name, self.holder, epoch, self.ttl)).fetchone()
        return None if row is None else int(row[0])

    def _c(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            timeout_ms = int(self.ttl * 1000 / 2)  # an answer later than that is no use to the term
            conn = self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                options=f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
                application_name="syncwatch-lease",
                tcp_user_timeout=timeout_ms,
            )
        return conn

    def _drop_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            conn.close()
            self._conn = None


def _reason(exc: psycopg.Error) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
