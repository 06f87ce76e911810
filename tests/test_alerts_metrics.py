"""The exported-metric names alerts and dashboards may query that SPEC.md does not list.

tests/test_dashboards.py checks dashboards/exported_metrics.py against SPEC.md's Metrics section
(spec_base_names(), which leaves BEYOND_SPEC out). This checks the rest: every name in BEYOND_SPEC
is documented in README.md's "Metrics beyond the SPEC's list", is really registered by the sidecar
with the type it is listed under, and the snapshot-store alert uses the store's own signals.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dashboards import exported_metrics

README = ROOT / "README.md"
RULES = ROOT / "alerts" / "syncwatch-rules.yml"
SPEC = ROOT.parent / "shared" / "SPEC.md"


def _readme_beyond_spec() -> set[str]:
    """Metrics README names: in its metrics section, or in the section of the feature they belong to."""
    return set(re.findall(r"`(syncwatch_[a-z_]+)(?:\{|`)", README.read_text()))


def test_metrics_beyond_the_spec_are_listed_in_the_readme():
    beyond = set(exported_metrics.BEYOND_SPEC)
    assert beyond, "BEYOND_SPEC is empty"
    assert beyond <= exported_metrics.base_names(), "BEYOND_SPEC names must also be in COUNTERS/GAUGES/HISTOGRAMS"
    assert beyond <= _readme_beyond_spec(), f"not named in README: {beyond - _readme_beyond_spec()}"
    assert exported_metrics.spec_base_names() == exported_metrics.base_names() - beyond
    if SPEC.exists():
        section = SPEC.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
        assert not beyond & set(re.findall(r"`(syncwatch_[a-z_]+)(?:\{|`)", section)), (
            "now in SPEC.md: drop it from BEYOND_SPEC"
        )


def test_metrics_beyond_the_spec_are_registered_with_their_listed_type(tmp_path):
    from prometheus_client import CollectorRegistry

    from syncwatch.config.models import Config
    from syncwatch.metrics.registry import Metrics
    from syncwatch.snapshots import SnapshotIntake

    registry = CollectorRegistry()
    cfg = Config.model_validate({"storage": {"data_dir": str(tmp_path / "data")}})
    SnapshotIntake(cfg, Metrics(registry))
    from syncwatch.reconcile.metrics import ReconcileMetrics

    ReconcileMetrics(registry)
    from syncwatch.audit.metrics import AuditMetrics

    AuditMetrics(registry)  # registered only when audit.flows is set
    types = {family.name + ("_total" if family.type == "counter" else ""): family.type for family in registry.collect()}
    kinds = {
        "counter": exported_metrics.COUNTERS,
        "gauge": exported_metrics.GAUGES,
        "histogram": exported_metrics.HISTOGRAMS,
    }
    for name in set(exported_metrics.BEYOND_SPEC) - set(exported_metrics.REPLICA_METRICS):
        listed = next(kind for kind, names in kinds.items() if name in names)
        assert types.get(name) == listed, f"{name}: registered as {types.get(name)}, listed as {listed}"


def test_replica_metrics_are_registered_with_their_listed_type():
    from prometheus_client import CollectorRegistry

    from syncwatch.metrics.registry import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    types = {family.name + ("_total" if family.type == "counter" else ""): family.type for family in registry.collect()}
    assert {name: types.get(name) for name in exported_metrics.REPLICA_METRICS} == {
        "syncwatch_leader": "gauge",
        "syncwatch_leader_changes_total": "counter",
        "syncwatch_handoff_backlog_spans": "gauge",
    }


def test_snapshot_store_alert_keys_on_the_store_not_on_integration_drops():
    from syncwatch.snapshots import store

    rule = next(
        r
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if r.get("alert") == "SyncwatchSnapshotStoreFailing"
    )
    expr = rule["expr"]
    assert "syncwatch_snapshot_store_up" in expr
    assert "syncwatch_snapshots_total" not in expr  # counts integration-side drops too
    pattern = re.search(r'syncwatch_dropped_total\{reason=~"([^"]+)"\}', expr).group(1)
    # every reason a store raises matches; the integration-side snapshot reasons do not
    for reason in (store.STORE_FULL, store.STORE_UNAVAILABLE, store.STORE_ERROR):
        assert re.fullmatch(pattern, reason), reason
    for reason in ("snapshot_uncorrelated", "snapshot_invalid_direction"):
        assert not re.fullmatch(pattern, reason), reason
