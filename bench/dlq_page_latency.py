"""Seconds from a message dead-lettered in RabbitMQ to the page at the pager webhook.

Runs the end-to-end stack of tests/test_e2e_alerting.py (real RabbitMQ, syncwatch with its RabbitMQ
collector at the fast 10s interval, Prometheus with alerts/prometheus.example.yml's 10s scrape and
evaluation, Alertmanager with alerts/alertmanager.example.yml) and dead-letters one message per
round into a fresh DLQ, printing each latency and the summary. Target: within 30s.

    .venv/bin/python bench/dlq_page_latency.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "support")]

import test_e2e_alerting as e2e


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    missing = e2e._missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    figures = []
    for i in range(a.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            stack = e2e.Stack(Path(tmp))
            try:
                stack.wait_steady()
                time.sleep(i * 3.3)  # spread the dead-lettering over the sampling/scrape cycles
                seconds, _ = e2e.measure_dlq_page(stack)
            finally:
                stack.close()
        figures.append(seconds)
        print(f"round {i + 1}: {seconds:.1f}s dead-letter -> page")
    print(
        f"DLQ page latency over {len(figures)} rounds: min {min(figures):.1f}s, "
        f"median {statistics.median(figures):.1f}s, max {max(figures):.1f}s (target 30s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
