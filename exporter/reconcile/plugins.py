"""Reconciler types come from the `syncwatch.reconcilers` entry-point group, as collectors do:

    [project.entry-points."syncwatch.reconcilers"]
    salesforce = "my_package.sf:SalesforceReconciler"

The built-in `sql` type is registered the same way by syncwatch's pyproject.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from syncwatch.config.errors import SyncwatchError
from syncwatch.reconcile.base import Reconciler

GROUP = "syncwatch.reconcilers"


class PluginError(SyncwatchError):
    pass


def available_types() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_reconciler_class(type_name: str) -> type[Reconciler]:
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == type_name]
    if not matches:
        known = ", ".join(available_types()) or "none installed"
        raise PluginError(f"unknown reconciler type {type_name!r} (installed types: {known})")
    try:
        cls = matches[0].load()
    except Exception as exc:  # a broken plug-in is named, not a bare traceback
        raise PluginError(f"reconciler type {type_name!r}: cannot load {matches[0].value}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Reconciler)):
        raise PluginError(
            f"reconciler type {type_name!r}: {matches[0].value} is not a syncwatch.reconcile.base.Reconciler"
        )
    return cls
