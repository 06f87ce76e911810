"""Zero-code adoption, end to end: a storefront and a worker with stock OpenTelemetry
instrumentation only (pika and requests over the real RabbitMQ; botocore, boto3sqs and httpx over
moto's SQS) and a local ERP that answers 429, 500, 422, hangs, or 201; some orders are acked and
never posted. syncwatch, with presets and a few rules, must report what the ERP's own log shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
MGMT = "http://127.0.0.1:15672"
AUTH = ("guest", "guest")

pytestmark = [pytest.mark.rabbitmq, pytest.mark.e2e]
HANG = "hang"
# Per order, what the ERP answers to each POST in turn; "skip" orders are never posted.
PLAN: dict[str, list] = {
    "SO-1001": [201],
    "SO-1002": [429, 201],
    "SO-1003": [500, 500, 500],  # the worker gives up after 3 attempts
    "SO-1004": [422],  # non-retryable
    "SO-1005": [HANG, 201],
    "SO-1006": "skip",
    "SO-1007": "skip",
    "SO-1008": [500, 201],
}

RULES = {
    "map": {
        "order-published": {"flow": "orders", "preset": "rabbitmq-publish", "source": "storefront"},
        "order-consumed": {"flow": "orders", "preset": "rabbitmq-consume"},
        "erp-post": {
            "flow": "orders",
            "preset": "http-client",
            "when": {"attributes": {"url.full": "http://127.0.0.1:*/orders"}},
            "destination": "erp",
            "give_up_after": 3,
        },
    }
}


# The SQS leg: the order ID is only in the message body and in the ERP's URL (PUT /orders/<id>).
SQS_PLAN: dict[str, list] = {
    "SO-2001": [201],
    "SO-2002": [429, 201],
    "SO-2003": [422],
    "SO-2004": [500, HANG, 500],  # gives up after 3 attempts
    "SO-2005": [HANG, 201],
}
SQS_RULES = {
    "map": {
        # botocore's CLIENT SQS.SendMessage and boto3sqs' PRODUCER "orders send": no business ID on either.
        "order-sent": {"flow": "orders", "preset": "sqs-send", "source": "storefront"},
        # boto3sqs' "orders process" links to the send span: the ID learned from the PUT below reaches it.
        "order-received": {"flow": "orders", "preset": "sqs-receive"},
        "erp-put": {
            "flow": "orders",
            "preset": "http-client",
            "when": {"attributes": {"url.full": "http://127.0.0.1:*/orders/*"}},
            "correlation": {"attribute": "url.full", "regex": "/orders/(?P<id>[^/?]+)$"},
            "destination": "erp",
            "give_up_after": 3,
        },
    }
}


class Erp:
    """The ERP: answers each order's POSTs (or PUTs to /orders/<id>) from its plan, in order, and
    logs what it answered."""

    def __init__(self, plan: dict[str, list] | None = None):
        self.log: list[tuple[str, str]] = []
        self.calls: Counter = Counter()
        erp = self
        plan = PLAN if plan is None else plan

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.answer(self.path.rsplit("/", 1)[-1])

            def do_POST(self):
                order = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.answer(order["id"])

            def answer(self, order_id: str):
                n = erp.calls[order_id]
                erp.calls[order_id] += 1
                answer = plan[order_id][n]
                if answer == HANG:
                    erp.log.append((order_id, "timeout"))
                    time.sleep(1.0)  # the worker's client times out after 0.5 s
                    return
                erp.log.append((order_id, str(answer)))
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def vhost():
    name = f"sw-rules-{uuid.uuid4().hex[:8]}"
    requests.put(f"{MGMT}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{MGMT}/api/permissions/{quote(name, safe='')}/guest",
        auth=AUTH,
        json={"configure": ".*", "write": ".*", "read": ".*"},
        timeout=10,
    ).raise_for_status()
    yield name
    requests.delete(f"{MGMT}/api/vhosts/{quote(name, safe='')}", auth=AUTH, timeout=10)


def app(*args: str, helper: bool = False, env: dict[str, str] | None = None) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SW_HELPER": "1" if helper else "0",
        **(env or {}),
    }
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "rules_apps.py"), *args], check=True, timeout=60, env=env
    )


LABELS = {"flow": "orders", "source": "storefront", "destination": "erp"}
FD = {"flow": "orders", "destination": "erp"}


def scenario(make_sidecar, vhost: str, tmp_path: Path, helper: bool) -> tuple[Erp, dict, Path]:
    """Run the storefront and the worker against a fresh sidecar; its metrics once the lost orders
    are overdue. With `helper`, the apps also call syncwatch's helper and syncwatch has no rules."""
    erp = Erp()
    config = {"flows": {"orders": {"destinations": ["erp"], "deadline": "4s"}}, "snapshots": {"enabled": False}}
    if not helper:
        config["rules"] = RULES
    sc = make_sidecar(config, name="helper" if helper else "rules")
    orders = [{"id": oid, "skip": plan == "skip"} for oid, plan in PLAN.items()]
    spans_file = tmp_path / f"spans-{helper}.jsonl"
    app("storefront", sc.otlp_http, vhost, json.dumps(orders), str(spans_file), helper=helper)
    app("worker", sc.otlp_http, vhost, erp.url, str(len(orders)), str(spans_file), helper=helper)
    erp.server.shutdown()
    sc.wait_for("syncwatch_transactions_overdue", 2, timeout=20, **LABELS)
    m = sc.metrics()
    return erp, {(name, tuple(sorted(labels))): value for (name, labels), value in m.items()}, spans_file


def figures(m: dict) -> dict:
    """What the ERP's log can be compared with."""

    def v(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    return {
        "confirmed": v("syncwatch_transactions_total", outcome="confirmed", **LABELS),
        "failed": v("syncwatch_transactions_total", outcome="failed", **LABELS),
        "overdue": v("syncwatch_transactions_overdue", **LABELS),
        "lag_count": v("syncwatch_sync_lag_seconds_count", **LABELS),
        "attempts": {
            c: v("syncwatch_attempts_total", status_code=c, **FD) for c in ("201", "429", "500", "422", "none")
        },
        "retries": v("syncwatch_retries_total", **FD),
        "correlated_spans": v("syncwatch_spans_total", result="correlated"),
        "uncorrelated_spans": v("syncwatch_spans_total", result="uncorrelated"),
        "unrelated_spans": v("syncwatch_spans_total", result="unrelated"),
    }


def span_counts(spans_file: Path) -> Counter:
    """The spans the apps exported (their OTLP/JSON dump), by what they are."""
    kinds = {"SPAN_KIND_PRODUCER": "publish", "SPAN_KIND_CONSUMER": "deliver"}
    counts: Counter = Counter()
    for line in spans_file.read_text().splitlines():
        for rs in json.loads(line).get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    kind = span.get("kind")
                    counts[kinds.get(kind) or ("post" if span["name"] in ("POST", "PUT") else span["name"])] += 1
    return counts


def test_stock_instrumentation_gives_the_erp_log_figures(make_sidecar, vhost, tmp_path):
    erp, metrics, spans_file = scenario(make_sidecar, vhost, tmp_path, helper=False)
    spans = span_counts(spans_file)

    # What the ERP's own log shows.
    answered = Counter(code for _, code in erp.log)
    assert answered == {"201": 4, "500": 4, "429": 1, "422": 1, "timeout": 1}
    posted = {oid for oid, _ in erp.log}
    confirmed = {oid for oid, code in erp.log if code == "201"}
    lost = set(PLAN) - posted
    got = figures(metrics)
    assert got == {
        "confirmed": len(confirmed),
        "failed": len(posted - confirmed),
        "overdue": len(lost),
        "lag_count": len(confirmed),
        "attempts": {"201": 4, "429": 1, "500": 4, "422": 1, "none": answered["timeout"]},
        "retries": len(erp.log) - len(posted),
        # Coverage counts only the flow's spans (publishes, deliveries, the 11 POSTs), all correlated;
        # the worker's health check is unrelated.
        "correlated_spans": spans["publish"] + spans["deliver"] + len(erp.log),
        "uncorrelated_spans": 0,
        "unrelated_spans": 1,
    }
    assert (got["confirmed"], got["failed"], got["overdue"], got["retries"]) == (4, 2, 2, 5)
    # pika's instrumentation since 0.5x writes two PRODUCER spans per BlockingChannel.basic_publish.
    assert spans["publish"] in (8, 16) and spans["deliver"] == 8 and spans["post"] == len(erp.log) == 11
    matches = {r: metrics.get(("syncwatch_rule_matches_total", (("rule", r),))) for r in RULES["map"]}
    assert matches == {"order-published": spans["publish"], "order-consumed": 8, "erp-post": 11}
    assert metrics[("syncwatch_stitch_entries", (("index", "pending"),))] == 0  # every span got its ID
    if os.environ.get("RULES_E2E_DUMP"):  # regenerates tests/fixtures/rules_stock_spans.otlp.jsonl
        Path(os.environ["RULES_E2E_DUMP"]).write_bytes(spans_file.read_bytes())

    # The same scenario marked with syncwatch's helper instead of rules: the same transaction figures.
    _, helper_metrics, _ = scenario(make_sidecar, vhost, tmp_path, helper=True)
    transaction_figures = ("confirmed", "failed", "overdue", "lag_count", "attempts", "retries")
    assert {k: figures(helper_metrics)[k] for k in transaction_figures} == {k: got[k] for k in transaction_figures}


def sqs_scenario(make_sidecar, moto, tmp_path: Path, helper: bool) -> tuple[Erp, dict]:
    import boto3

    erp = Erp(SQS_PLAN)
    config = {"flows": {"orders": {"destinations": ["erp"], "deadline": "4s"}}, "snapshots": {"enabled": False}}
    if not helper:
        config["rules"] = SQS_RULES
    sc = make_sidecar(config, name="sqs-helper" if helper else "sqs-rules")
    sqs = boto3.client("sqs", endpoint_url=moto.url, region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"orders-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    orders = [{"id": oid} for oid in SQS_PLAN]
    spans_file = tmp_path / f"sqs-spans-{helper}.jsonl"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    app("sqs-storefront", sc.otlp_http, queue_url, json.dumps(orders), str(spans_file), helper=helper, env=env)
    app("sqs-worker", sc.otlp_http, queue_url, erp.url, str(len(orders)), str(spans_file), helper=helper, env=env)
    erp.server.shutdown()
    sc.wait_for("syncwatch_transactions_total", 3, timeout=20, outcome="confirmed", **LABELS)
    sqs.delete_queue(QueueUrl=queue_url)
    m = sc.metrics()
    return erp, {(name, tuple(sorted(labels))): value for (name, labels), value in m.items()}


def test_stock_sqs_instrumentation_gives_the_erp_log_figures(make_sidecar, moto, aws_env, tmp_path):
    """botocore + boto3sqs + httpx, no business ID on any SQS span: the ID in the ERP's URL reaches
    the send spans through boto3sqs' link from `process` to `send`, so lag runs from the send."""
    erp, metrics = sqs_scenario(make_sidecar, moto, tmp_path, helper=False)
    answered = Counter(code for _, code in erp.log)
    assert answered == {"201": 3, "500": 2, "429": 1, "422": 1, "timeout": 2}
    confirmed = {oid for oid, code in erp.log if code == "201"}
    got = figures(metrics)
    assert {k: got[k] for k in ("confirmed", "failed", "overdue", "lag_count", "attempts", "retries")} == {
        "confirmed": len(confirmed),
        "failed": len(SQS_PLAN) - len(confirmed),
        "overdue": 0,
        "lag_count": len(confirmed),
        "attempts": {"201": 3, "429": 1, "500": 2, "422": 1, "none": answered["timeout"]},
        "retries": len(erp.log) - len(SQS_PLAN),
    }
    assert got["uncorrelated_spans"] == 0
    matches = {r: metrics.get(("syncwatch_rule_matches_total", (("rule", r),))) for r in SQS_RULES["map"]}
    assert matches["erp-put"] == len(erp.log) == 9
    assert matches["order-sent"] == 2 * len(SQS_PLAN)  # botocore's SendMessage and boto3sqs' send
    assert metrics[("syncwatch_stitch_entries", (("index", "pending"),))] == 0

    _, helper_metrics = sqs_scenario(make_sidecar, moto, tmp_path, helper=True)
    transaction_figures = ("confirmed", "failed", "overdue", "lag_count", "attempts", "retries")
    assert {k: figures(helper_metrics)[k] for k in transaction_figures} == {k: got[k] for k in transaction_figures}


AIO_PLAN: dict[str, list] = {"SO-3001": [201], "SO-3002": [429, 201], "SO-3003": [422], "SO-3004": [500, 500, 500]}


def test_aio_pika_and_aiohttp_client_presets(make_sidecar, vhost):
    """The same presets read aio-pika's and aiohttp-client's spans (old attribute names, 429 marked ERROR)."""
    erp = Erp(AIO_PLAN)
    config = {"flows": {"orders": {"destinations": ["erp"], "deadline": "4s"}}, "snapshots": {"enabled": False}}
    sc = make_sidecar({**config, "rules": RULES}, name="aio")
    app("aio", sc.otlp_http, vhost, erp.url, json.dumps([{"id": oid} for oid in AIO_PLAN]))
    erp.server.shutdown()
    sc.wait_for("syncwatch_transactions_total", 2, timeout=20, outcome="failed", **LABELS)
    m = sc.metrics()
    got = figures({(name, tuple(sorted(labels))): value for (name, labels), value in m.items()})
    assert Counter(code for _, code in erp.log) == {"201": 2, "429": 1, "422": 1, "500": 3}
    assert {k: got[k] for k in ("confirmed", "failed", "overdue", "lag_count", "attempts", "retries")} == {
        "confirmed": 2,
        "failed": 2,  # SO-3003: a non-retryable 422; SO-3004: gave up after 3 attempts
        "overdue": 0,
        "lag_count": 2,
        "attempts": {"201": 2, "429": 1, "500": 3, "422": 1, "none": 0},
        "retries": len(erp.log) - len(AIO_PLAN),
    }
    assert got["uncorrelated_spans"] == 0
