"""The payload audits proven end to end: real OTLP spans and logs from the instrumentation
helper, exported over OTLP/HTTP into a real sidecar; exact metric counts, findings read back
through the API (redacted, both writes side by side), and the ownership report's rows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from instrument_sdk import Exported

from syncwatch.snapshots.redaction.markers import REDACTED_RE

TOKEN = "audit-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.fixture
def audited(make_sidecar):
    now = time.time()
    promo_end = now + 4.0
    sidecar = make_sidecar(
        {
            "api": {"token": TOKEN},
            "flows": {
                "customers": {"destinations": ["storefront", "erp"], "deadline": "6h", "exactly_once": False},
                "prices": {"destinations": ["storefront", "erp"], "deadline": "5m", "exactly_once": False},
                "orders": {"destinations": ["erp"], "deadline": "5m"},
            },
            "snapshots": {"redact": {"paths": ["$.shipping.address"]}},
            "audit": {
                "flows": {
                    "customers": {
                        "record_key": "$.customer_id",
                        "sync_window": "24h",
                        "fields": {
                            "shipping.address": {"path": "$.shipping.address", "owner": "storefront"},
                            "email": {"path": "$.email", "owner": "storefront"},
                        },
                    },
                    "prices": {
                        "record_key": "$.sku",
                        "sync_window": "2s",
                        "fields": {
                            "price": {
                                "path": "$.price",
                                "owner": "erp",
                                "rules": [{"owner": "storefront", "from": _iso(now - 60), "until": _iso(promo_end)}],
                            }
                        },
                    },
                    "orders": {
                        "record_key": "$.order_id",
                        "idempotency_key": "$.idempotency_key",
                        "record_id": "$.erp_id",
                    },
                }
            },
        }
    )
    exp = Exported(sidecar)
    yield sidecar, exp, promo_end
    exp.close()


def _send(sw, corr: str, body: dict, *, resend: int = 0, response: dict | None = None) -> None:
    with sw.attempt(corr, resend_count=resend) as a:
        a.snapshot_request(body)
        a.response(200)
        if response is not None:
            a.snapshot_response(response)


def _findings(sidecar, **params) -> list[dict]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    status, body = sidecar.get(f"/api/v1/audit/findings?{query}", AUTH)
    assert status == 200, body
    return json.loads(body)["items"]


def test_conflicts_violations_key_reuse_and_duplicates_from_real_payloads(audited):
    sidecar, exp, promo_end = audited
    shop_c = exp.instrument(flow="customers", source="storefront", destination="erp")
    erp_c = exp.instrument(flow="customers", source="erp", destination="storefront")
    # C1: the customer moves; the ERP's nightly sync writes the old address back (conflict + violation).
    _send(shop_c, "c1-a", {"customer_id": "C1", "email": "anna@example.com", "shipping": {"address": "New Street 2"}})
    _send(erp_c, "c1-b", {"customer_id": "C1", "email": "anna@example.com", "shipping": {"address": "Old Street 1"}})
    # C2: the ERP overwrites the e-mail: found by the keyed hashes of two redacted values.
    _send(shop_c, "c2-a", {"customer_id": "C2", "email": "bob@example.com", "shipping": {"address": "Elm 5"}})
    _send(erp_c, "c2-b", {"customer_id": "C2", "email": "robert@example.com", "shipping": {"address": "Elm 5"}})

    shop_p = exp.instrument(flow="prices", source="storefront", destination="erp")
    erp_p = exp.instrument(flow="prices", source="erp", destination="storefront")
    # Inside the promotion window the storefront owns the price: the ERP's overwrite is a violation.
    _send(shop_p, "p1-a", {"sku": "SKU-1", "price": "9.99"})
    _send(erp_p, "p1-b", {"sku": "SKU-1", "price": "19.99"})
    _send(shop_p, "p2-a", {"sku": "SKU-2", "price": "7.99"})
    p2_sent = time.time()
    # Past the promotion and past the 2 s window after p2-a (a slow sidecar start must not shrink it).
    time.sleep(max(0.0, promo_end - time.time(), p2_sent + 2.0 - time.time()) + 0.5)
    # After it the ERP owns it again (and the sync window of 2 s is over): fine.
    _send(erp_p, "p2-b", {"sku": "SKU-2", "price": "12.99"})

    shop_o = exp.instrument(flow="orders", source="storefront", destination="erp")
    # O1: a retry with the same idempotency key and a changed total.
    _send(shop_o, "O1", {"order_id": "O1", "idempotency_key": "K-O1", "total": "100.00"}, response={"erp_id": "E-1"})
    _send(
        shop_o,
        "O1",
        {"order_id": "O1", "idempotency_key": "K-O1", "total": "120.00"},
        resend=1,
        response={"erp_id": "E-1"},
    )
    # O2: the same order confirmed twice, into two ERP records.
    o2 = {"order_id": "O2", "idempotency_key": "K-O2", "total": "50.00"}
    _send(shop_o, "O2", o2, response={"erp_id": "E-7"})
    _send(shop_o, "O2", o2, resend=1, response={"erp_id": "E-8"})
    shop_o.confirm("O2", idempotency_key="K-O2")
    # O3: the record IDs arrive on the confirm spans only (no response payload).
    o3 = {"order_id": "O3", "idempotency_key": "K-O3", "total": "75.00"}
    _send(shop_o, "O3", o3)
    shop_o.confirm("O3", idempotency_key="K-O3", attributes={"syncwatch.destination.record_id": "E-20"})
    _send(shop_o, "O3", o3, resend=1)
    shop_o.confirm("O3", idempotency_key="K-O3-retry", attributes={"syncwatch.destination.record_id": "E-21"})

    m = sidecar.metric
    assert sidecar.wait_for("syncwatch_audit_duplicate_records_total", 2.0, flow="orders") == 2.0
    assert m("syncwatch_audit_conflicts_total", flow="customers", field="shipping.address", writer="erp") == 1.0
    assert m("syncwatch_audit_violations_total", flow="customers", field="shipping.address", writer="erp") == 1.0
    assert m("syncwatch_audit_conflicts_total", flow="customers", field="email", writer="erp") == 1.0
    assert m("syncwatch_audit_violations_total", flow="customers", field="email", writer="erp") == 1.0
    assert m("syncwatch_audit_conflicts_total", flow="customers", field="email", writer="storefront") == 0.0
    assert m("syncwatch_audit_violations_total", flow="prices", field="price", writer="erp") == 1.0
    assert m("syncwatch_audit_conflicts_total", flow="prices", field="price", writer="erp") == 1.0
    assert m("syncwatch_audit_writes_total", flow="prices", field="price", writer="erp") == 2.0
    assert m("syncwatch_audit_idempotency_key_reuse_total", flow="orders") == 1.0
    assert m("syncwatch_audit_writes_total", flow="orders", field="unmapped", writer="storefront") == 18.0

    # The findings, both writes side by side; redacted values only (markers keyed by the hash key).
    ship = _findings(sidecar, flow="customers", kind="conflict")
    by_field = {f["field"]: f for f in ship}
    assert sorted(by_field) == ["email", "shipping.address"]
    s = by_field["shipping.address"]
    assert (s["record"], s["write"]["writer"], s["previous"]["writer"]) == ("C1", "erp", "storefront")
    assert (s["write"]["correlation_id"], s["previous"]["correlation_id"]) == ("c1-b", "c1-a")
    assert REDACTED_RE.fullmatch(s["write"]["value"]) and REDACTED_RE.fullmatch(s["previous"]["value"])
    assert s["write"]["value"] != s["previous"]["value"]
    status, raw = sidecar.get("/api/v1/audit/findings?limit=1000", AUTH)
    assert b"Street" not in raw and b"example.com" not in raw
    viol = _findings(sidecar, flow="prices", kind="violation")
    assert [(v["record"], v["owner"], v["write"]["value"], v["previous"]["value"]) for v in viol] == [
        ("SKU-1", "storefront", "19.99", "9.99")
    ]
    reuse = _findings(sidecar, kind="key_reuse")
    assert [(r["record"], r["write"]["correlation_id"]) for r in reuse] == [("K-O1", "O1")]
    dup = _findings(sidecar, kind="duplicate_record")
    assert [(d["record"], d["write"]["value"], d["previous"]["value"]) for d in dup] == [
        ("O3", "E-21", "E-20"),
        ("O2", "E-8", "E-7"),
    ]
    assert sidecar.get("/api/v1/audit/findings", {})[0] == 401

    # The ownership report, as the CLI prints it.
    cli = [sys.executable, "-m", "syncwatch", "ownership", "report", "--url", sidecar.url, "--token", TOKEN]
    out = subprocess.run([*cli, "--format", "csv"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        "flow,field,writer,writes,conflicts,violations",
        "customers,email,erp,2,1,1",
        "customers,email,storefront,2,0,0",
        "customers,shipping.address,erp,2,1,1",
        "customers,shipping.address,storefront,2,0,0",
        "orders,$.idempotency_key,storefront,6,0,0",
        "orders,$.order_id,storefront,6,0,0",
        "orders,$.total,storefront,6,0,0",
        "prices,price,erp,2,1,1",
        "prices,price,storefront,2,0,0",
    ]
    md = subprocess.run([*cli, "--since", "7d"], capture_output=True, text=True, check=True).stdout
    assert "| shipping.address | erp | 2 | 1 | 1 |" in md.splitlines()
    assert "| orders | duplicate_record | 2 |" in md.splitlines()
    assert "| orders | key_reuse | 1 |" in md.splitlines()
