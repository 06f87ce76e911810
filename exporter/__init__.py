"""syncwatch sidecar: OTLP intake, correlation ledger, metrics, snapshots, query API, CLI."""

__version__ = "0.1.0"
