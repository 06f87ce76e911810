"""`syncwatch collectors test`: sample every configured collector once and print what it found,
so a user sees discovery and DLQ linking work before running the sidecar."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from syncwatch.collectors.base import Sample
from syncwatch.collectors.manager import CollectorManager
from syncwatch.config.errors import ConfigError


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:g}"


def _print_sample(out: TextIO, sample: Sample) -> None:
    if sample.queues:
        width = max(len(f"{q.namespace} {q.queue}") for q in sample.queues)
        out.write(f"  queues ({len(sample.queues)}):\n")
        out.write(f"    {'namespace queue':<{width}}  {'depth':>8} {'in-flight':>9} {'delayed':>8} {'oldest':>8}\n")
        for q in sorted(sample.queues, key=lambda q: (q.namespace, q.queue)):
            age = "-" if q.oldest_message_age_seconds is None else f"{q.oldest_message_age_seconds:.0f}s"
            out.write(
                f"    {q.namespace + ' ' + q.queue:<{width}}  {_fmt(q.messages):>8} {_fmt(q.in_flight):>9} "
                f"{_fmt(q.delayed):>8} {age:>8}\n"
            )
    else:
        out.write("  queues: none matched the selection\n")
    if sample.dlqs:
        out.write(f"  dead-letter queues ({len(sample.dlqs)}):\n")
        for d in sorted(sample.dlqs, key=lambda d: (d.namespace, d.queue)):
            flag = "  <-- not empty" if d.messages > 0 else ""
            out.write(
                f"    {d.namespace} {d.queue}: {_fmt(d.messages)} (source: {', '.join(sorted(d.source_queues)) or '?'}){flag}\n"
            )
    else:
        out.write("  dead-letter queues: none linked\n")
    for e in sample.errors:
        out.write(f"  error ({e.reason}): {e.message}\n")
    for w in sample.warnings:
        out.write(f"  warning: {w}\n")


async def _sample_all(manager: CollectorManager) -> dict[str, Sample | None]:
    try:
        return await manager.sample_once()
    finally:
        await manager.stop()


def collectors_test(collectors: list[dict], sampling: dict, out: TextIO | None = None) -> int:
    """Sample every collector once, print what it found; 0 when all answered, 1 otherwise, 2 on bad config."""
    out = out or sys.stdout
    if not collectors:
        out.write("no collectors configured (add a `collectors:` list to the config)\n")
        return 1
    try:
        manager = CollectorManager(collectors, sampling, CollectorRegistry())
    except ConfigError as exc:
        out.write(f"config error: {exc}\n")
        return 2
    results = asyncio.run(_sample_all(manager))
    failed = 0
    for runner in manager.runners:
        desc: dict[str, Any] = runner.collector.describe()
        details = ", ".join(f"{k}={v}" for k, v in desc.items() if k not in ("name", "type") and v is not None)
        sample = results[runner.name]
        head = f"{runner.name} ({desc.get('type')}{': ' + details if details else ''})"
        if sample is None:
            failed += 1
            out.write(f"{head}: DOWN — {runner.last_error}\n\n")
            continue
        duration = runner.last_duration
        out.write(
            f"{head}: up, {sample.api_calls} API calls in {duration:.2f}s; "
            f"would sample every {runner.schedule.interval():g}s"
            f"{' (' + '; '.join(runner.schedule.reasons) + ')' if runner.schedule.reasons else ''}\n"
        )
        _print_sample(out, sample)
        out.write("\n")
    out.write(f"{len(manager.runners) - failed} of {len(manager.runners)} collectors up\n")
    return 1 if failed else 0


def _cmd_test(args: argparse.Namespace) -> int:
    from syncwatch.settings import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"syncwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    return collectors_test(config.collectors, config.sampling)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """`syncwatch collectors test --config FILE` (called by exporter/cli/main.py's parser)."""
    collectors = sub.add_parser("collectors", help="broker queue and DLQ collectors")
    inner = collectors.add_subparsers(dest="collectors_command", required=True)
    test = inner.add_parser(
        "test",
        help="sample every configured collector once and print what it found "
        "(queues, DLQs and their source queues, errors)",
    )
    test.add_argument("--config", "-c", help="YAML config file (default: SYNCWATCH_* env only)")
    test.set_defaults(func=_cmd_test)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: python -m syncwatch.cli.collectors test --config FILE."""
    parser = argparse.ArgumentParser(prog="syncwatch")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["collectors", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
