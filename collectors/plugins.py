"""Collector types come from the `syncwatch.collectors` entry-point group.

An installed package adds a type by declaring, in its own pyproject.toml:

    [project.entry-points."syncwatch.collectors"]
    kafka = "my_package.kafka:KafkaCollector"

The built-in sqs, servicebus and rabbitmq types are registered the same way by syncwatch's pyproject.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from syncwatch.collectors.base import Collector
from syncwatch.config.errors import SyncwatchError

GROUP = "syncwatch.collectors"


class PluginError(SyncwatchError):
    pass


def available_types() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_collector_class(type_name: str) -> type[Collector]:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == type_name]
    if not matches:
        known = ", ".join(available_types()) or "none installed"
        raise PluginError(f"unknown collector type {type_name!r} (installed types: {known})")
    try:
        cls = matches[0].load()
    except Exception as exc:  # a broken plug-in must be named, not crash with a bare traceback
        raise PluginError(f"collector type {type_name!r}: cannot load {matches[0].value}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise PluginError(
            f"collector type {type_name!r}: {matches[0].value} is not a syncwatch.collectors.base.Collector"
        )
    return cls
