"""Sample 1,000 queues and print seconds per full cycle and API calls per cycle.

    .venv/bin/python bench/collectors.py [--queues 1000] [--cycles 5] [--only rabbitmq|sqs]

RabbitMQ: the broker on this machine (management API on 127.0.0.1:15672, guest/guest), in a vhost
made for the run and deleted after. SQS: moto_server started here on a free port, through boto3.
Every 20th queue dead-letters into its own DLQ, so DLQ linking is part of the cycle.
Target: a full cycle of 1,000 queues within 2 s, so the 10 s fast interval holds at that size.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from prometheus_client import CollectorRegistry  # noqa: E402

from collectors.manager import CollectorManager  # noqa: E402


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
    print(f"{label}: {queues} queues + {dlqs} DLQs | first cycle {times[0]:.2f}s, {calls[0]} API calls | "
          f"steady cycle median {statistics.median(steady):.2f}s (max {max(steady):.2f}s), "
          f"{int(statistics.median(calls[1:] or calls))} API calls per cycle, "
          f"collector CPU {statistics.median(cpu[1:] or cpu):.2f}s per cycle")


def bench_rabbitmq(total: int, n: int) -> None:
    import pika
    import requests

    mgmt, auth = "http://127.0.0.1:15672", ("guest", "guest")
    vhost = f"bench-{uuid.uuid4().hex[:8]}"
    v = quote(vhost, safe="")
    requests.put(f"{mgmt}/api/vhosts/{v}", auth=auth, timeout=30).raise_for_status()
    requests.put(f"{mgmt}/api/permissions/{v}/guest", auth=auth, json={"configure": ".*", "write": ".*", "read": ".*"}, timeout=30).raise_for_status()
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, vhost, pika.PlainCredentials(*auth)))
        ch = conn.channel()
        ch.exchange_declare("bench.dlx", "direct")
        sources = total // 20
        for i in range(total - sources):
            name = f"q-{i:04d}"
            if i < sources:
                ch.queue_declare(f"{name}.dlq")
                ch.queue_bind(f"{name}.dlq", "bench.dlx", name)
                ch.queue_declare(name, arguments={"x-dead-letter-exchange": "bench.dlx", "x-dead-letter-routing-key": name})
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
            c.create_queue(QueueName=f"q-{i:04d}", Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})
        for i in range(sources, total - sources):
            c.create_queue(QueueName=f"q-{i:04d}")
        # What the server alone costs per request, for reading the figures below.
        url = c.get_queue_url(QueueName="q-0000")["QueueUrl"]
        started = time.perf_counter()
        for _ in range(50):
            c.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        per_call = (time.perf_counter() - started) / 50
        # Long limits here: the point is to measure a cycle, however long moto makes it.
        manager = CollectorManager([{"type": "sqs", "name": "aws", "endpoint_url": moto.url, "timeout": "50s"}],
                                   {"interval": "120s", "fast_interval": "60s"}, CollectorRegistry())
        report("sqs (moto)", *asyncio.run(cycles(manager, "aws", n)))
        print(f"  moto_server answers one GetQueueAttributes in {per_call * 1000:.1f} ms serially on this machine "
              "(one Python process, a new connection per request); SQS has no batch read, so a cycle is one call per queue")
    finally:
        moto.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--only", choices=("rabbitmq", "sqs"))
    args = parser.parse_args()
    if args.only in (None, "rabbitmq"):
        bench_rabbitmq(args.queues, args.cycles)
    if args.only in (None, "sqs"):
        bench_sqs(args.queues, args.cycles)


if __name__ == "__main__":
    main()
