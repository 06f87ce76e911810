"""The Helm chart (helm/syncwatch), rendered with Helm's own Go SDK (helm-python-sdk, no helm binary).

Every scenario's manifests go through Kubernetes' OpenAPI schemas (kubernetes-validate, strict)
or, for the Prometheus Operator's CRDs, through models generated from the CRD schemas. The config
the ConfigMap carries is loaded with syncwatch's own loader, and started for real once.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as promop

from syncwatch.config.models import ListenConfig
from syncwatch.settings import load_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "syncwatch"
EXAMPLE = CHART / "examples" / "integration"
RELEASE, NAMESPACE = "shop", "integrations"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema shipped.
KUBE_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
CRD_MODELS = {
    "ServiceMonitor": promop.ServiceMonitor,
    "PodMonitor": promop.PodMonitor,
    "PrometheusRule": promop.PrometheusRule,
}


def _load_sync_script():
    spec = importlib.util.spec_from_file_location("sync_chart_assets", ROOT / "scripts" / "sync-chart-assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_assets = _load_sync_script()
RULE_SOURCES = sync_assets.rule_files(ROOT / "alerts")
DASHBOARD_SOURCES = sync_assets.dashboard_files(ROOT / "dashboards")

MONITORING_ON = {
    "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "podMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": bool(RULE_SOURCES), "additionalLabels": {"release": "kube-prometheus-stack"}},
    "dashboards": {
        "enabled": bool(DASHBOARD_SOURCES),
        "additionalLabels": {"team": "integrations"},
        "annotations": {"grafana_folder": "Integrations"},
    },
}
EXISTING_SECRETS = {
    "apiToken": {"existingSecret": "syncwatch-api", "key": "bearer"},
    "credentials": {
        "rabbitmqPassword": {"existingSecret": "rabbitmq-monitoring", "key": "password", "env": "RABBITMQ_PASSWORD"},
        "serviceBusConnectionString": {
            "existingSecret": "servicebus",
            "key": "cs",
            "env": "SERVICEBUS_CONNECTION_STRING",
        },
    },
    "serviceAccount": {
        "awsRoleArn": "arn:aws:iam::123456789012:role/syncwatch",
        "azureClientId": "0b5e6a4c-1f2d-4c3b-9a8e-7d6c5b4a3f21",
    },
}
# Several replicas on one PostgreSQL ledger (issue 16): the ledger's DSN and snapshots in S3.
REPLICAS = {
    "replicaCount": 3,
    "config": {
        "storage": {"backend": "postgresql", "postgresql": {"statement_timeout": "5s"}},
        "snapshots": {"backend": "s3://shop-syncwatch/snapshots"},
    },
    "postgresql": {"dsnSecret": {"name": "syncwatch-ledger", "key": "dsn"}},
    "serviceAccount": {"awsRoleArn": "arn:aws:iam::123456789012:role/syncwatch"},
}
RECONCILER = {
    "type": "sql",
    "name": "shop-erp",
    "databases": {
        "shop": {"url": "postgresql://reconcile@shop-db:5432/shop"},
        "erp": {"url": "mysql://reconcile@erp-db:3306/erp"},
    },
    "flows": {
        "orders": {
            "source": {
                "database": "shop",
                "query": "SELECT order_id AS id, updated_at AS changed_at FROM orders"
                " WHERE updated_at >= :window_start AND updated_at < :window_end",
            },
            "destination": {
                "database": "erp",
                "query": "SELECT external_order_id AS id, record_id, created_at AS arrived_at FROM sales_orders",
            },
        }
    },
}
DATABASE_SECRETS = {
    "config": {"reconcilers": [RECONCILER]},
    "databaseSecrets": {
        "shop-erp": {
            "shop": {"existingSecret": "shop-db-readonly", "key": "password"},
            "erp": {"existingSecret": "erp-db-readonly", "key": "pw", "env": "ERP_DB_PASSWORD"},
        }
    },
}
SCENARIOS = {
    "default": {},
    "replicas-postgresql": REPLICAS,
    "replicas-pdb-max-unavailable": REPLICAS | {"podDisruptionBudget": {"maxUnavailable": 1}},
    "postgresql-dsn-env": {
        "config": {"storage": {"backend": "postgresql"}},
        "postgresql": {"dsnSecret": {"name": "syncwatch-ledger", "key": "dsn", "env": "LEDGER_DSN"}},
    },
    "persistence-off": {"persistence": {"enabled": False}},
    "monitoring-on": MONITORING_ON,
    "existing-secrets": EXISTING_SECRETS,
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "httpFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "egress": [{"ports": [{"port": 15672, "protocol": "TCP"}]}],
        }
    },
    "flows-and-collectors": {
        "config": {
            "flows": {"orders": {"destinations": ["erp"], "deadline": "10m"}},
            "collectors": [{"type": "rabbitmq", "name": "main", "url": "http://rabbitmq:15672", "username": "monitor"}],
            "sampling": {"interval": "60s", "fast_interval": "10s"},
        }
    },
}


# ---------------------------------------------------------------------------------------------
# Rendering and validation helpers


def render_chart(chart_dir: Path, values: dict | None = None, release: str = RELEASE) -> list[dict]:
    """What `helm template` would produce: schema check, render, then every YAML document."""
    with helm.Chart.load(chart_dir) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("_template", path)
                objects.append(doc)
    return objects


def render(values: dict | None = None, release: str = RELEASE) -> list[dict]:
    return render_chart(CHART, values, release)


def manifest(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "_template"}


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def _unknown_keys(given, kept, path="") -> list[str]:
    """Keys in `given` that a model dropped (pydantic ignores unknown fields): CRD typos."""
    if isinstance(given, dict) and isinstance(kept, dict):
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += _unknown_keys(value, kept[key], f"{path}.{key}")
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [k for i, (g, c) in enumerate(zip(given, kept)) for k in _unknown_keys(g, c, f"{path}[{i}]")]
    return []


def validate_manifest(obj: dict, versions: tuple[str, ...] = KUBE_VERSIONS) -> None:
    obj = manifest(obj)
    if obj["kind"] in CRD_MODELS:
        model = CRD_MODELS[obj["kind"]].model_validate(obj)
        kept = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
        assert not _unknown_keys(obj, kept), f"{obj['kind']}: fields not in the CRD schema: {_unknown_keys(obj, kept)}"
        return
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version} at {where}: {exc.message}"
            )


def rendered_config(objects: list[dict]) -> tuple[str, dict]:
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {}))
    text = cm["data"]["config.yaml"]
    return text, yaml.safe_load(text)


def container(objects: list[dict], name: str = "syncwatch") -> dict:
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == name)


def build_parent_chart(tmp_path: Path) -> Path:
    """The README's sidecar example as an integration chart with syncwatch under charts/."""
    parent = tmp_path / "integration"
    shutil.copytree(EXAMPLE, parent)
    shutil.copytree(CHART, parent / "charts" / "syncwatch", ignore=shutil.ignore_patterns("examples"))
    return parent


# ---------------------------------------------------------------------------------------------
# Every scenario: schema, lint, Kubernetes validity, loadable config


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_manifest_is_valid_kubernetes(scenario):
    objects = render(SCENARIOS[scenario])
    assert objects
    for obj in objects:
        validate_manifest(obj)
        assert obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_reports_no_errors(scenario):
    report = helm.lint(CHART, SCENARIOS[scenario], strict=False, namespace=NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    assert not errors, errors
    # Only the informational "icon is recommended" is left.
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]


def test_lint_catches_a_broken_template(tmp_path):
    broken = tmp_path / "syncwatch"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "service.yaml").write_text("{{ if }}\n")
    report = helm.lint(broken)
    assert any(m["severity"] == 3 for m in report["messages"]) or report["errors"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_syncwatch_accepts_the_rendered_config(scenario, tmp_path):
    objects = render(SCENARIOS[scenario])
    text, cfg = rendered_config(objects)
    token_file = cfg.get("api", {}).get("token_file")
    if token_file:
        # The Secret is a file in the pod; here it lives in a tmp dir at the same relative place.
        local = tmp_path / Path(token_file).relative_to("/")
        local.parent.mkdir(parents=True)
        local.write_text("s3cret-token\n")
        text = text.replace(token_file, str(local))
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path, environ={})
    assert str(config.storage.data_dir) == "/var/lib/syncwatch"
    dsn_secret = SCENARIOS[scenario].get("postgresql", {}).get("dsnSecret")
    if dsn_secret:
        assert config.storage.backend == "postgresql"
        if dsn_secret.get("env"):
            assert (config.storage.postgresql.dsn_env, config.storage.postgresql.dsn_file) == (dsn_secret["env"], None)
        else:
            assert str(config.storage.postgresql.dsn_file) == "/var/run/secrets/syncwatch/postgresql/dsn"
    if token_file:
        assert config.api.resolve_token() == "s3cret-token"


# ---------------------------------------------------------------------------------------------
# Standalone defaults


def test_default_release_objects():
    objects = render()
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
        "ServiceAccount",
    ]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one SQLite writer at a time
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    c = container(objects)
    assert c["command"] + c["args"] == ["syncwatch", "run", "--config", "/etc/syncwatch/config.yaml"]
    assert c["image"] == "syncwatch:0.1.0"  # the chart's appVersion
    data = next(v for v in pod["volumes"] if v["name"] == "syncwatch-data")
    assert data["persistentVolumeClaim"]["claimName"] == one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    config_volume = next(v for v in pod["volumes"] if v["name"] == "syncwatch-config")
    config_map = one(objects, "ConfigMap")
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert mounts["syncwatch-config"]["mountPath"] == "/etc/syncwatch" and mounts["syncwatch-config"]["readOnly"]
    assert mounts["syncwatch-data"]["mountPath"] == rendered_config(objects)[1]["storage"]["data_dir"]
    # The config checksum rolls the pod when the config changes.
    annotation = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/syncwatch-config"]
    changed = one(render({"config": {"log_level": "debug"}}), "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert annotation != changed["checksum/syncwatch-config"]


def test_hardened_security_context():
    objects = render()
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    sc = container(objects)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # A read-only root needs a writable /tmp.
    assert any(m["mountPath"] == "/tmp" for m in container(objects)["volumeMounts"])
    assert container(objects)["resources"]["limits"]["memory"]


def test_ports_agree_between_config_container_service_and_probes():
    objects = render({"ports": {"http": 19873, "otlpGrpc": 14317, "otlpHttp": 14318}})
    _, cfg = rendered_config(objects)
    listen = {k: int(v.rpartition(":")[2]) for k, v in cfg["listen"].items()}
    assert listen == {"http": 19873, "otlp_grpc": 14317, "otlp_http": 14318}
    assert all(v.startswith("0.0.0.0:") for v in cfg["listen"].values())  # reachable through the Service
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports == {"sw-http": 19873, "sw-otlp-grpc": 14317, "sw-otlp-http": 14318}
    service = one(objects, "Service")
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert {n: (p["port"], ports[p["targetPort"]]) for n, p in by_name.items()} == {
        "http": (19873, 19873),
        "otlp-grpc": (14317, 14317),
        "otlp-http": (14318, 14318),
    }
    assert by_name["otlp-grpc"]["appProtocol"] == "grpc"
    c = container(objects)
    assert (c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": "sw-http"},
        {"path": "/readyz", "port": "sw-http"},
    )
    assert (
        service["spec"]["selector"].items()
        <= one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


def test_default_ports_are_syncwatchs_own_defaults():
    _, cfg = rendered_config(render())
    defaults = ListenConfig()
    for key in ("http", "otlp_grpc", "otlp_http"):
        assert cfg["listen"][key].rpartition(":")[2] == getattr(defaults, key).rpartition(":")[2]
    assert cfg["listen"]["otlp_grpc"].endswith(":4317") and cfg["listen"]["otlp_http"].endswith(":4318")


@pytest.mark.rabbitmq
def test_rendered_config_runs_syncwatch_and_answers_the_probes(tmp_path):
    """The chart's config starts the real sidecar; the probe and scrape paths answer on its HTTP port."""
    from sidecar import Sidecar

    values = {
        "config": {
            "flows": {"orders": {"destinations": ["erp"], "deadline": "10m"}},
            # The local RabbitMQ's management API (guest): the collector list reaches the collectors.
            "collectors": [{"type": "rabbitmq", "name": "chart-test", "url": "http://127.0.0.1:15672"}],
        }
    }
    _, cfg = rendered_config(render(values))
    # Same config, but on free loopback ports and a tmp data dir (the pod has its own network and volume).
    cfg.pop("listen")
    cfg["storage"].pop("data_dir")
    sidecar = Sidecar(tmp_path / "sc", cfg).start()
    try:
        c = container(render())
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            status, _ = sidecar.get(c[probe]["httpGet"]["path"])
            assert status == 200, probe
        status, body = sidecar.get("/metrics")
        assert status == 200 and b"syncwatch_flow_deadline_seconds" in body
        assert sidecar.metric("syncwatch_flow_deadline_seconds", flow="orders") == 600
        sidecar.wait_for("syncwatch_collector_up", 1, timeout=30, collector="chart-test")
    finally:
        sidecar.stop()


def test_persistence_off_uses_an_emptydir():
    objects = render({"persistence": {"enabled": False}})
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    data = next(v for v in pod["volumes"] if v["name"] == "syncwatch-data")
    assert data == {"name": "syncwatch-data", "emptyDir": {"sizeLimit": "2Gi"}}


def test_existing_claim_is_used_and_none_created():
    objects = render({"persistence": {"existingClaim": "ledger"}})
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "syncwatch-data")["persistentVolumeClaim"] == {
        "claimName": "ledger"
    }


# ---------------------------------------------------------------------------------------------
# Credentials: only through Secrets


def test_existing_secrets_are_referenced_never_copied():
    objects = render(EXISTING_SECRETS)
    assert not [o for o in objects if o["kind"] == "Secret"]
    c = container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    _, cfg = rendered_config(objects)
    # API token: a Secret volume, mounted where the config's api.token_file points.
    volume = next(v for v in pod["volumes"] if v["name"] == "syncwatch-api-token")
    assert volume["secret"]["secretName"] == "syncwatch-api"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "syncwatch-api-token")
    assert mount["readOnly"] is True
    assert cfg["api"] == {"token_file": f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"}
    assert volume["secret"]["items"][0]["key"] == "bearer"
    # Broker credentials: env vars from secretKeyRef.
    env = {e["name"]: e for e in c["env"]}
    assert env["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "rabbitmq-monitoring", "key": "password"}
    assert env["SERVICEBUS_CONNECTION_STRING"]["valueFrom"]["secretKeyRef"] == {"name": "servicebus", "key": "cs"}
    # Env names the config loader would read as overrides would break it: none start with SYNCWATCH_.
    assert not [n for n in env if n.startswith("SYNCWATCH_")]
    # Workload identities.
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/syncwatch",
        "azure.workload.identity/client-id": "0b5e6a4c-1f2d-4c3b-9a8e-7d6c5b4a3f21",
    }
    assert one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"


def test_no_credentials_without_existing_secrets():
    objects = render()
    c = container(objects)
    assert [e["name"] for e in c["env"]] == ["TMPDIR"]
    assert "api" not in rendered_config(objects)[1]
    assert "annotations" not in one(objects, "ServiceAccount")["metadata"]


# ---------------------------------------------------------------------------------------------
# Monitoring objects


def test_monitoring_objects_are_opt_in():
    kinds = {o["kind"] for o in render()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert not [o for o in render() if "dashboards" in o["_template"]]


def test_service_monitor_scrapes_the_service_http_port_as_job_syncwatch():
    objects = render(MONITORING_ON)
    sm = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    http = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert http["port"] == 9873 and endpoint["path"] == "/metrics"
    # The alert rules select job="syncwatch" (alerts/syncwatch-rules.yml: SyncwatchDown).
    assert {"action": "replace", "targetLabel": "job", "replacement": "syncwatch"} in endpoint["relabelings"]


def test_pod_monitor_standalone_selects_the_deployment_pods():
    objects = render(MONITORING_ON)
    pm = one(objects, "PodMonitor")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in container(objects)["ports"]}


def _alert_rules(groups) -> list[dict]:
    return [r for g in groups for r in g["rules"]]


@pytest.mark.skipif(not RULE_SOURCES, reason="alerts/ has no rule file yet")
def test_prometheus_rule_carries_exactly_the_rule_files_of_alerts():
    groups = [g for path in RULE_SOURCES for g in yaml.safe_load(path.read_text())["groups"]]
    rule = one(render(MONITORING_ON), "PrometheusRule")
    assert rule["spec"]["groups"] == groups
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"] for r in _alert_rules(rule["spec"]["groups"]) if "alert" in r}
    assert "SyncwatchDeadLetterQueueNotEmpty" in alerts and "SyncwatchDown" in alerts


@pytest.mark.skipif(RULE_SOURCES != [], reason="alerts/ has rule files")
def test_prometheus_rule_without_rule_files_fails_clearly():
    with pytest.raises(helm.HelmRenderError, match="carries no alert rules"):
        render({"prometheusRule": {"enabled": True}})


@pytest.mark.skipif(not DASHBOARD_SOURCES, reason="dashboards/ has no dashboard JSON yet")
def test_dashboard_configmaps_carry_exactly_the_dashboards():
    objects = render(MONITORING_ON)
    maps = [o for o in objects if "dashboards" in o["_template"]]
    carried = {}
    for cm in maps:
        assert cm["kind"] == "ConfigMap"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["labels"]["team"] == "integrations"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Integrations"}
        assert len(cm["data"]) == 1
        carried.update(cm["data"])
    assert sorted(carried) == sorted(p.name for p in DASHBOARD_SOURCES)
    for path in DASHBOARD_SOURCES:
        assert carried[path.name] == path.read_text().rstrip("\n")
        assert json.loads(carried[path.name]) == json.loads(path.read_text())
    assert len({cm["metadata"]["name"] for cm in maps}) == len(maps)


@pytest.mark.skipif(DASHBOARD_SOURCES != [], reason="dashboards/ has dashboard JSON")
def test_dashboards_without_files_fail_clearly():
    with pytest.raises(helm.HelmRenderError, match="carries no dashboards"):
        render({"dashboards": {"enabled": True}})


def test_dashboard_label_is_configurable():
    if not DASHBOARD_SOURCES:
        pytest.skip("dashboards/ has no dashboard JSON yet")
    objects = render({"dashboards": {"enabled": True, "label": "grafana.com/dashboard", "labelValue": "syncwatch"}})
    maps = [o for o in objects if "dashboards" in o["_template"]]
    assert maps and all(cm["metadata"]["labels"]["grafana.com/dashboard"] == "syncwatch" for cm in maps)


# ---------------------------------------------------------------------------------------------
# The chart's copies of alerts/ and dashboards/


def test_chart_copies_of_alerts_and_dashboards_are_fresh():
    problems = sync_assets.stale()
    assert not problems, f"{problems}: run python scripts/sync-chart-assets.py"
    # Independently of the script: byte-equal copies.
    for path in RULE_SOURCES:
        assert (CHART / "files" / "alerts" / path.name).read_bytes() == path.read_bytes()
    for path in DASHBOARD_SOURCES:
        assert (CHART / "files" / "dashboards" / path.name).read_bytes() == path.read_bytes()


def test_stale_check_notices_changed_added_and_removed_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "alerts" / "tests").mkdir(parents=True)
    (repo / "dashboards").mkdir()
    (repo / "alerts" / "a.rules.yml").write_text("groups:\n- name: g\n  rules: []\n")
    (repo / "alerts" / "tests" / "a.test.yml").write_text("rule_files: [../a.rules.yml]\ntests: []\n")
    (repo / "alerts" / "prometheus.example.yml").write_text("rule_files: [a.rules.yml]\n")
    (repo / "dashboards" / "d.json").write_text('{"title": "d"}\n')
    files = tmp_path / "chart-files"
    assert sorted(sync_assets.stale(repo, files)) == [
        "missing: files/alerts/a.rules.yml",
        "missing: files/dashboards/d.json",
    ]
    sync_assets.sync(repo, files)
    assert sync_assets.stale(repo, files) == []
    assert sorted(p.name for p in (files / "alerts").iterdir()) == ["a.rules.yml"]  # tests and configs are not rules
    (repo / "dashboards" / "d.json").write_text('{"title": "d2"}\n')
    (repo / "dashboards" / "e.json").write_text("{}\n")
    (repo / "alerts" / "a.rules.yml").unlink()
    assert sorted(sync_assets.stale(repo, files)) == [
        "missing: files/dashboards/e.json",
        "no longer in alerts/: files/alerts/a.rules.yml",
        "out of date: files/dashboards/d.json",
    ]
    sync_assets.sync(repo, files)
    assert sync_assets.stale(repo, files) == []
    assert not (files / "alerts" / "a.rules.yml").exists()


# ---------------------------------------------------------------------------------------------
# The schema rejects wrong values, naming them

BAD_VALUES = [
    ({"mode": "daemonset"}, "/mode"),
    ({"ports": {"http": 70000}}, "/ports/http"),
    ({"ports": {"otlpGrpc": "4317"}}, "/ports/otlpGrpc"),
    ({"persistence": {"size": "lots"}}, "/persistence/size"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"image": {"tag": 1.2}}, "/image/tag"),
    ({"config": {"listen": {"http": "0.0.0.0:1"}}}, "/config/listen"),
    ({"config": {"api": {"token": "plain-text"}}}, "/config/api"),
    ({"config": {"storage": {"data_dir": "/elsewhere"}}}, "/config/storage/data_dir"),
    ({"config": {"flows": {"orders": {"deadline": "soon"}}}}, "/config/flows/orders/deadline"),
    ({"config": {"flows": {"orders": {"deadlin": "5m"}}}}, "'deadlin' not allowed"),
    ({"config": {"snapshots": {"backend": "ftp://x"}}}, "/config/snapshots/backend"),
    ({"config": {"snapshots": {"redact": {"hash_key": "k"}}}}, "/config/snapshots/redact/hash_key"),
    ({"config": {"collectors": [{"type": "rabbitmq", "name": "m", "password": "p"}]}}, "/config/collectors/0/password"),
    (
        {"config": {"collectors": [{"type": "servicebus", "name": "sb", "connection_string": "Endpoint=sb://x"}]}},
        "/config/collectors/0/connection_string",
    ),
    ({"config": {"collectors": [{"name": "nameless-type"}]}}, "/config/collectors/0"),
    ({"config": {"log_level": "verbose"}}, "/config/log_level"),
    ({"apiToken": {"token": "plain"}}, "'token' not allowed"),
    ({"credentials": {"x": {"existingSecret": "s", "key": "k", "env": "BAD NAME"}}}, "/credentials/x/env"),
    ({"serviceAccount": {"awsRoleArn": "my-role"}}, "/serviceAccount/awsRoleArn"),
    ({"serviceAccount": {"azureClientId": "not-a-guid"}}, "/serviceAccount/azureClientId"),
    ({"mode": "sidecar", "serviceMonitor": {"enabled": True}}, "/serviceMonitor/enabled"),
    ({"monitoring": {"interval": "often"}}, "/monitoring/interval"),
    ({"serviceMonitor": {"additionalLabels": {"release": 1}}}, "/serviceMonitor/additionalLabels/release"),
    ({"probes": {"liveness": {"httpGet": {"path": "/"}}}}, "'httpGet' not allowed"),
    ({"service": {"type": "ExternalName"}}, "/service/type"),
]


@pytest.mark.parametrize("values,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_key(values, where):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as exc:
            chart.validate_schema(values)
    assert where in str(exc.value)


def test_schema_accepts_the_documented_values():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(None)
        for values in SCENARIOS.values():
            chart.validate_schema(values)
        chart.validate_schema({"mode": "sidecar", "podMonitor": {"enabled": True}, "sidecar": {"native": True}})


def test_schema_config_section_follows_syncwatchs_config_models():
    """A key the chart's schema allows must exist in exporter/config/models.py, and every config key
    syncwatch has must be either allowed or owned by the chart (so the schema cannot drift)."""
    from syncwatch.config import models as cfgmod

    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    chart_owned = {"listen", "api"}
    assert set(schema) == set(cfgmod.Config.model_fields)
    sections = {
        "storage": cfgmod.StorageConfig,
        "intake": cfgmod.IntakeConfig,
        "correlation": cfgmod.CorrelationConfig,
        "snapshots": cfgmod.SnapshotsConfig,
        "limits": cfgmod.LimitsConfig,
    }
    for name, model in sections.items():
        assert set(schema[name]["properties"]) == set(model.model_fields), name
    assert set(schema["snapshots"]["properties"]["redact"]["properties"]) == set(cfgmod.RedactConfig.model_fields)
    assert set(schema["flows"]["additionalProperties"]["properties"]) == set(cfgmod.FlowConfig.model_fields)
    for owned in chart_owned:
        assert "const" in schema[owned]  # rejected with a message


# ---------------------------------------------------------------------------------------------
# Sidecar mode: the integration's chart includes the named templates


def test_sidecar_mode_renders_no_workload_of_its_own():
    kinds = sorted(o["kind"] for o in render({"mode": "sidecar", "podMonitor": {"enabled": True}}))
    assert kinds == ["ConfigMap", "PodMonitor"]


def test_sidecar_example_chart(tmp_path):
    parent = build_parent_chart(tmp_path)
    objects = render_chart(parent)
    for obj in objects:
        validate_manifest(obj)
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Deployment", "PodMonitor", "PrometheusRule"]
    deployment = one(objects, "Deployment")
    assert deployment["_template"] == "order-sync/templates/deployment.yaml"
    template = deployment["spec"]["template"]
    pod = template["spec"]
    assert [c["name"] for c in pod["containers"]] == ["order-sync", "syncwatch"]
    sidecar = container(objects)
    # Config: the subchart's ConfigMap, OTLP on the pod's loopback, metrics on all interfaces for the PodMonitor.
    config_map = one(objects, "ConfigMap")
    text, cfg = rendered_config(objects)
    assert (
        next(v for v in pod["volumes"] if v["name"] == "syncwatch-config")["configMap"]["name"]
        == config_map["metadata"]["name"]
    )
    assert cfg["listen"] == {"http": "0.0.0.0:9873", "otlp_grpc": "127.0.0.1:4317", "otlp_http": "127.0.0.1:4318"}
    assert cfg["flows"]["orders"] == {"destinations": ["erp"], "deadline": "5m"}
    app_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4317"
    # Every mount has its volume; the data dir is an emptyDir; the token comes from the Secret.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {m["name"] for m in sidecar["volumeMounts"]} <= set(volumes)
    assert "emptyDir" in volumes["syncwatch-data"]
    assert volumes["syncwatch-api-token"]["secret"]["secretName"] == "order-sync-syncwatch-api"
    assert sidecar["image"] == "syncwatch:0.1.0"  # the subchart's appVersion
    # A sidecar's readiness must not gate the integration's pod; liveness still restarts it.
    assert "readinessProbe" not in sidecar and sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The checksum annotation is the hash of exactly the config the ConfigMap carries.
    assert (
        template["metadata"]["annotations"]["checksum/syncwatch-config"]
        == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    )
    # The PodMonitor finds the integration's pods and scrapes the sidecar's port.
    pm = one(objects, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in sidecar["ports"]}
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # Lint of the integration's chart (with its subchart) is clean.
    report = helm.lint(parent, with_subcharts=True)
    assert not [m for m in report["messages"] if m["severity"] >= 3] and not report["errors"]


def test_sidecar_config_change_changes_the_pod_checksum(tmp_path):
    parent = build_parent_chart(tmp_path)
    before = one(render_chart(parent), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    after = one(render_chart(parent, {"syncwatch": {"config": {"log_level": "debug"}}}), "Deployment")
    assert before != after["spec"]["template"]["metadata"]["annotations"]


def test_native_sidecar_goes_to_init_containers(tmp_path):
    parent = build_parent_chart(tmp_path)
    objects = render_chart(parent, {"syncwatch": {"sidecar": {"native": True}}})
    for obj in objects:
        validate_manifest(obj, ("1.29", KUBE_VERSIONS[-1]))  # native sidecars: on by default from 1.29
    with pytest.raises(pytest.fail.Exception, match="restartPolicy"):
        validate_manifest(one(objects, "Deployment"), ("1.27",))  # before the field existed
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["order-sync"]
    init = pod["initContainers"]
    assert [c["name"] for c in init] == ["syncwatch"] and init[0]["restartPolicy"] == "Always"


def test_sidecar_helpers_need_the_chart_or_an_image_tag(tmp_path):
    parent = build_parent_chart(tmp_path)
    template = parent / "templates" / "deployment.yaml"
    template.write_text(template.read_text().replace(' "Chart" .Subcharts.syncwatch.Chart', ""))
    with pytest.raises(helm.HelmRenderError, match="image.tag"):
        render_chart(parent)
    objects = render_chart(parent, {"syncwatch": {"image": {"tag": "0.1.0"}}})
    assert container(objects)["image"] == "syncwatch:0.1.0"


def test_sidecar_secret_is_readable_without_the_integrations_fsgroup(tmp_path):
    objects = render_chart(build_parent_chart(tmp_path))
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert "fsGroup" not in pod.get("securityContext", {})
    volume = next(v for v in pod["volumes"] if v["name"] == "syncwatch-api-token")
    assert volume["secret"]["defaultMode"] == 0o444
    standalone = one(render(EXISTING_SECRETS), "Deployment")["spec"]["template"]["spec"]
    assert (
        next(v for v in standalone["volumes"] if v["name"] == "syncwatch-api-token")["secret"]["defaultMode"] == 0o440
    )


# ---------------------------------------------------------------------------------------------
# NetworkPolicy


def test_network_policy_allows_the_named_ports_only():
    values = copy.deepcopy(SCENARIOS["network-policy"])
    objects = render(values)
    policy = one(objects, "NetworkPolicy")
    port_names = {p["name"] for p in container(objects)["ports"]}
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == port_names
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    http_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "sw-http")
    assert http_rule["from"] == values["networkPolicy"]["httpFrom"]
    otlp_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "sw-otlp-grpc")
    assert otlp_rule["from"] == [{"podSelector": {}}]  # default: pods of the release's namespace
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"port": 53, "protocol": "UDP"} in policy["spec"]["egress"][0]["ports"]
    assert one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]


def _collector_reads_env(collector_type: str, field: str) -> bool:
    from syncwatch.collectors.plugins import load_collector_class

    return field in load_collector_class(collector_type).Settings.model_fields


@pytest.mark.parametrize(
    "collector,secret_field,entry",
    [
        (
            "rabbitmq",
            "password_env",
            {"type": "rabbitmq", "name": "main", "url": "http://rabbitmq:15672", "username": "monitor"},
        ),
        ("servicebus", "connection_string_env", {"type": "servicebus", "name": "sb"}),
    ],
)
def test_collector_credentials_from_secrets_reach_the_collector(collector, secret_field, entry, tmp_path):
    """The chart puts broker credentials in env vars (from Secrets); the collector config names the variable."""
    if not _collector_reads_env(collector, secret_field):
        pytest.skip(
            f"collectors/{collector}.py has no `{secret_field}` yet: a chart user cannot pass its secret except inline"
        )
    env_name = EXISTING_SECRETS["credentials"][
        "rabbitmqPassword" if collector == "rabbitmq" else "serviceBusConnectionString"
    ]["env"]
    objects = render(EXISTING_SECRETS | {"config": {"collectors": [entry | {secret_field: env_name}]}})
    assert env_name in {e["name"] for e in container(objects)["env"]}
    text, _ = rendered_config(objects)
    text = text.replace("/var/run/secrets/syncwatch/api-token/bearer", str(tmp_path / "token"))
    (tmp_path / "token").write_text("t")
    (tmp_path / "config.yaml").write_text(text)
    secret = (
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v"
        if collector == "servicebus"
        else "pw"
    )
    load_config(tmp_path / "config.yaml", environ={env_name: secret})


def test_long_release_name_gives_valid_unique_names():
    release = "order-sync-production-eu-west-1-storefront-erp-bridge"  # 53 characters, Helm's maximum
    helm.validate_release_name(release)
    objects = render(MONITORING_ON | {"networkPolicy": {"enabled": True}}, release=release)
    for obj in objects:
        validate_manifest(obj)
        assert len(obj["metadata"]["name"]) <= 63
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))


def test_storage_class_dash_means_no_class():
    pvc = one(render({"persistence": {"storageClass": "-"}}), "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == ""
    pvc = one(render({"persistence": {"storageClass": "fast-ssd", "size": "20Gi"}}), "PersistentVolumeClaim")
    assert (pvc["spec"]["storageClassName"], pvc["spec"]["resources"]["requests"]["storage"]) == ("fast-ssd", "20Gi")
    assert "storageClassName" not in one(render(), "PersistentVolumeClaim")["spec"]  # the cluster's default


def test_packaged_chart_carries_rules_and_dashboards_but_not_the_example(tmp_path):
    archive = helm.package(CHART, destination=tmp_path)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {f"syncwatch/files/alerts/{p.name}" for p in RULE_SOURCES} <= names
    assert {f"syncwatch/files/dashboards/{p.name}" for p in DASHBOARD_SOURCES} <= names
    assert "syncwatch/values.schema.json" in names
    assert not [n for n in names if "/examples/" in n]
    # The archive renders like the directory does.
    with helm.Chart.load(archive) as packaged, helm.Chart.load(CHART) as directory:
        assert packaged.render(MONITORING_ON, name=RELEASE, namespace=NAMESPACE) == directory.render(
            MONITORING_ON, name=RELEASE, namespace=NAMESPACE
        )


def test_values_keep_their_types_through_the_template(tmp_path):
    """Helm turns numbers into floats; large integers and fractional durations must survive toYaml."""
    objects = render(
        {
            "config": {
                "snapshots": {"max_bytes": 2097152, "retention": "96h"},
                "intake": {"max_queued_spans": 50000000, "retry_after": 1.5},
                "correlation": {"keys": ["order.id"]},
            }
        }
    )
    (tmp_path / "config.yaml").write_text(rendered_config(objects)[0])
    config = load_config(tmp_path / "config.yaml", environ={})
    assert (config.snapshots.max_bytes, config.snapshots.retention) == (2097152, 96 * 3600)
    assert (config.intake.max_queued_spans, config.intake.retry_after) == (50000000, 1.5)
    assert config.correlation.keys == ["order.id"]


def _check_config(tmp_path, values) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(rendered_config(render(values))[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", "check-config", str(tmp_path / "config.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_syncwatch_check_config_accepts_the_default_release(tmp_path):
    result = _check_config(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "ledger: /var/lib/syncwatch/ledger.db" in result.stdout


def test_check_config_names_what_the_schema_cannot_see(tmp_path):
    # 24h passes the schema (a valid duration) but syncwatch keeps snapshots at least 72h.
    result = _check_config(tmp_path, {"config": {"snapshots": {"retention": "24h"}}})
    assert result.returncode != 0
    assert "snapshots.retention" in result.stderr and "72h" in result.stderr


def test_extra_volumes_mount_a_private_ca_for_a_collector(tmp_path):
    values = {
        "extraVolumes": [{"name": "broker-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "broker-ca", "mountPath": "/etc/ssl/broker", "readOnly": True}],
        "config": {
            "collectors": [
                {
                    "type": "rabbitmq",
                    "name": "main",
                    "url": "https://rabbitmq:15671",
                    "ca_file": "/etc/ssl/broker/ca.crt",
                }
            ]
        },
    }
    objects = render(values)
    for obj in objects:
        validate_manifest(obj)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "broker-ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "broker-ca", "mountPath": "/etc/ssl/broker", "readOnly": True} in container(objects)["volumeMounts"]
    sidecar_objects = render_chart(build_parent_chart(tmp_path), {"syncwatch": values})
    sidecar_pod = one(sidecar_objects, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "broker-ca", "configMap": {"name": "corp-ca"}} in sidecar_pod["volumes"]


# ---------------------------------------------------------------------------------------------
# Several replicas on one PostgreSQL ledger (issue 16)


def _render_error(values: dict) -> str:
    with pytest.raises(helm.HelmRenderError) as exc:
        render(values)
    return str(exc.value)


@pytest.mark.parametrize(
    "values,message",
    [
        (
            {"replicaCount": 2},
            "replicaCount: 2 replicas need the ledger in PostgreSQL: the embedded SQLite ledger is one file on "
            "one pod's volume. Set config.storage.backend: postgresql and postgresql.dsnSecret.name",
        ),
        (
            REPLICAS | {"config": {"storage": {"backend": "postgresql"}}},
            "replicaCount: 3 replicas need the payload snapshots in S3: the sqlite snapshot store is one file on "
            "one pod's volume. Set config.snapshots.backend: s3://bucket/prefix (or config.snapshots.enabled: false)",
        ),
        (
            REPLICAS | {"config": {"storage": {"backend": "postgresql"}, "snapshots": {"backend": "sqlite"}}},
            "replicaCount: 3 replicas need the payload snapshots in S3",
        ),
        (
            REPLICAS | {"config": {"snapshots": {"backend": "s3://b/p"}}},
            "replicaCount: 3 replicas need the ledger in PostgreSQL",
        ),
        (
            {"mode": "sidecar", "replicaCount": 2},
            "replicaCount: 2: sidecar mode runs one syncwatch in each integration pod",
        ),
    ],
    ids=["sqlite-ledger", "sqlite-snapshots-by-default", "sqlite-snapshots", "s3-but-sqlite-ledger", "sidecar"],
)
def test_replicas_are_refused_without_postgresql_and_s3(values, message):
    assert message in _render_error(values)


def test_replicas_with_snapshots_off_need_no_s3():
    values = REPLICAS | {"config": {"storage": {"backend": "postgresql"}, "snapshots": {"enabled": False}}}
    objects = render(values)
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]


def test_postgresql_backend_needs_the_dsn_secret_and_nothing_else():
    assert "config.storage.backend: postgresql needs the DSN from a Secret: set postgresql.dsnSecret.name" in (
        _render_error({"config": {"storage": {"backend": "postgresql"}}})
    )
    assert "postgresql.dsnSecret.name is set but config.storage.backend is not postgresql" in _render_error(
        {"postgresql": {"dsnSecret": {"name": "syncwatch-ledger", "key": "dsn"}}}
    )
    both = REPLICAS | {
        "config": REPLICAS["config"] | {"storage": {"backend": "postgresql", "postgresql": {"dsn_env": "X"}}}
    }
    assert "config.storage.postgresql.dsn_file / dsn_env and postgresql.dsnSecret.name are both set" in (
        _render_error(both)
    )


def test_three_replicas_render_a_pdb_rolling_updates_and_no_ledger_claim():
    objects = render(REPLICAS)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "syncwatch", "app.kubernetes.io/instance": RELEASE}},
    }
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # nothing on the data volume: no claim, an emptyDir
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["syncwatch-data"]
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname" and spread[0]["whenUnsatisfiable"] == "ScheduleAnyway"
    # the DSN: a file from the Secret, named in the config, never in the ConfigMap or env
    assert volumes["syncwatch-postgresql"]["secret"] == {
        "secretName": "syncwatch-ledger",
        "items": [{"key": "dsn", "path": "dsn"}],
        "defaultMode": 0o440,
    }
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["syncwatch-postgresql"] == {
        "name": "syncwatch-postgresql",
        "mountPath": "/var/run/secrets/syncwatch/postgresql",
        "readOnly": True,
    }
    _, cfg = rendered_config(objects)
    assert cfg["storage"] == {
        "backend": "postgresql",
        "data_dir": "/var/lib/syncwatch",
        "postgresql": {"dsn_file": "/var/run/secrets/syncwatch/postgresql/dsn", "statement_timeout": "5s"},
    }
    assert "postgresql://" not in json.dumps([manifest(o) for o in objects])


def test_pdb_max_unavailable_instead_and_not_both():
    objects = render(SCENARIOS["replicas-pdb-max-unavailable"])
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in one(objects, "PodDisruptionBudget")["spec"]
    pct = render(REPLICAS | {"podDisruptionBudget": {"minAvailable": "50%"}})
    assert one(pct, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    two = one(render(REPLICAS | {"podDisruptionBudget": {"minAvailable": 2}}), "PodDisruptionBudget")["spec"]
    assert (two["minAvailable"], "maxUnavailable" in two) == (2, False)
    assert "podDisruptionBudget: set minAvailable or maxUnavailable, not both" in _render_error(
        REPLICAS | {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}
    )
    assert not [
        o for o in render(REPLICAS | {"podDisruptionBudget": {"enabled": False}}) if o["kind"] == "PodDisruptionBudget"
    ]


def test_one_replica_keeps_recreate_and_no_pdb():
    for values in ({}, SCENARIOS["postgresql-dsn-env"]):
        objects = render(values)
        assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
        assert one(objects, "Deployment")["spec"]["replicas"] == 1
        assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    # PostgreSQL ledger, SQLite snapshots: the claim stays for the snapshots
    assert [o for o in render(SCENARIOS["postgresql-dsn-env"]) if o["kind"] == "PersistentVolumeClaim"]


def test_dsn_from_an_env_var_reaches_syncwatch(tmp_path):
    objects = render(SCENARIOS["postgresql-dsn-env"])
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["LEDGER_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "syncwatch-ledger", "key": "dsn"}}
    assert "syncwatch-postgresql" not in {m["name"] for m in container(objects)["volumeMounts"]}
    text, _ = rendered_config(objects)
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml", environ={"LEDGER_DSN": "postgresql://sw:pw@db:5432/sw"})
    assert config.storage.postgresql.dsn_env == "LEDGER_DSN"


@pytest.mark.parametrize(
    "values,where",
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"replicaCount": "3"}, "/replicaCount"),
        ({"podDisruptionBudget": {"minAvailable": "half"}}, "/podDisruptionBudget/minAvailable"),
        ({"postgresql": {"dsnSecret": {"name": "Bad_Name", "key": "dsn"}}}, "/postgresql/dsnSecret/name"),
        (
            {"postgresql": {"dsnSecret": {"name": "s", "key": "dsn", "env": "SYNCWATCH_PG_DSN"}}},
            "/postgresql/dsnSecret/env",
        ),
        ({"postgresql": {"dsn": "postgresql://u:p@h/db"}}, "'dsn' not allowed"),
        ({"databaseSecrets": {"r": {"db": {"key": "password"}}}}, "/databaseSecrets/r/db"),
        ({"databaseSecrets": {"r": {"db": {"existingSecret": "s", "password": "p"}}}}, "'password' not allowed"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_schema_rejects_bad_replica_and_secret_values(values, where):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as exc:
            chart.validate_schema(values)
    assert where in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Reconcilers' database passwords from Secrets (issue 14)


def test_reconciler_database_passwords_come_from_secrets(tmp_path):
    objects = render(DATABASE_SECRETS)
    for obj in objects:
        validate_manifest(obj)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    env = {e["name"]: e for e in container(objects)["env"]}
    # shop: a file from its Secret; erp: an env var from its Secret
    shop = next(name for name, v in volumes.items() if v.get("secret", {}).get("secretName") == "shop-db-readonly")
    assert volumes[shop]["secret"]["items"] == [{"key": "password", "path": "password"}]
    assert mounts[shop]["mountPath"] == "/var/run/secrets/syncwatch/databases/shop-erp/shop"
    assert mounts[shop]["readOnly"] is True
    assert env["ERP_DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "erp-db-readonly", "key": "pw"}}
    assert not [v for v in volumes.values() if v.get("secret", {}).get("secretName") == "erp-db-readonly"]
    text, cfg = rendered_config(objects)
    databases = cfg["reconcilers"][0]["databases"]
    assert databases["shop"] == {
        "url": "postgresql://reconcile@shop-db:5432/shop",
        "password_file": "/var/run/secrets/syncwatch/databases/shop-erp/shop/password",
    }
    assert databases["erp"] == {"url": "mysql://reconcile@erp-db:3306/erp", "password_env": "ERP_DB_PASSWORD"}
    # syncwatch's own loader accepts it, the file at the same place under tmp_path
    local = tmp_path / "var/run/secrets/syncwatch/databases/shop-erp/shop/password"
    local.parent.mkdir(parents=True)
    local.write_text("shop-pw\n")
    text = text.replace("/var/run/secrets/syncwatch/databases", str(tmp_path / "var/run/secrets/syncwatch/databases"))
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml", environ={"ERP_DB_PASSWORD": "erp-pw"})
    from syncwatch.reconcile.sql_settings import SqlSettings

    settings = SqlSettings.model_validate(config.reconcilers[0], context={"environ": {"ERP_DB_PASSWORD": "erp-pw"}})
    environ = {"ERP_DB_PASSWORD": "erp-pw"}
    assert settings.databases["shop"].password(environ) == "shop-pw"
    assert settings.databases["erp"].password(environ) == "erp-pw"


@pytest.mark.parametrize(
    "secrets,message",
    [
        (
            {"shop-crm": {"shop": {"existingSecret": "s"}}},
            'databaseSecrets.shop-crm: config.reconcilers has no reconciler named "shop-crm"',
        ),
        (
            {"shop-erp": {"wms": {"existingSecret": "s"}}},
            'databaseSecrets.shop-erp.wms: reconciler "shop-erp" has no database named "wms" under databases',
        ),
    ],
    ids=["unknown-reconciler", "unknown-database"],
)
def test_database_secrets_for_what_the_config_lacks_fail_naming_it(secrets, message):
    assert message in _render_error({"config": {"reconcilers": [RECONCILER]}, "databaseSecrets": secrets})


def test_database_secret_beside_a_password_key_fails():
    reconciler = copy.deepcopy(RECONCILER)
    reconciler["databases"]["shop"]["password_env"] = "SHOP_PW"
    message = _render_error(
        {"config": {"reconcilers": [reconciler]}, "databaseSecrets": DATABASE_SECRETS["databaseSecrets"]}
    )
    assert "databaseSecrets.shop-erp.shop: config.reconcilers[shop-erp].databases.shop already sets password_file" in (
        message
    )


def test_readmes_replicas_example_renders_valid_and_syncwatch_loads_it(tmp_path):
    values = yaml.safe_load((CHART / "examples" / "replicas-postgresql.yaml").read_text())
    objects = render(values)
    for obj in objects:
        validate_manifest(obj)
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    report = helm.lint(CHART, values, strict=False, namespace=NAMESPACE)
    assert not [m for m in report["messages"] if m["severity"] >= 3] + report["errors"]
    text, _ = rendered_config(objects)
    secrets = tmp_path / "var/run/secrets/syncwatch"
    for path, content in {"api-token/token": "t", "databases/shop-erp/shop/password": "pw"}.items():
        (secrets / path).parent.mkdir(parents=True, exist_ok=True)
        (secrets / path).write_text(content)
    (tmp_path / "config.yaml").write_text(text.replace("/var/run/secrets/syncwatch", str(secrets)))
    config = load_config(tmp_path / "config.yaml", environ={"ERP_DB_PASSWORD": "pw"})
    assert config.storage.backend == "postgresql"
    assert config.snapshots.backend == "s3://acme-syncwatch/snapshots"
    # the READMEs point at it
    for readme in (ROOT / "README.md", CHART / "README.md"):
        assert "examples/replicas-postgresql.yaml" in readme.read_text(), readme


def test_sidecar_pod_monitor_labels_each_sidecars_ledger():
    objects = render({"mode": "sidecar", "podMonitor": {"enabled": True}})
    endpoint = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_name"],
        "targetLabel": "ledger",
    } in endpoint["relabelings"]
    standalone = one(render({"podMonitor": {"enabled": True}}), "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert "ledger" not in json.dumps(standalone)  # replicas of one ledger must aggregate
