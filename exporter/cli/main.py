"""The `syncwatch` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from syncwatch import __version__
from syncwatch.cli.deadletters import add_subcommands as add_dead_letters
from syncwatch.cli.ownership import add_subcommand as add_ownership
from syncwatch.cli.reconcile import add_subcommands as add_reconcile
from syncwatch.cli.rules import add_subcommand as add_rules
from syncwatch.cli.transactions import add_subcommands as add_transactions
from syncwatch.config.errors import ConfigError, SyncwatchError
from syncwatch.config.models import Config
from syncwatch.demo import add_subcommand as add_demo
from syncwatch.ledger.reader import ledger_location
from syncwatch.settings import load_config


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from syncwatch.app import App

    try:
        app = App(config)  # opens the ledger and the snapshot store: bad paths fail here, by key
    except ConfigError as exc:
        print(f"syncwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except SyncwatchError as exc:  # e.g. a ledger of a schema this version cannot use
        print(f"syncwatch: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(app.run_forever())
    except OSError as exc:
        print(f"syncwatch: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 2
    flows = ", ".join(f"{name} ({flow.deadline:g}s)" for name, flow in config.flows.items())
    print(f"{args.file}: OK")
    print(f"  flows: {flows}")
    print(f"  ledger: {ledger_location(config)}")
    print(f"  collectors: {len(config.collectors)}")
    print(f"  reconcilers: {len(config.reconcilers)}")
    print(f"  snapshots: {config.snapshots.backend}, retention {config.snapshots.retention / 3600:g}h")
    print(f"  query API token: {'set' if config.api.resolve_token() else 'NOT SET (API closed)'}")
    return 0


def _cmd_collectors_test(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 2
    if not config.collectors:
        print(f"{args.config}: no collectors configured (add a collectors: list)", file=sys.stderr)
        return 2
    from syncwatch.cli.collectors import collectors_test

    return collectors_test(config.collectors, config.sampling)


def _load(path: str | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"syncwatch: invalid configuration: {exc}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncwatch", description="Observability sidecar for storefront/WMS/ERP integrations."
    )
    parser.add_argument("--version", action="version", version=f"syncwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the sidecar")
    run.add_argument("--config", "-c", help="YAML config file (default: embedded defaults + SYNCWATCH_* env)")
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("check-config", help="validate a config file and name the offending key")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)
    collectors = sub.add_parser("collectors", help="broker collectors")
    collectors_sub = collectors.add_subparsers(dest="collectors_command", required=True)
    ctest = collectors_sub.add_parser("test", help="sample every configured collector once and print what it found")
    ctest.add_argument("--config", "-c", required=True, help="YAML config file with a collectors: list")
    ctest.set_defaults(func=_cmd_collectors_test)
    add_transactions(sub)
    add_rules(sub, _load)
    add_dead_letters(sub)
    add_reconcile(sub)
    add_demo(sub)
    add_ownership(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
