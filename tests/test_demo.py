"""`syncwatch demo` in short mode: syncwatch must find exactly the simulator's ground truth
(measured at the ERP and in the DLQ, not taken from the fault plan): every lost order overdue,
every dead-lettered record failed, every double-applied adjustment a duplicate, nothing else,
and the DLQ depth as the collector sampled it from the queue; the reconciler finds every order in
the storefront's database that is not in the ERP's, and the customers audit finds the one write
conflict the ERP's nightly sync makes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from syncwatch.demo.report import matches
from syncwatch.demo.runner import run_demo
from syncwatch.demo.scenario import DemoSettings
from syncwatch.demo.storefront import schedule

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_short_demo_on_sqs_finds_exactly_the_ground_truth(tmp_path):
    out = io.StringIO()
    result = asyncio.run(run_demo(DemoSettings.short(), data_dir=tmp_path / "demo", out=out))
    truth, found = result.truth, result.findings
    report = out.getvalue()

    # The run has something of each kind to find (faults planned, plus 429 exhaustion on top).
    assert truth.lost and truth.dead_lettered and truth.duplicates, report
    assert all(truth.sent[i] == "orders" for i in truth.lost)
    assert all(truth.sent[i] == "inventory" for i in truth.duplicates)

    assert found.overdue == truth.lost, report
    assert found.failed == truth.dead_lettered, report
    assert found.duplicates == truth.duplicates, report
    assert found.pending == set(), report  # nothing left open that is not a lost order
    assert found.dlq_depth == truth.dlq_depth > 0, report
    # Each dead-lettered record is in the DLQ (which may also hold redelivered copies of applied ones).
    assert truth.dlq_depth >= len(truth.dead_lettered)
    # The metrics say the same as the reconciliation lists.
    assert found.overdue_metric == len(truth.lost)
    assert found.failed_metric == len(truth.dead_lettered)
    assert found.duplicates_metric == len(truth.duplicates)
    assert matches(truth, found)

    # Reconciliation against the two SQLite databases: every order never applied at the ERP (lost
    # by the worker or dead-lettered), none of the applied ones.
    unapplied_orders = {i for i in truth.lost | truth.dead_lettered if truth.sent[i] == "orders"}
    assert unapplied_orders and truth.missing == unapplied_orders
    assert found.missing == truth.missing, report
    assert found.missing_metric == len(truth.missing)
    n = len(truth.missing)
    assert f"  {'missing at destination (orders)':34s} {n:9d} {n:7d}  ok" in report.splitlines()

    # The ERP's nightly sync wrote one customer's old address back within the window: one conflict,
    # and (the storefront owns the field) one violation, found from the redacted payloads.
    (customer,) = truth.conflicts
    assert truth.violations == {customer} and found.conflicts == {customer} and found.violations == {customer}
    assert found.conflicts_metric == 1 and found.violations_metric == 1
    for row in ("write conflicts (customers)", "ownership violations (customers)"):
        assert f"  {row:34s} {1:9d} {1:7d}  ok" in report.splitlines(), report
    (event,) = found.conflict_events
    assert (event["field"], event["owner"], event["write"]["writer"], event["previous"]["writer"]) == (
        "shipping.address",
        "storefront",
        "erp",
        "storefront",
    )
    assert event["write"]["value"].startswith("[REDACTED:path:") and event["previous"]["value"].startswith(
        "[REDACTED:path:"
    )
    assert event["write"]["value"] != event["previous"]["value"]
    assert f"    conflict: customer {customer} shipping.address (owner storefront): storefront wrote " in report
    addresses = [r.payload["shipping"]["address"] for r in schedule(DemoSettings.short()) if r.flow == "customers"]
    assert not any(a in report for a in addresses)  # only the redaction markers are shown

    # Fixed-interval retries against the rate-limited ERP: the retry-storm signature.
    assert found.attempts_by_code.get("429", 0) > 0 and found.retries > 0
    assert min(found.jitter_ratio.values()) < 0.1, found.jitter_ratio

    # The live view ran, and the report names one lost order to inspect.
    assert report.count("orders sent") >= 3
    example = sorted(truth.lost)[0]
    assert f"syncwatch transactions show {example}" in report
    # Following the report: restart the sidecar on the demo's ledger and run the printed command.
    assert f"syncwatch run --config {result.config_path}" in report
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "syncwatch", "run", "--config", str(result.config_path)],
        cwd=ROOT,
        env=_clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ui_url = f"{result.api_url}/ui/transactions?state=overdue&flow=orders"
    assert report.rstrip().splitlines()[-2] == f"The overdue orders in the web view: {ui_url}"
    try:
        shown = _retry_show(example, result.api_url, result.config_path.parent / "api-token")
        # The report's last link, logged in with the demo's token: the lost orders, every one.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        login = urllib.parse.urlencode({"token": result.token, "next": ui_url.split(result.api_url, 1)[1]}).encode()
        with opener.open(result.api_url + "/ui/login", data=login, timeout=10) as r:
            page = r.read().decode()
        assert r.url == ui_url
        assert set(re.findall(r'class="tx" href="/ui/transactions/([^"]+)"', page)) == truth.lost
        # The report's ownership command: every customers request payload the worker sent is a
        # storefront write; the nightly sync's one write is the conflict and the violation.
        token_file = result.config_path.parent / "api-token"
        assert f"syncwatch ownership report --url {result.api_url} --token-file {token_file}" in report
        csv_rows = _cli(
            "ownership", "report", "--format", "csv", "--url", result.api_url, "--token-file", str(token_file)
        )
        assert csv_rows.splitlines() == [
            "flow,field,writer,writes,conflicts,violations",
            "customers,shipping.address,erp,1,1,1",
            f"customers,shipping.address,storefront,{result.worker_attempts['customers']},0,0",
        ]
        markdown = _cli("ownership", "report", "--url", result.api_url, "--token-file", str(token_file))
        assert "| shipping.address | erp | 1 | 1 | 1 |" in markdown.splitlines()
    finally:
        sidecar.terminate()
        sidecar.wait(20)
    (dest,) = shown["destinations"]
    assert (dest["flow"], dest["destination"], dest["state"]) == ("orders", "erp", "overdue")
    (attempt,) = dest["attempts"]  # one attempt, it timed out, and nothing was recorded after it
    assert "timeout" in json.dumps(attempt) and not dest["confirmations"] and not dest["failures"]
    snaps = [s for s in _walk(shown) if isinstance(s, dict) and s.get("direction") == "request"]
    assert snaps and all(example in json.dumps(s["body"]) for s in snaps)
    assert "@example.com" not in json.dumps(shown)  # the customer's e-mail was redacted before storing


def _cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "syncwatch", *args],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}


def _retry_show(corr: str, url: str, token_file: Path) -> dict:
    deadline = time.monotonic() + 30
    while True:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncwatch",
                "transactions",
                "show",
                corr,
                "--url",
                url,
                "--token-file",
                str(token_file),
                "--json",
                "--timeout",
                "20",
            ],
            cwd=ROOT,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


@pytest.mark.e2e
@pytest.mark.rabbitmq
def test_demo_command_on_rabbitmq(tmp_path):
    vhost = f"syncwatch-demo-{uuid.uuid4().hex[:8]}"
    mgmt = ["curl", "-sf", "-u", "guest:guest", "-H", "content-type: application/json"]
    subprocess.run(mgmt + ["-X", "PUT", f"http://127.0.0.1:15672/api/vhosts/{vhost}"], check=True)
    subprocess.run(
        mgmt
        + [
            "-X",
            "PUT",
            "-d",
            '{"configure":".*","write":".*","read":".*"}',
            f"http://127.0.0.1:15672/api/permissions/{vhost}/guest",
        ],
        check=True,
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncwatch",
                "demo",
                "--short",
                "--quiet",
                "--free-ports",
                "--data-dir",
                str(tmp_path / "d"),
                "--rabbitmq",
                f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
            ],
            cwd=ROOT,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        subprocess.run(mgmt + ["-X", "DELETE", f"http://127.0.0.1:15672/api/vhosts/{vhost}"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {
        line.split("  ")[1].strip(): line.split()
        for line in proc.stdout.splitlines()
        if line.startswith("  ") and line.rstrip().endswith(("ok", "MISMATCH"))
    }
    assert set(rows) >= {
        "sent, never confirmed (overdue)",
        "dead-lettered (failed)",
        "applied twice (duplicate)",
        "missing at destination (orders)",
        "write conflicts (customers)",
        "ownership violations (customers)",
        "DLQ depth (sampled from the queue)",
    }, proc.stdout
    assert rows["write conflicts (customers)"][-3:] == ["1", "1", "ok"], proc.stdout
    for name, cols in rows.items():
        assert cols[-1] == "ok" and int(cols[-3]) == int(cols[-2]) > 0, (name, proc.stdout)


def test_ground_truth_of_write_conflicts_from_the_address_book():
    from syncwatch.demo.storefront import AddressWrite
    from syncwatch.demo.truth import write_conflicts

    writes = [
        AddressWrite("C-1", "old", "storefront", 100.0),
        AddressWrite("C-1", "new", "storefront", 101.0),  # the owner changing its own field: fine
        AddressWrite("C-1", "old", "erp", 120.0),  # written back within 30 s: conflict and violation
        AddressWrite("C-2", "a", "storefront", 100.0),
        AddressWrite("C-2", "b", "erp", 131.0),  # 31 s later: outside the window, still a violation
        AddressWrite("C-3", "x", "storefront", 100.0),
        AddressWrite("C-3", "x", "erp", 101.0),  # the same value: no change, nothing to report
    ]
    assert write_conflicts(writes, 30.0, "storefront") == ({"C-1"}, {"C-1", "C-2"})
    assert write_conflicts(reversed(writes), 30.0, "storefront") == ({"C-1"}, {"C-1", "C-2"})
