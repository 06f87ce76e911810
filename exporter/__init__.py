"""syncwatch: an observability sidecar for storefront / WMS / ERP integrations.

The data path: intake (OTLP receivers) -> ledger (transactions, deadlines) -> metrics and
snapshots -> api and cli. config is the bottom layer; collectors are plug-ins beside intake."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("syncwatch")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
