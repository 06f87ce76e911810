"""`syncwatch transactions list|show`: clear errors against a real sidecar, and the rendering of
tables and timelines (the full round trip is in test_snapshots_roundtrip.py)."""

import subprocess
import sys

from sidecar import ROOT, free_port, transactions_cli

from syncwatch.cli.transactions import render_list, render_timeline

TOKEN = "cli-token-0123456789"


def cli(sidecar, *args, token=TOKEN):
    return transactions_cli(sidecar, *args, token=token)


def test_cli_errors_are_clear(make_sidecar):
    sc = make_sidecar({"api": {"token": TOKEN}})
    wrong = cli(sc, "show", "x", token="nope")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    missing = cli(sc, "show", "no-such-id")
    assert missing.returncode == 1 and "404" in missing.stderr and "no-such-id" in missing.stderr
    empty = cli(sc, "list", "--state", "failed")
    assert empty.returncode == 0 and empty.stdout.strip() == "no failed transactions"
    down = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncwatch",
            "transactions",
            "list",
            "--state",
            "overdue",
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--token",
            TOKEN,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "cannot reach syncwatch" in down.stderr


def test_list_table_has_one_aligned_row_per_transaction():
    items = [
        {
            "correlation_id": "ord-1",
            "flow": "orders",
            "source": "storefront",
            "destination": "erp",
            "state": "overdue",
            "changed_at": "2027-01-15T08:00:00.000Z",
            "deadline": "2027-01-15T08:05:00.000Z",
            "overdue_seconds": 5400,
            "attempts": 3,
            "last_code": "429",
        },
        {
            "correlation_id": "a-much-longer-correlation-id",
            "flow": "orders",
            "source": None,
            "destination": "erp",
            "state": "overdue",
            "changed_at": None,
            "deadline": "2027-01-15T08:06:00.000Z",
            "overdue_seconds": 30,
            "attempts": 0,
            "last_code": None,
        },
    ]
    lines = render_list("overdue", items).splitlines()
    assert lines[0].startswith("CORRELATION ID                ") and lines[1].startswith("-" * 28)
    assert lines[2].split() == [
        "ord-1",
        "orders",
        "storefront",
        "erp",
        "overdue",
        "2027-01-15",
        "08:00:00.000",
        "2027-01-15",
        "08:05:00.000",
        "1.5h",
        "3",
        "429",
    ]
    assert lines[3].split()[-3:] == ["30.0s", "0", "-"]
    assert lines[2].index("orders") == lines[3].index("orders")
    assert lines[-1] == "2 overdue transaction(s)"


def test_timeline_shows_events_in_order_with_pretty_payloads():
    snap = {
        "direction": "request",
        "time": "2027-01-15T08:00:01.000Z",
        "size": 120,
        "body_hmac_sha256": "ab" * 32,
        "redactions": 1,
        "truncated": True,
        "body_encoding": "json",
        "body": {"card": "[REDACTED:card:0011aabb]"},
    }
    record = {
        "correlation_id": "ord-1",
        "destinations": [
            {
                "destination": "erp",
                "flow": "orders",
                "source": "storefront",
                "state": "overdue",
                "lag_seconds": None,
                "changed_at": "2027-01-15T08:00:00.000Z",
                "deadline": "2027-01-15T08:05:00.000Z",
                "duplicate": False,
                "attempts": [
                    {
                        "attempt": 2,
                        "start": "2027-01-15T08:00:09.000Z",
                        "code": "503",
                        "error": "http_503",
                        "backoff_seconds": 7.5,
                        "snapshots": [],
                    },
                    {
                        "attempt": 1,
                        "start": "2027-01-15T08:00:01.000Z",
                        "code": None,
                        "error": "timeout",
                        "backoff_seconds": None,
                        "snapshots": [snap],
                    },
                ],
                "confirmations": [],
                "failures": [],
                "snapshots": [],
            }
        ],
        "unlinked_snapshots": [],
    }
    out = render_timeline(record).splitlines()
    assert out[0] == "transaction ord-1"
    assert out[2] == "storefront -> erp  flow orders  state OVERDUE"
    assert "source changed" in out[3] and "attempt 1: no response (timeout)" in out[4]
    assert (
        out[5].strip()
        == "REQUEST payload at 2027-01-15 08:00:01.000 (120 bytes, hmac abababababababab…, 1 redacted, TRUNCATED)"
    )
    assert out[6:9] == ["        {", '          "card": "[REDACTED:card:0011aabb]"', "        }"]
    assert "attempt 2: 503 (http_503)  after 7.500s backoff" in out[9]
    assert out[10].endswith("deadline (MISSED)")
