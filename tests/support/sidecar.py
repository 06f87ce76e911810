"""Run a real syncwatch sidecar as a subprocess for tests, and read its /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]  # the repository: tests/support/sidecar.py

__all__ = ["ROOT", "Sidecar", "free_port", "transactions_cli"]


class Sidecar:
    """`syncwatch run` on free loopback ports with its data in `workdir`."""

    def __init__(self, workdir: Path, config: dict | None = None, env: dict | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.otlp_http_port, self.otlp_grpc_port = free_port(), free_port(), free_port()
        cfg = dict(config or {})
        cfg.setdefault("listen", {})
        cfg["listen"] = {
            "http": f"127.0.0.1:{self.http_port}",
            "otlp_http": f"127.0.0.1:{self.otlp_http_port}",
            "otlp_grpc": f"127.0.0.1:{self.otlp_grpc_port}",
            **cfg["listen"],
        }
        cfg.setdefault("storage", {}).setdefault("data_dir", str(self.workdir / "data"))
        self.config = cfg
        self.config_path = self.workdir / "syncwatch.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "syncwatch.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}"

    @property
    def otlp_grpc(self) -> str:
        return f"127.0.0.1:{self.otlp_grpc_port}"

    def start(self, timeout: float = 30) -> Sidecar:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncwatch", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"syncwatch exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"syncwatch not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metrics(self) -> dict[tuple, float]:
        """All samples as {(name, frozenset(labels.items())): value}."""
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric(self, name: str, default: float | None = 0.0, **labels) -> float | None:
        return self.metrics().get((name, frozenset(labels.items())), default)

    def wait_for(self, name: str, value: float, timeout: float = 10, **labels) -> float:
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.metric(name, **labels)
            if got == value:
                return got
            time.sleep(0.1)
        raise AssertionError(f"{name}{labels} = {got}, expected {value} within {timeout}s")


def transactions_cli(sidecar: Sidecar, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    """`syncwatch transactions ...` against this sidecar, as a user runs it (a subprocess)."""
    cmd = [sys.executable, "-m", "syncwatch", "transactions", *args, "--url", sidecar.url]
    if token:
        cmd += ["--token", token]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
