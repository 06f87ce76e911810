"""The whole configuration: the core sections (syncwatch.config) plus the sections the plug-in
hosts validate with their plug-ins' own models (`collectors:`, `sampling:` and `reconcilers:`)."""

from __future__ import annotations

import os

from syncwatch.collectors.config import validate_collectors_section
from syncwatch.config import Config
from syncwatch.config import load_config as load_core_config
from syncwatch.reconcile.config import validate_reconcilers_section


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read and validate everything; raises ConfigError naming the offending key."""
    environ = dict(os.environ if environ is None else environ)
    config = load_core_config(path, environ)
    validate_collectors_section(config.collectors, config.sampling, environ)
    validate_reconcilers_section(config.reconcilers, config.flows, environ)
    if config.rules.map:
        from syncwatch.rules.engine import compile_rule

        for name, rule in config.rules.map.items():
            compile_rule(name, rule)  # regexes RE2 cannot run fail here, naming rules.map.<name>.<key>
    return config
