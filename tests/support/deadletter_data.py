"""Dead-letter test data shared by the RabbitMQ, SQS and API dead-letter tests: a card number that must
come out redacted, and a ledger holding the given orders as overdue transactions."""

from __future__ import annotations

import sqlite3
import time

from syncwatch.config.models import Config
from syncwatch.ledger.schema import DDL

CARD = "4111111111111111"


def ledger_with(config: Config, *corrs: str) -> None:
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(config.storage.ledger_path)
    conn.executescript(DDL)
    now = time.time()
    for corr in corrs:
        conn.execute(
            "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline) VALUES (?,?,?,?,?,?,?)",
            (corr, "erp", "orders", "storefront", now - 600, now - 600, now - 300),
        )
    conn.commit()
    conn.close()
