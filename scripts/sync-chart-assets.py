#!/usr/bin/env python3
"""Copy the alert rules (alerts/) and Grafana dashboards (dashboards/) into the Helm chart.

Helm can only package files inside the chart directory, so helm/syncwatch/files/ carries copies:
  alerts/*.yml|*.yaml with a top-level `groups:` (Prometheus rule files; promtool test files and
  Prometheus configs are skipped)  ->  helm/syncwatch/files/alerts/
  dashboards/**/*.json                                          ->  helm/syncwatch/files/dashboards/
Copies of files that no longer exist are removed.

    python scripts/sync-chart-assets.py           # refresh the copies
    python scripts/sync-chart-assets.py --check   # exit 1, listing what is stale, change nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART_FILES = REPO / "helm" / "syncwatch" / "files"


def rule_files(alerts_dir: Path) -> list[Path]:
    """Prometheus rule files: YAML whose top level has `groups`."""
    found = []
    for path in sorted(alerts_dir.glob("*.y*ml")):
        if path.suffix not in (".yml", ".yaml"):
            continue
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            found.append(path)
    return found


def dashboard_files(dashboards_dir: Path) -> list[Path]:
    found = sorted(dashboards_dir.rglob("*.json"))
    names = [p.name for p in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        # The chart keeps them flat (one ConfigMap key per file name).
        raise SystemExit(f"dashboards/: file names must be unique, found twice: {', '.join(duplicates)}")
    return found


def expected_copies(repo: Path = REPO) -> dict[str, dict[str, bytes]]:
    """Chart subdirectory -> {file name: content} that files/ must hold."""
    return {
        "alerts": {p.name: p.read_bytes() for p in rule_files(repo / "alerts")},
        "dashboards": {p.name: p.read_bytes() for p in dashboard_files(repo / "dashboards")},
    }


def stale(repo: Path = REPO, chart_files: Path = CHART_FILES) -> list[str]:
    """What differs between the sources and the chart's copies (empty when in sync)."""
    problems = []
    for sub, wanted in expected_copies(repo).items():
        target = chart_files / sub
        present = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} if target.is_dir() else {}
        for name in sorted(set(wanted) | set(present)):
            if name not in present:
                problems.append(f"missing: files/{sub}/{name}")
            elif name not in wanted:
                problems.append(f"no longer in {sub}/: files/{sub}/{name}")
            elif present[name] != wanted[name]:
                problems.append(f"out of date: files/{sub}/{name}")
    return problems


def sync(repo: Path = REPO, chart_files: Path = CHART_FILES) -> list[str]:
    changes = stale(repo, chart_files)
    for sub, wanted in expected_copies(repo).items():
        target = chart_files / sub
        target.mkdir(parents=True, exist_ok=True)
        for path in target.iterdir():
            if path.is_file() and path.name not in wanted:
                path.unlink()
        for name, content in wanted.items():
            dest = target / name
            if not dest.is_file() or dest.read_bytes() != content:
                dest.write_bytes(content)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale copies and exit 1; change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for line in problems:
            print(line)
        if problems:
            print("run: python scripts/sync-chart-assets.py", file=sys.stderr)
            return 1
        print("chart assets are in sync")
        return 0
    for line in sync():
        print(f"updated ({line})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
