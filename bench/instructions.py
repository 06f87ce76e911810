"""Instructions per span, counted by valgrind's callgrind: the figures of bench/ingest.py that do not
drift with the machine. On a shared VM wall time swings by half from minute to minute; an
instruction count is the same from run to run within ~1 %.

For each case, the count of a run over 2N requests minus that of a run over N, divided by the
N x 512 spans between them (imports, setup and warm-up cancel out):

- ceiling: bench/ingest.py's ceiling (parse with opentelemetry-proto, read every attribute);
- rules: spans as stock pika + requests emit them (no syncwatch attribute), 10 rules: parse into
  the intake's view, extraction and Ledger.record in batches of 4 requests, as the writer does;
- explicit: the same path for spans with syncwatch attributes, and their own ceiling.

What it leaves out: the HTTP handling and the event loop (~2-3 % of the sidecar's instructions,
measured once by running the sidecar itself under callgrind), and everything instruction counts
do not see (cache misses: the sidecar runs fewer instructions per second than the ceiling's tight
loop, so the wall-clock ratio of bench/ingest.py is lower than the ratio printed here).

Usage: .venv/bin/python bench/instructions.py [--requests 8]   (needs valgrind; ~3 minutes)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

T0 = 1.7e9  # fixed times: the same requests every run
BATCH = 4  # requests per Ledger.record, as the sidecar's writer groups them under load
CASES = ("ceiling", "rules", "explicit-ceiling", "explicit")


def work(case: str, k: int, n: int) -> None:
    """One counted run: build 2n requests, then run `case` over the first k."""
    import ingest

    plain = case in ("ceiling", "rules")
    build = ingest.build_plain_request if plain else ingest.build_request
    bodies = [build(b, T0) for b in range(2 * n)][:k]
    if case.endswith("ceiling"):
        ingest.ceiling(bodies)
        return
    from syncwatch.config.models import Config
    from syncwatch.intake.decode import PROTOBUF, decode_traces
    from syncwatch.intake.extract import SpanExtractor
    from syncwatch.ledger.transitions import Ledger
    from syncwatch.metrics.registry import Metrics
    from syncwatch.rules.engine import build_engine

    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"storage": {"data_dir": tmp}, **({"rules": ingest.RULES_CONFIG} if plain else {})}
        config = Config.model_validate(cfg)
        limit = config.limits.max_correlation_id_length
        extractor = SpanExtractor(config.correlation.keys, limit, build_engine(config.rules, limit))
        ledger = Ledger(config, Metrics(), clock=lambda: T0 + 3600)
        for i in range(0, k, BATCH):
            views = [decode_traces(body, PROTOBUF) for body in bodies[i : i + BATCH]]
            ledger.record([ev for view in views for ev in extractor.extract(view, T0 + 3600).events])
        ledger.close()


def count(case: str, k: int, n: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__]
        + ["--work", case, str(k), str(n)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {case} over {k} requests failed:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="N: each case runs over N and 2N requests")
    parser.add_argument("--work", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        case, k, n = args.work[0], int(args.work[1]), int(args.work[2])
        work(case, k, n)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    n = args.requests
    started = time.monotonic()
    runs = [(case, k) for case in CASES for k in (n, 2 * n)]
    with ThreadPoolExecutor(max(1, min(len(runs), os.cpu_count() or 1))) as pool:
        counts = dict(zip(runs, pool.map(lambda run: count(run[0], run[1], n), runs), strict=True))
    per_span = {case: (counts[(case, 2 * n)] - counts[(case, n)]) / (n * 512) for case in CASES}
    print(
        f"instructions per span (callgrind, requests {n + 1}-{2 * n} of 512 spans; {time.monotonic() - started:.0f} s)"
    )
    for case in CASES:
        print(f"  {case:18s} {per_span[case]:10,.0f}")
    print(f"rules path: {per_span['ceiling'] / per_span['rules']:.2f} of its ceiling's instructions per span")
    print(
        f"explicit path: {per_span['explicit-ceiling'] / per_span['explicit']:.2f} of its ceiling's instructions per span"
    )


if __name__ == "__main__":
    main()
