"""The write tracker survives the sidecar: a conflict whose two writes straddle a restart (a clean
stop, or kill -9 once the first write is counted) is found exactly once, with the violation the
ownership map calls for."""

from __future__ import annotations

import json

import pytest
from instrument_sdk import Exported

TOKEN = "audit-restart-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = {
    "api": {"token": TOKEN},
    "flows": {"customers": {"destinations": ["storefront", "erp"], "deadline": "6h", "exactly_once": False}},
    "snapshots": {"redact": {"paths": ["$.shipping.address"]}},
    "audit": {
        "flows": {
            "customers": {
                "record_key": "$.customer_id",
                "sync_window": "24h",
                "fields": {
                    "shipping.address": {"path": "$.shipping.address", "owner": "storefront"},
                    "phone": {"path": "$.phone"},  # nobody owns it: conflicts only
                },
            }
        }
    },
}
WRITES = {"flow": "customers", "field": "shipping.address"}


def _write(sidecar, writer: str, corr: str, address: str, phone: str) -> None:
    exp = Exported(sidecar)
    try:
        sw = exp.instrument(flow="customers", source=writer, destination="storefront" if writer == "erp" else "erp")
        with sw.attempt(corr) as a:
            a.snapshot_request({"customer_id": "C1", "phone": phone, "shipping": {"address": address}})
            a.response(200)
    finally:
        exp.close()


@pytest.mark.parametrize("stop", ["restart", "kill -9"])
def test_a_conflict_across_a_restart_is_found_once(make_sidecar, stop):
    sidecar = make_sidecar(CONFIG)
    # 10:00 the customer moves, in the storefront.
    _write(sidecar, "storefront", "c1-shop", "New Street 2", "+49 30 1234")
    # Counted means committed: the tracked state is on disk once the write shows in the metrics.
    sidecar.wait_for("syncwatch_audit_writes_total", 1.0, writer="storefront", **WRITES)
    if stop == "restart":
        sidecar.stop()
    else:
        sidecar.kill9()
    sidecar.start()
    sidecar.wait_for("syncwatch_audit_tracked_fields", 2.0)  # read back at start
    # 10:05 the ERP's sync writes the old address back (the phone unchanged: no finding for it).
    _write(sidecar, "erp", "c1-erp", "Old Street 1", "+49 30 1234")
    sidecar.wait_for("syncwatch_audit_writes_total", 1.0, writer="erp", **WRITES)
    m = sidecar.metric
    assert m("syncwatch_audit_conflicts_total", writer="erp", **WRITES) == 1.0
    assert m("syncwatch_audit_violations_total", writer="erp", **WRITES) == 1.0
    assert m("syncwatch_audit_conflicts_total", flow="customers", field="phone", writer="erp") == 0.0
    assert m("syncwatch_audit_tracked_fields") == 2.0

    status, body = sidecar.get("/api/v1/audit/findings?flow=customers&limit=100", AUTH)
    assert status == 200, body
    items = json.loads(body)["items"]
    assert sorted((f["kind"], f["field"]) for f in items) == [
        ("conflict", "shipping.address"),
        ("violation", "shipping.address"),
    ]
    for f in items:
        assert (f["record"], f["write"]["writer"], f["previous"]["writer"]) == ("C1", "erp", "storefront")
        assert (f["write"]["correlation_id"], f["previous"]["correlation_id"]) == ("c1-erp", "c1-shop")
    assert b"Street" not in body
