"""Reading the configuration: one YAML file, every key optional, `SYNCWATCH_…` env overrides.

Env override syntax: `SYNCWATCH_` + the key path upper-cased, nested keys joined by `__`,
e.g. `SYNCWATCH_LISTEN__HTTP=0.0.0.0:9873`, `SYNCWATCH_API__TOKEN=…`,
`SYNCWATCH_FLOWS__ORDERS__DEADLINE=10m`. Values are parsed as YAML scalars/lists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from syncwatch.config.errors import ConfigError
from syncwatch.config.models import Config, default_flows


def _env_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for name, value in sorted(environ.items()):
        if not name.startswith("SYNCWATCH_") or name in ("SYNCWATCH_CONFIG",):
            continue
        path = [p.lower() for p in name[len("SYNCWATCH_") :].split("__") if p]
        if not path:
            continue
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        # Keep strings as strings where YAML would guess otherwise (tokens that look like numbers).
        node[path[-1]] = value if isinstance(parsed, (int, float)) and path[-1] in ("token", "hash_key") else parsed
    return raw


def _merge_default_flows(raw: dict[str, Any]) -> dict[str, Any]:
    """`flows:` in a config adds to and adjusts the default flows instead of replacing them:
    `flows: {orders: {deadline: 10m}}` keeps orders' destinations and the other three flows.
    A flow set to null (`flows: {prices: null}`) is dropped."""
    flows = raw.get("flows")
    if flows is None:
        return raw
    if not isinstance(flows, dict):
        return raw  # let validation name the key
    merged: dict[str, Any] = {name: flow.model_dump() for name, flow in default_flows().items()}
    for name, value in flows.items():
        if value is None:
            merged.pop(name, None)
        elif isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    return {**raw, "flows": merged}


def _format_validation_error(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see README's configuration section)"
    elif "input" in err and err["type"] not in ("missing",):
        shown = err["input"]
        if not isinstance(shown, (dict, list)) and "token" not in key and not key.startswith("storage.backend"):
            msg = f"{msg} (got {shown!r})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" [and {more} more problem(s)]"
    return ConfigError(key, msg)


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read YAML (if given), apply env overrides, validate the core sections. Raises ConfigError
    naming the key. The sections plug-in hosts own (`collectors:`, `sampling:`) are validated by
    syncwatch.settings.load_config, which callers use."""
    environ = dict(os.environ if environ is None else environ)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("", f"{path}: expected a mapping of keys at the top level")
        raw = loaded
    raw = _env_overrides(raw, environ)
    raw = _merge_default_flows(raw)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _format_validation_error(exc) from None
    return config
