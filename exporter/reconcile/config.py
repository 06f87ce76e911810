"""The `reconcilers:` section, validated by each entry's plug-in model (errors name the key, e.g.
`reconcilers[0].flows.orders.source.query`), plus the checks only the host can make: unique names,
flows that exist in `flows:`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from syncwatch.config.errors import ConfigError
from syncwatch.config.sections import plugin_class, plugin_settings
from syncwatch.reconcile.base import Reconciler, ReconcilerSettings
from syncwatch.reconcile.plugins import PluginError, load_reconciler_class


def parse_reconciler(
    index: int, entry: Any, environ: Mapping[str, str] | None = None
) -> tuple[type[Reconciler], ReconcilerSettings]:
    where = f"reconcilers[{index}]"
    cls = plugin_class(
        where, entry, load_reconciler_class, (PluginError,), "the reconciler type (sql or a plug-in's name)"
    )
    return cls, plugin_settings(where, cls.Settings, entry, environ)


def load_reconcilers_section(
    reconcilers: list[dict[str, Any]], flows: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> list[tuple[type[Reconciler], ReconcilerSettings]]:
    """Validate `reconcilers:`; raise ConfigError naming the key."""
    parsed = [parse_reconciler(i, entry, environ) for i, entry in enumerate(reconcilers or [])]
    seen: dict[str, int] = {}
    for i, (_, settings) in enumerate(parsed):
        if settings.name in seen:
            raise ConfigError(
                f"reconcilers[{i}].name",
                f"{settings.name!r} is already used by reconcilers[{seen[settings.name]}]: names label the metrics and must be unique",
            )
        seen[settings.name] = i
        for j, rate in enumerate(settings.expected):
            if rate.flow not in settings.flow_names():
                raise ConfigError(
                    f"reconcilers[{i}].expected[{j}].flow", f"{rate.flow!r} is not one of this reconciler's flows"
                )
        for flow in settings.flow_names():
            if flow not in flows:
                raise ConfigError(
                    f"reconcilers[{i}].flows.{flow}",
                    f"no flow {flow!r} in flows: (its deadline sets what counts as missing and late)",
                )
    return parsed


def validate_reconcilers_section(
    reconcilers: list[dict[str, Any]], flows: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> None:
    load_reconcilers_section(reconcilers, flows, environ)
