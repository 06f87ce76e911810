"""The live view: what syncwatch reports while the sale runs, read from its own /metrics."""

from __future__ import annotations

from collections import defaultdict

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


class MetricsView:
    """One scrape of /metrics, indexed by sample name."""

    def __init__(self, text: str):
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[s.name].append((s.labels, s.value))

    def total(self, name: str, **labels) -> float:
        return sum(v for lab, v in self.samples.get(name, ()) if all(lab.get(k) == w for k, w in labels.items()))

    def by(self, name: str, label: str, **labels) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for lab, v in self.samples.get(name, ()):
            if all(lab.get(k) == w for k, w in labels.items()):
                out[lab.get(label, "")] += v
        return dict(out)

    def quantile(self, name: str, q: float, **labels) -> float | None:
        """Histogram quantile from cumulative buckets (upper bound of the bucket holding q)."""
        buckets = sorted((float(le), v) for le, v in self.by(f"{name}_bucket", "le", **labels).items())
        if not buckets or buckets[-1][1] == 0:
            return None
        target = q * buckets[-1][1]
        for le, count in buckets:
            if count >= target:
                return le
        return None

    def mean(self, name: str, **labels) -> float | None:
        count = self.total(f"{name}_count", **labels)
        return self.total(f"{name}_sum", **labels) / count if count else None


async def scrape(session: aiohttp.ClientSession, url: str) -> MetricsView:
    async with session.get(f"{url}/metrics") as resp:
        resp.raise_for_status()
        return MetricsView(await resp.text())


def _fmt_s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def live_line(elapsed: float, sent_orders: int, m: MetricsView) -> str:
    codes = m.by("syncwatch_attempts_total", "status_code")
    retries = m.total("syncwatch_retries_total")
    code_text = " ".join(f"{c}:{int(n)}" for c, n in sorted(codes.items()) if n) or "-"
    return (
        f"[{elapsed:5.1f}s] orders sent {sent_orders:4d}  confirmed "
        f"{int(m.total('syncwatch_transactions_total', flow='orders', outcome='confirmed')):4d}  "
        f"pending {int(m.total('syncwatch_transactions_pending', flow='orders')):3d}  "
        f"overdue {int(m.total('syncwatch_transactions_overdue')):2d}  "
        f"failed {int(m.total('syncwatch_transactions_total', outcome='failed')):2d}  "
        f"| DLQ {int(m.total('syncwatch_dlq_messages')):2d}  "
        f"| attempts {code_text}  retries {int(retries)}  "
        f"| order lag p50 {_fmt_s(m.quantile('syncwatch_sync_lag_seconds', 0.5, flow='orders'))} "
        f"p95 {_fmt_s(m.quantile('syncwatch_sync_lag_seconds', 0.95, flow='orders'))}"
    )
