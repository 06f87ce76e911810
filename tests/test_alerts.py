"""Alert rules and the Alertmanager example, checked with the real promtool and amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from promql_scan import innermost_aggregations

from alerts import generate as alerts_gen
from dashboards import exported_metrics
from dashboards.exported_metrics import exported_series

ALERTS = ROOT / "alerts"
RULES = ALERTS / "syncwatch-rules.yml"
AM_CONFIG = ALERTS / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
SPEC = ROOT.parent / "shared" / "SPEC.md"

# SPEC.md's "Alert names" section.
SPEC_ALERTS = {
    "SyncwatchDeadLetterQueueNotEmpty",
    "SyncwatchQueueNotDraining",
    "SyncwatchTransactionsOverdue",
    "SyncwatchSyncLagAboveDeadline",
    "SyncwatchSyncLagGrowing",
    "SyncwatchRetriesExhausted",
    "SyncwatchRetryStormRisk",
    "SyncwatchDuplicateApplies",
    "SyncwatchCorrelationCoverageLow",
    "SyncwatchCollectorDown",
    "SyncwatchSnapshotStoreFailing",
    "SyncwatchDroppingData",
    "SyncwatchDown",
}
# Beyond the SPEC's list: reconciliation against the systems of record (issue 14).
RECONCILE_ALERTS = {
    "SyncwatchReconcileMissing",
    "SyncwatchReconcileDuplicated",
    "SyncwatchFlowQuiet",
    "SyncwatchReconcilerDown",
}
RECONCILE_CRITICAL = {"SyncwatchReconcileMissing", "SyncwatchReconcileDuplicated", "SyncwatchFlowQuiet"}
# Payload audits (issue 15), beyond the SPEC's list.
AUDIT_ALERTS = {
    "SyncwatchFieldOwnershipViolation",
    "SyncwatchWriteConflicts",
    "SyncwatchIdempotencyKeyReuse",
    "SyncwatchDuplicateDestinationRecords",
}
# Several replicas on one PostgreSQL ledger (issue 16), beyond the SPEC's list.
REPLICA_ALERTS = {"SyncwatchNoLeader", "SyncwatchSeveralLeaders", "SyncwatchHandoffBacklog"}
SPEC_CRITICAL = {
    "SyncwatchDeadLetterQueueNotEmpty",
    "SyncwatchTransactionsOverdue",
    "SyncwatchCollectorDown",
    "SyncwatchDroppingData",
    "SyncwatchDown",
    "SyncwatchDuplicateDestinationRecords",
    "SyncwatchNoLeader",
}

promtool = shutil.which("promtool")
amtool = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool missing: run scripts/system-deps.sh (Debian package prometheus)"
)
needs_amtool = pytest.mark.skipif(
    amtool is None, reason="amtool missing: run scripts/system-deps.sh (Debian package prometheus-alertmanager)"
)


def _rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def _alert_rules() -> list[dict]:
    return [r for g in _rules()["groups"] for r in g["rules"] if "alert" in r]


def test_committed_rule_file_is_what_the_generator_writes():
    expected = alerts_gen.render(alerts_gen.build_rules())
    assert RULES.read_text() == expected, "alerts/syncwatch-rules.yml is stale: run python alerts/generate.py"


def test_rule_file_has_exactly_the_spec_alerts():
    names = [r["alert"] for r in _alert_rules()]
    assert sorted(names) == sorted(SPEC_ALERTS | RECONCILE_ALERTS | AUDIT_ALERTS | REPLICA_ALERTS)
    if SPEC.exists():  # the shared spec sits beside the repo in CI and in the team's tree
        section = SPEC.read_text().split("## Alert names", 1)[1].split("\n## ", 1)[0]
        assert set(re.findall(r"`(Syncwatch\w+)`", section)) == SPEC_ALERTS


def test_every_alert_has_severity_annotations_and_working_links():
    runbook_anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in _alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] == (
            "critical" if name in SPEC_CRITICAL | RECONCILE_CRITICAL else "warning"
        ), name
        ann = rule["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert all(v.strip() for v in ann.values()), name
        url, _, anchor = ann["runbook_url"].partition("#")
        assert url.endswith("docs/runbooks.md") and anchor in runbook_anchors, (
            f"{name}: no runbook heading for #{anchor}"
        )
        assert re.match(r"https://grafana\.example/d/(syncwatch-erp-health|syncwatch-self)\b", ann["dashboard_url"]), (
            name
        )


def test_dead_letter_alert_pages_at_any_depth_with_queue_labels():
    rule = next(r for r in _alert_rules() if r["alert"] == "SyncwatchDeadLetterQueueNotEmpty")
    assert rule["expr"] == "max without (instance, pod) (last_over_time(syncwatch_dlq_messages[2m])) > 0"
    assert "for" not in rule  # pages on the first evaluation
    assert rule["labels"]["severity"] == "critical"


def test_thresholds_are_settings_and_reach_the_rules():
    s = alerts_gen.Settings(dlq_threshold=5, queue_window="10m", lag_for="30m", syncwatch_job="sw-eu")
    rules = {r["alert"]: r for g in alerts_gen.build_rules(s)["groups"] for r in g["rules"] if "alert" in r}
    assert rules["SyncwatchDeadLetterQueueNotEmpty"]["expr"].endswith("(syncwatch_dlq_messages[2m])) > 5")
    assert "offset 10m" in rules["SyncwatchQueueNotDraining"]["expr"]
    assert rules["SyncwatchSyncLagAboveDeadline"]["for"] == "30m"
    assert 'up{job="sw-eu"}' in rules["SyncwatchDown"]["expr"]
    # and from the command line, into a file that promtool accepts
    with pytest.raises(SystemExit):
        alerts_gen._parse_set(["no_such_setting=1"])


def _series_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not names
    return set(re.findall(r"\b(syncwatch[a-z0-9_:]*|up)\b", expr))


def test_rule_expressions_use_only_exported_metrics_and_defined_recordings():
    rules = [r for g in _rules()["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    exported = exported_series()
    used: set[str] = set()
    for rule in rules:
        for name in _series_names(rule["expr"]):
            used.add(name)
            assert name in exported or name in recorded, (
                f"{rule.get('alert') or rule.get('record')}: {name} is not exported by syncwatch"
            )
    assert recorded <= used, f"recording rules nobody uses: {recorded - used}"


def test_no_rule_sums_a_gauge_over_replicas():
    # With several replicas a leader-only gauge moves with the lease and a per-replica gauge is
    # exported by each: a sum counts them twice or thrice. syncwatch_leader is summed on purpose.
    gauges = (set(exported_metrics.LEADER_GAUGES) | set(exported_metrics.PER_REPLICA_GAUGES)) - {"syncwatch_leader"}
    checked = 0
    for rule in (r for g in _rules()["groups"] for r in g["rules"]):
        where = rule.get("alert") or rule.get("record")
        for gauge in gauges:
            for agg, clause in innermost_aggregations(rule["expr"], gauge):
                checked += 1
                if gauge in exported_metrics.LEADER_GAUGES:
                    # one series per ledger, whichever replica holds the lease: no instance label
                    assert agg in ("max", "min"), f"{where}: {gauge} is not taken as one series per ledger"
                    assert clause == "without (instance, pod)" or (
                        clause.startswith("by") and "instance" not in clause
                    ), f"{where}: {gauge} {agg} {clause}"
                else:
                    assert agg in ("max", "min", "count"), f"{where}: {gauge} summed over replicas"
    assert checked >= 10
    for rule in (r for g in _rules()["groups"] for r in g["rules"]):
        for agg, clause in innermost_aggregations(rule["expr"], "syncwatch_leader"):
            assert (agg, clause) == ("sum", "without (instance, pod)"), rule.get("alert")


def test_replica_alerts_read_the_leader_metrics():
    rules = {r["alert"]: r for r in _alert_rules()}
    assert rules["SyncwatchNoLeader"]["expr"] == "sum without (instance, pod) (syncwatch_leader) == 0"
    assert rules["SyncwatchNoLeader"]["labels"]["severity"] == "critical"
    assert rules["SyncwatchSeveralLeaders"]["expr"] == "sum without (instance, pod) (syncwatch_leader) > 1"
    assert rules["SyncwatchSeveralLeaders"]["for"] == "2m"
    assert "syncwatch:handoff_backlog_spans:max" in rules["SyncwatchHandoffBacklog"]["expr"]
    # the replica labels are a setting: a scrape config that adds `node` per target can drop it too
    s = alerts_gen.Settings(replica_labels="instance, pod, node", handover_window="3m")
    built = {r.get("alert") or r["record"]: r for g in alerts_gen.build_rules(s)["groups"] for r in g["rules"]}
    assert built["SyncwatchTransactionsOverdue"]["expr"] == (
        "max without (instance, pod, node) (last_over_time(syncwatch_transactions_overdue[3m])) > 0"
    )
    assert "sum without (instance, pod, node)" in built["SyncwatchNoLeader"]["expr"]


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_rules():
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len([r for g in _rules()['groups'] for r in g['rules']])} rules found" in out.stdout


@pytest.mark.prometheus
@needs_promtool
def test_promtool_unit_tests_pass():
    files = sorted(str(p) for p in (ALERTS / "tests").glob("*.test.yml"))
    assert files
    out = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test_case():
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in (ALERTS / "tests").glob("*.test.yml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../syncwatch-rules.yml"], path
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (fires if case["exp_alerts"] else quiet).add(case["alertname"])
                for alert in case["exp_alerts"]:
                    # the rendered annotations are part of what is tested
                    assert set(alert.get("exp_annotations", {})) == {
                        "summary",
                        "description",
                        "runbook_url",
                        "dashboard_url",
                    }
    assert (SPEC_ALERTS | RECONCILE_ALERTS | AUDIT_ALERTS | REPLICA_ALERTS) - fires == set(), (
        "alerts without a firing case"
    )
    assert (SPEC_ALERTS | RECONCILE_ALERTS | AUDIT_ALERTS | REPLICA_ALERTS) - quiet == set(), (
        "alerts without a must-not-fire case"
    )


@pytest.mark.prometheus
@needs_promtool
def test_example_prometheus_config_loads_the_rules():
    out = subprocess.run(
        [promtool, "check", "config", str(ALERTS / "prometheus.example.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.prometheus
@needs_amtool
def test_amtool_check_config():
    out = subprocess.run([amtool, "check-config", str(AM_CONFIG)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 inhibit rules" in out.stdout


def _route(*labels: str) -> str:
    out = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


@pytest.mark.prometheus
@needs_amtool
@pytest.mark.parametrize(
    "rule",
    [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r],
    ids=lambda r: r["alert"],
)
def test_each_alert_routes_by_its_severity(rule):
    want = "pager" if rule["labels"]["severity"] == "critical" else "ticket"
    assert _route(f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())) == want


@pytest.mark.prometheus
@needs_amtool
def test_dlq_page_reaches_the_pager_and_unlabelled_alerts_a_ticket():
    assert (
        _route(
            "alertname=SyncwatchDeadLetterQueueNotEmpty",
            "severity=critical",
            "broker=rabbitmq",
            "namespace=/",
            "queue=orders.dlq",
            "source_queue=orders",
        )
        == "pager"
    )
    assert _route("alertname=SomethingElse") == "ticket"
