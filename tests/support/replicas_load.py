"""Several syncwatch sidecars on one PostgreSQL ledger: their metrics summed as Prometheus' sum()
would, and a bounded load that spreads source spans over them and remembers what was acknowledged."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from otlp_raw import post, stage_request
from sidecar import Sidecar

COMMON = {"syncwatch.flow": "orders", "syncwatch.source": "storefront", "syncwatch.destination": "erp"}


def summed(sidecars: list[Sidecar], name: str, **labels: str) -> float:
    """sum(name{labels}) over the replicas that export the series (a missing series counts 0)."""
    total = 0.0
    for sc in sidecars:
        if sc.proc is not None and sc.proc.poll() is None:
            total += sc.metric(name, default=0.0, **labels) or 0.0
    return total


def series(sc: Sidecar, name: str) -> list[float]:
    """Every sample of one metric on one replica (any labels)."""
    return [v for (n, _), v in sc.metrics().items() if n == name]


def wait_until(check, timeout: float, what: str) -> float:
    """Poll check() until it is true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def sources(corrs: list[str], changed_at: float) -> bytes:
    spans = [{"_start": changed_at, "syncwatch.stage": "source", **COMMON, "correlation_id": c} for c in corrs]
    return stage_request(spans).SerializeToString()


@dataclass
class Load:
    """Threads that each send requests of `per_request` source spans to one replica until stopped
    or `max_requests` each; acknowledged (200) correlation IDs and every answer code are kept."""

    targets: list[Sidecar]
    changed_at: float
    per_request: int = 20
    max_requests: int = 2000
    acked: set[str] = field(default_factory=set)
    codes: dict[int, int] = field(default_factory=dict)
    retry_after: set[str] = field(default_factory=set)  # Retry-After values of 503s
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i, sc in enumerate(self.targets):
            t = threading.Thread(target=self._send, args=(i, sc), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _send(self, i: int, sc: Sidecar) -> None:
        for j in range(self.max_requests):
            if self._stop.is_set():
                return
            corrs = [f"r{i}-{j}-{k}" for k in range(self.per_request)]
            try:
                status, headers, _ = post(sc.otlp_http + "/v1/traces", sources(corrs, self.changed_at), timeout=30)
            except OSError:  # a killed replica refuses or resets: not acknowledged
                status, headers = 0, {}
                time.sleep(0.05)
            with self._lock:
                self.codes[status] = self.codes.get(status, 0) + 1
                if status == 200:
                    self.acked.update(corrs)
                elif status == 503:
                    self.retry_after.add(headers.get("Retry-After", ""))
            if status != 200:
                time.sleep(0.05)

    def stop(self) -> Load:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self
