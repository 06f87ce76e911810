"""Sample 1,000 queues and print seconds per full cycle and API calls per cycle.

    .venv/bin/python bench/collectors.py [--queues 1000] [--cycles 5] [--only rabbitmq|sqs|hostile]

RabbitMQ: the broker on this machine (management API on 127.0.0.1:15672, guest/guest), in a vhost
made for the run and deleted after. SQS: moto_server started here on a free port, through boto3.
Every 20th queue dead-letters into its own DLQ, so DLQ linking is part of the cycle.
Target: a full cycle of 1,000 queues within 2 s, so the 10 s fast interval holds at that size.

`hostile`: one RabbitMQ sample against answers built to stall it (a local fake of the management API,
and a pathological topic binding on the real broker); prints the sample's duration, the longest the
event loop was held, and the refusal. Target: the loop never held for 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "support")]

from prometheus_client import CollectorRegistry

from syncwatch.collectors.manager import CollectorManager


async def cycles(manager: CollectorManager, name: str, n: int) -> tuple[list[float], list[int], int, int, list[float]]:
    times, calls, cpu = [], [], []
    sample = None
    for _ in range(n):
        started, cpu_started = time.perf_counter(), time.process_time()
        sample = (await manager.sample_once())[name]
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        if sample is None:
            raise SystemExit(f"{name}: sample failed: {manager.runner(name).last_error}")
        calls.append(sample.api_calls)
    await manager.stop()
    return times, calls, len(sample.queues), len(sample.dlqs), cpu


def report(label: str, times: list[float], calls: list[int], queues: int, dlqs: int, cpu: list[float]) -> None:
    steady = times[1:] or times  # the first cycle includes discovery and connection set-up
    print(
        f"{label}: {queues} queues + {dlqs} DLQs | first cycle {times[0]:.2f}s, {calls[0]} API calls | "
        f"steady cycle median {statistics.median(steady):.2f}s (max {max(steady):.2f}s), "
        f"{int(statistics.median(calls[1:] or calls))} API calls per cycle, "
        f"collector CPU {statistics.median(cpu[1:] or cpu):.2f}s per cycle"
    )


def bench_rabbitmq(total: int, n: int) -> None:
    import pika
    import requests

    mgmt, auth = "http://127.0.0.1:15672", ("guest", "guest")
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    v = quote(vhost, safe="")
    requests.put(f"{mgmt}/api/vhosts/{v}", auth=auth, timeout=30).raise_for_status()
    requests.put(
        f"{mgmt}/api/permissions/{v}/guest",
        auth=auth,
        json={"configure": ".*", "write": ".*", "read": ".*"},
        timeout=30,
    ).raise_for_status()
    try:
        conn = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials(*auth))
        )
        ch = conn.channel()
        ch.exchange_declare("bench.dlx", "direct")
        sources = total // 20
        for i in range(total - sources):
            name = f"q-{i:04d}"
            if i < sources:
                ch.queue_declare(f"{name}.dlq")
                ch.queue_bind(f"{name}.dlq", "bench.dlx", name)
                ch.queue_declare(
                    name, arguments={"x-dead-letter-exchange": "bench.dlx", "x-dead-letter-routing-key": name}
                )
            else:
                ch.queue_declare(name)
            ch.basic_publish("", name, b"x")
        conn.close()
        time.sleep(6)  # let the management stats pick the new queues up
        manager = CollectorManager([{"type": "rabbitmq", "name": "rabbit", "vhosts": [vhost]}], {}, CollectorRegistry())
        report("rabbitmq", *asyncio.run(cycles(manager, "rabbit", n)))
    finally:
        requests.delete(f"{mgmt}/api/vhosts/{v}", auth=auth, timeout=60)


def bench_sqs(total: int, n: int) -> None:
    import boto3
    from botocore.config import Config
    from collectors_fakes.harness import MotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto = MotoServer()
    try:
        c = boto3.client("sqs", endpoint_url=moto.url, config=Config(max_pool_connections=16))
        sources = total // 20
        for i in range(sources):
            dlq = c.create_queue(QueueName=f"q-{i:04d}-dlq")["QueueUrl"]
            arn = c.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            c.create_queue(
                QueueName=f"q-{i:04d}",
                Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})},
            )
        for i in range(sources, total - sources):
            c.create_queue(QueueName=f"q-{i:04d}")
        # What the server alone costs per request, for reading the figures below.
        url = c.get_queue_url(QueueName="q-0000")["QueueUrl"]
        started = time.perf_counter()
        for _ in range(50):
            c.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        per_call = (time.perf_counter() - started) / 50
        # Long limits here: the point is to measure a cycle, however long moto makes it.
        manager = CollectorManager(
            [{"type": "sqs", "name": "aws", "endpoint_url": moto.url, "timeout": "50s"}],
            {"interval": "120s", "fast_interval": "60s"},
            CollectorRegistry(),
        )
        report("sqs (moto)", *asyncio.run(cycles(manager, "aws", n)))
        print(
            f"  moto_server answers one GetQueueAttributes in {per_call * 1000:.1f} ms serially on this machine "
            "(one Python process, a new connection per request); SQS has no batch read, so a cycle is one call per queue"
        )
    finally:
        moto.stop()


def bench_hostile() -> None:
    import pika
    import requests
    from collectors_fakes.harness import LoopWatch
    from collectors_fakes.rabbitmq_fake import FakeManagementApi, Raw, queue

    async def one(entry: dict) -> tuple[float, float, str]:
        manager = CollectorManager([{"type": "rabbitmq", "name": "r", **entry}], {}, CollectorRegistry())
        started = time.perf_counter()
        async with LoopWatch() as watch:
            sample = (await manager.sample_once())["r"]
        took = time.perf_counter() - started
        await manager.stop()
        error = manager.runner("r").last_error
        outcome = str(error) if sample is None else "; ".join(f"{e.reason}: {e.message}" for e in sample.errors) or "ok"
        return took, watch.worst, outcome

    def show(label: str, result: tuple[float, float, str]) -> None:
        took, worst, outcome = result
        print(f"{label}: sample {took * 1000:.0f} ms, event loop held at most {worst * 1000:.0f} ms | {outcome[:110]}")

    fake = FakeManagementApi()
    try:
        fake.queues, fake.page_count = [queue("orders")], 200_000
        show("page_count 200000", asyncio.run(one({"url": fake.url})))
        fake.page_count = None

        async def endless():
            yield b'{"page_count":1,"items":['
            for _ in range(4096):
                yield b"{}," * 21_000

        fake.answers["/api/queues"] = Raw(endless)
        show("256 MiB answer", asyncio.run(one({"url": fake.url})))
        fake.answers["/api/queues"] = Raw(b'{"page_count":1,"items":[' + b"{}," * 1_390_000 + b"{}]}")
        show("4 MiB of {} items", asyncio.run(one({"url": fake.url})))
        fake.answers["/api/queues"] = Raw(b'{"page_count":1,"items":[' + b'{"a":[{"b":1}]},' * 262_000 + b"{}]}")
        show("4 MiB of nested items", asyncio.run(one({"url": fake.url})))
        del fake.answers["/api/queues"]
        fake.queues = [queue("orders", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "k.x"})]
        fake.exchanges["shop"] = [{"name": "dlx", "type": "topic"}]
        fake.bindings["shop"] = [
            {"source": "dlx", "destination": f"dlq-{i}", "destination_type": "queue", "routing_key": f"k{i}.*.#"}
            for i in range(40_000)
        ]
        show("40,000 bindings (3.4 MiB)", asyncio.run(one({"url": fake.url})))
        fake.queues = [
            queue(f"src-{j:03d}", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": f"k{j}.x.y"})
            for j in range(400)
        ]
        fake.exchanges["shop"] = [{"name": "dlx", "type": "topic"}]
        fake.bindings["shop"] = [
            {"source": "dlx", "destination": f"dlq-{i}", "destination_type": "queue", "routing_key": f"k{i}.*.#"}
            for i in range(3000)
        ]
        show("400 keys x 3,000 wildcard bindings", asyncio.run(one({"url": fake.url, "queues": ["src-*"]})))
    finally:
        fake.close()

    mgmt, auth = "http://127.0.0.1:15672", ("guest", "guest")
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    v = quote(vhost, safe="")
    requests.put(f"{mgmt}/api/vhosts/{v}", auth=auth, timeout=30).raise_for_status()
    requests.put(
        f"{mgmt}/api/permissions/{v}/guest",
        auth=auth,
        json={"configure": ".*", "write": ".*", "read": ".*"},
        timeout=30,
    ).raise_for_status()
    try:
        conn = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials(*auth))
        )
        ch = conn.channel()
        ch.exchange_declare("dlx", "topic")
        ch.queue_declare("never")
        ch.queue_bind("never", "dlx", "#.#.#.#.#.#.#.#.#.nomatch")
        ch.queue_declare(
            "orders", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": ".".join(["a"] * 127)}
        )
        conn.close()
        time.sleep(6)  # let the management stats pick the new queues up
        show("real broker: #.#.#.#.#.#.#.#.#.nomatch vs a 127-word key", asyncio.run(one({"vhosts": [vhost]})))
    finally:
        requests.delete(f"{mgmt}/api/vhosts/{v}", auth=auth, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--only", choices=("rabbitmq", "sqs", "hostile"))
    args = parser.parse_args()
    if args.only in (None, "rabbitmq"):
        bench_rabbitmq(args.queues, args.cycles)
    if args.only in (None, "sqs"):
        bench_sqs(args.queues, args.cycles)
    if args.only in (None, "hostile"):
        bench_hostile()


if __name__ == "__main__":
    main()
