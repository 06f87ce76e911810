"""Latency of the web view's overdue list with a big ledger: 100,000 overdue transactions (each
with a few attempts in its timeline), first page of 100 rows, and a deep page by cursor, over a
real aiohttp server with the login cookie. Target: first page under 200 ms.

    .venv/bin/python bench/ui.py [--rows 100000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession, CookieJar, web

from syncwatch.config.models import Config
from syncwatch.ledger.schema import DDL
from syncwatch.ui import setup_ui

TOKEN = "bench-token-0123456789"


def build(path: Path, rows: int, now: float) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    trace = "ab" * 16

    def gen():
        for i in range(rows):
            t = now - 86400 + i * 0.5
            tl = {
                "attempts": [
                    [trace, f"{i:08x}{n:08x}", t + n * 10, t + n * 10 + 1, n + 1, "503", "http_503"] for n in range(3)
                ]
            }
            yield (f"ORD-{i:07d}", "erp", "orders", "storefront", t, t, t + 300, 3, json.dumps(tl))

    conn.executemany(
        "INSERT INTO open_tx (corr, dest, flow, source, changed_at, opened_at, deadline, attempts, timeline) VALUES (?,?,?,?,?,?,?,?,?)",
        gen(),
    )
    conn.commit()
    conn.close()


async def run(rows: int, rounds: int) -> None:
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.model_validate({"storage": {"data_dir": tmp}, "api": {"token": TOKEN}})
        started = time.perf_counter()
        build(cfg.storage.ledger_path, rows, now - 3600 * 12)
        print(f"ledger: {rows} overdue transactions built in {time.perf_counter() - started:.1f}s")
        app = web.Application()
        setup_ui(app, config=cfg)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as s:  # unsafe: cookies for an IP address
            await s.post(base + "/ui/login", data={"token": TOKEN, "next": "/ui/"}, allow_redirects=False)

            async def timed(path: str) -> tuple[float, str]:
                t0 = time.perf_counter()
                async with s.get(base + path) as r:
                    html = await r.text()
                    assert r.status == 200, r.status
                return (time.perf_counter() - t0) * 1000, html

            first = [await timed("/ui/transactions?state=overdue") for _ in range(rounds)]
            html = first[-1][1]
            assert html.count('class="tx"') == 100, "first page should list 100 rows"
            ms = [m for m, _ in first]
            print(
                f"overdue list, first page (100 rows): median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms over {rounds} requests"
            )
            path = "/ui/transactions?state=overdue"
            for _ in range(50):  # walk 50 pages in
                nxt = re.search(r'<a id="next" href="([^"]+)"', html)
                assert nxt
                path = nxt.group(1).replace("&amp;", "&")
                _, html = await timed(path)
            deep = [(await timed(path))[0] for _ in range(rounds)]
            print(f"overdue list, page 51 by cursor: median {statistics.median(deep):.1f} ms, max {max(deep):.1f} ms")
            flow = [(await timed("/ui/transactions?state=overdue&flow=orders"))[0] for _ in range(rounds)]
            print(
                f"overdue list, flow filter, first page: median {statistics.median(flow):.1f} ms, max {max(flow):.1f} ms"
            )
            tx = [(await timed("/ui/transactions/ORD-0050000"))[0] for _ in range(rounds)]
            print(f"one transaction's page: median {statistics.median(tx):.1f} ms, max {max(tx):.1f} ms")
        await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()
    asyncio.run(run(a.rows, a.rounds))


if __name__ == "__main__":
    main()
