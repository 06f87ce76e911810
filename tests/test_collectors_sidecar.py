"""Collectors inside the running sidecar (`syncwatch run`) and `syncwatch collectors test`, end to end."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from urllib.parse import quote

import pika
import pytest
import requests
import yaml
from collectors_fakes.harness import free_port
from sidecar import ROOT

MGMT, AUTH = "http://127.0.0.1:15672", ("guest", "guest")

pytestmark = pytest.mark.rabbitmq  # every test here runs against the real broker (the shop_vhost fixture)


@pytest.fixture
def shop_vhost():
    name = f"sw-sidecar-{uuid.uuid4().hex[:8]}"
    v = quote(name, safe="")
    requests.put(f"{MGMT}/api/vhosts/{v}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{MGMT}/api/permissions/{v}/guest",
        auth=AUTH,
        timeout=10,
        json={"configure": ".*", "write": ".*", "read": ".*"},
    ).raise_for_status()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, name, pika.PlainCredentials(*AUTH)))
    ch = conn.channel()
    ch.exchange_declare("dlx", "fanout")
    ch.queue_declare("orders.dlq")
    ch.queue_bind("orders.dlq", "dlx")
    ch.queue_declare("orders", arguments={"x-dead-letter-exchange": "dlx"})
    for _ in range(3):
        ch.basic_publish("", "orders", b"order")
    method, _, _ = ch.basic_get("orders")
    ch.basic_reject(method.delivery_tag, requeue=False)
    conn.close()
    # The management API shows a new queue's counts only after its next stats emission (~5 s).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = requests.get(f"{MGMT}/api/queues/{v}", auth=AUTH, timeout=10).json()
        if len(listed) == 2 and all("messages_ready" in x for x in listed):
            break
        time.sleep(0.5)
    yield name
    requests.delete(f"{MGMT}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10)


def test_sidecar_exports_queue_dlq_and_health_metrics(make_sidecar, shop_vhost):
    sc = make_sidecar(
        {
            "collectors": [
                {"type": "rabbitmq", "name": "wms", "vhosts": [shop_vhost]},
                {"type": "rabbitmq", "name": "gone", "url": f"http://127.0.0.1:{free_port()}", "timeout": "1s"},
            ],
            "sampling": {"interval": "2s", "fast_interval": "2s"},
        }
    )
    q = dict(broker="rabbitmq", namespace=shop_vhost)
    # Management stats lag a few seconds behind the broker; the 2 s cycle picks them up.
    assert sc.wait_for("syncwatch_dlq_messages", 1, timeout=30, queue="orders.dlq", source_queue="orders", **q) == 1
    assert sc.wait_for("syncwatch_queue_messages", 2, timeout=30, queue="orders", **q) == 2
    assert sc.metric("syncwatch_collector_up", collector="wms") == 1
    assert sc.metric("syncwatch_collector_up", collector="gone") == 0
    assert sc.metric("syncwatch_collector_errors_total", collector="gone", reason="unreachable") >= 1
    assert sc.metric("syncwatch_collector_interval_seconds", collector="wms") == 2
    assert sc.metric("syncwatch_collector_last_success_timestamp_seconds", collector="wms") > 0


def test_cli_collectors_test_and_check_config(tmp_path, shop_vhost):
    cfg = tmp_path / "syncwatch.yaml"
    cfg.write_text(yaml.safe_dump({"collectors": [{"type": "rabbitmq", "name": "wms", "vhosts": [shop_vhost]}]}))
    out = subprocess.run(
        [sys.executable, "-m", "syncwatch", "collectors", "test", "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{shop_vhost} orders.dlq: " in out.stdout and "(source: orders)" in out.stdout
    assert "1 of 1 collectors up" in out.stdout

    cfg.write_text(
        yaml.safe_dump(
            {
                "collectors": [{"type": "rabbitmq", "name": "wms", "page_size": 5000}],
                "sampling": {"fast_interval": "2m"},
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "syncwatch", "check-config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "sampling.fast_interval" in out.stdout + out.stderr


def test_hostile_management_apis_never_hold_up_the_sidecar(make_sidecar, shop_vhost):
    """One management API claims 200,000 pages, another answers a numeric vhost: /healthz and /metrics
    keep answering within a second throughout, only those two collectors are down, each counted once."""
    from collectors_fakes.rabbitmq_fake import FakeManagementApi, queue

    pages, odd = FakeManagementApi(), FakeManagementApi()
    try:
        pages.queues, pages.page_count = [queue("orders")], 200_000
        odd.queues = [queue("orders", vhost=5)]
        sc = make_sidecar(
            {
                "collectors": [
                    {"type": "rabbitmq", "name": "wms", "vhosts": [shop_vhost]},
                    {"type": "rabbitmq", "name": "pages", "url": pages.url},
                    {"type": "rabbitmq", "name": "odd", "url": odd.url},
                ],
                # One sample each within the test: exact counts.
                "sampling": {"interval": "10m", "fast_interval": "5m"},
            }
        )
        worst = 0.0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for path in ("/healthz", "/metrics"):
                started = time.monotonic()
                status, _ = sc.get(path)
                worst = max(worst, time.monotonic() - started)
                assert status == 200, path
            time.sleep(0.05)
        assert worst < 1.0
        assert sc.wait_for("syncwatch_collector_up", 1, timeout=10, collector="wms") == 1
        m = sc.metrics()

        def errors(name):
            return {
                labels["reason"]: v
                for (n, ls), v in m.items()
                if n == "syncwatch_collector_errors_total" and (labels := dict(ls))["collector"] == name and v
            }

        assert errors("pages") == {"too_large": 1} and errors("odd") == {"bad_response": 1} and errors("wms") == {}
        assert m[("syncwatch_collector_up", frozenset({"collector": "pages"}.items()))] == 0
        assert m[("syncwatch_collector_up", frozenset({"collector": "odd"}.items()))] == 0
        assert pages.request_count("/api/queues") == 1
        log = sc.log()
        assert "collector pages: down: too_large: /api/queues lists 200000 pages" in log
        assert "collector odd: down: bad_response: /api/queues: unexpected answer at items.0.vhost" in log
    finally:
        pages.close()
        odd.close()
