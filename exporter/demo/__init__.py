"""`syncwatch demo`: a flash sale that quietly breaks an ERP integration, replayed through the real
code paths (OTel SDK -> sidecar, a real SQS/RabbitMQ queue with a DLQ, the real collector), with
syncwatch catching every failure within the run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the flash-sale demo: a simulated integration fails silently, syncwatch catches it",
        description="Starts syncwatch on its embedded defaults plus a simulated storefront, queue (SQS via moto, "
        "or RabbitMQ), middleware and rate-limited ERP; prints a live view and a reconciliation of "
        "what syncwatch found against the simulator's ground truth.",
    )
    p.add_argument("--duration", type=float, default=None, help="target length of the run in seconds (default 60)")
    p.add_argument(
        "--orders", type=int, default=None, help="number of orders to produce (default: from rate and duration)"
    )
    p.add_argument("--short", action="store_true", help="a short run (~25 s) with fewer records, for CI")
    p.add_argument("--orders-deadline", type=float, default=None, metavar="SECONDS", help="compressed orders deadline")
    p.add_argument("--inventory-deadline", type=float, default=None, metavar="SECONDS")
    p.add_argument("--customers-deadline", type=float, default=None, metavar="SECONDS")
    p.add_argument(
        "--rabbitmq",
        metavar="URL",
        default=None,
        help="use this RabbitMQ (amqp://user:pass@host:5672/vhost) instead of a local SQS (moto_server)",
    )
    p.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the sidecar up after the report (point Prometheus/Grafana at it)",
    )
    p.add_argument("--data-dir", default=None, help="where the sidecar keeps its data (default: a temp dir)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault plan")
    p.add_argument("--quiet", action="store_true", help="no live view, only the report")
    p.add_argument(
        "--free-ports",
        action="store_true",
        help="listen on ports the OS picks instead of syncwatch's defaults (9873, 4317, 4318)",
    )
    p.set_defaults(func=_cmd_demo)


def settings_from_args(args: argparse.Namespace):
    from syncwatch.demo.scenario import DemoSettings

    settings = DemoSettings.short() if args.short else DemoSettings()
    if args.duration is not None:
        if args.duration <= 0:
            raise SystemExit("syncwatch demo: --duration must be above zero")
        settings.duration = args.duration
    if args.orders is not None:
        if args.orders < 1:
            raise SystemExit("syncwatch demo: --orders must be at least 1")
        settings.orders = args.orders
    for flow in ("orders", "inventory", "customers"):
        value = getattr(args, f"{flow}_deadline")
        if value is not None:
            if value <= 0:
                raise SystemExit(f"syncwatch demo: --{flow}-deadline must be above zero")
            settings.deadlines[flow] = value
    if args.seed is not None:
        settings.seed = args.seed
    return settings


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from syncwatch.config.errors import ConfigError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    missing = _missing_packages(args.rabbitmq is not None)
    if missing:
        print(
            f"syncwatch demo needs {', '.join(missing)}: run `make demo` from a checkout, or "
            "pip install 'syncwatch[demo]' ./instrumentation",
            file=sys.stderr,
        )
        return 2
    # Only now: these import the demo's extra packages.
    from syncwatch.demo.report import matches
    from syncwatch.demo.runner import run_demo

    settings = settings_from_args(args)
    if args.data_dir and Path(args.data_dir).is_dir() and any(Path(args.data_dir).iterdir()):
        print(
            f"syncwatch demo: --data-dir {args.data_dir} is not empty (an earlier run?): an earlier ledger "
            "would show up as false positives; give an empty or new directory",
            file=sys.stderr,
        )
        return 2
    try:
        result = asyncio.run(
            run_demo(
                settings,
                rabbitmq_url=args.rabbitmq,
                data_dir=args.data_dir,
                keep_running=args.keep_running,
                live=not args.quiet,
                default_ports=not args.free_ports,
            )
        )
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"syncwatch demo: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"syncwatch demo: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0 if matches(result.truth, result.findings) else 1


def _missing_packages(rabbitmq: bool) -> list[str]:
    import importlib.util

    wanted = {"syncwatch_instrument": "syncwatch-instrument"}
    wanted.update({"aio_pika": "aio-pika"} if rabbitmq else {"moto": "moto[server]"})
    return [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]
