"""Real Prometheus and Alertmanager for the tests (Debian's prometheus and prometheus-alertmanager
packages; scripts/system-deps.sh installs them): a webhook receiver, runners on free ports, queries,
and where promtool/amtool are. Tests that use any of it are marked `prometheus`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from ports import free_port
from sidecar import ROOT

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")


# Grafana's variables replaced by values Prometheus accepts, to check the query itself.
def substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace('"$job"', '".*"')
        .replace('"$flow"', '".*"')
        .replace('"$broker"', '".*"')
        .replace('"$queue"', '".*"')
        .replace('"$collector"', '".*"')
    )


# --- the webhook Alertmanager posts to -------------------------------------------------------


class Webhook:
    """aiohttp server in its own thread; records (monotonic time, receiver path, payload)."""

    def __init__(self):
        self.port = free_port()
        self.received: list[tuple[float, str, dict]] = []
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _run(self):
        from aiohttp import web

        async def hook(request: web.Request):
            payload = await request.json()
            with self._cond:
                self.received.append((time.monotonic(), request.match_info["receiver"], payload))
                self._cond.notify_all()
            return web.Response(text="ok")

        async def main():
            app = web.Application()
            app.router.add_post("/{receiver}", hook)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(main())
        self._loop.run_forever()

    def start(self) -> Webhook:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self):
        async def cleanup():
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def alerts(self, receiver: str | None = None) -> list[tuple[float, str, dict]]:
        """(arrival, receiver, alert) for every firing alert received so far."""
        with self._cond:
            return [
                (t, r, a)
                for t, r, p in self.received
                if receiver in (None, r)
                for a in p["alerts"]
                if a["status"] == "firing"
            ]

    def wait_for(self, match, timeout: float) -> tuple[float, str, dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, r, p in self.received:
                    for a in p["alerts"]:
                        if a["status"] == "firing" and match(r, a):
                            return t, r, a
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no matching alert within {timeout}s; received: {json.dumps(self.received)[:3000]}"
                    )
                self._cond.wait(left)


# --- real Prometheus and Alertmanager --------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


class Service:
    def __init__(self, name: str, args: list[str], workdir: Path, ready_url: str):
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=workdir)
        _wait_http(ready_url, self.proc, self.log)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def alertmanager_config(webhook: Webhook, ticket_group_wait: str | None = None) -> dict:
    """alerts/alertmanager.example.yml with its two receivers pointed at the test webhook."""
    cfg = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    for receiver in cfg["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook.url(receiver["name"])
    if ticket_group_wait is not None:  # only the batching delay of tickets, to keep the test short
        cfg["route"]["group_wait"] = ticket_group_wait
        for route in cfg["route"]["routes"]:
            if route["receiver"] == "ticket":
                route["group_wait"] = ticket_group_wait
    return cfg


def start_alertmanager(workdir: Path, webhook: Webhook, **kw) -> tuple[Service, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(webhook, **kw)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    svc = Service(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        workdir,
        url + "/-/ready",
    )
    return svc, url


def start_prometheus(workdir: Path, sidecar_port: int, alertmanager_url: str) -> tuple[Service, str]:
    """alerts/prometheus.example.yml (its intervals, rule file and job name) aimed at the test's ports."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((ROOT / "alerts" / "prometheus.example.yml").read_text())
    cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager_url.removeprefix("http://")]
    cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{sidecar_port}"]
    shutil.copy(ROOT / "alerts" / "syncwatch-rules.yml", workdir / "syncwatch-rules.yml")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    svc = Service(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir,
        url + "/-/ready",
    )
    return svc, url


def prom_query(prom_url: str, expr: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prom_url}/api/v1/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_query(prom_url: str, expr: str, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = prom_query(prom_url, expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)
