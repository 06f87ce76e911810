"""Validating the sections whose entries plug-ins define (`collectors:`, `reconcilers:`): each entry
names its plug-in by `type` and is validated by that plug-in's own settings model, with errors that
name the key (e.g. `collectors[0].queues[1]`). The hosts add the checks only they can make."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from syncwatch.config.errors import ConfigError

C = TypeVar("C")
M = TypeVar("M", bound=BaseModel)


def plugin_class(
    where: str,
    entry: Any,
    load_class: Callable[[str], C],
    load_errors: tuple[type[Exception], ...],
    missing_type: str,
) -> C:
    """The plug-in class the entry at `where` (e.g. `collectors[0]`) names by `type`: `load_class`
    finds it, raising one of `load_errors` when there is none; `missing_type` says what `type`
    should hold."""
    if not isinstance(entry, dict):
        raise ConfigError(where, "expected a mapping with at least `type` and `name`")
    type_name = entry.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{where}.type", f"missing: {missing_type}")
    try:
        return load_class(type_name)
    except load_errors as exc:
        raise ConfigError(f"{where}.type", str(exc)) from None


def plugin_settings(where: str, model: type[M], entry: Any, environ: Mapping[str, str] | None = None) -> M:
    """The entry at `where` validated by its plug-in's settings model; `*_env` keys are read from
    `environ` (default os.environ)."""
    try:
        return model.model_validate(entry, context={"environ": environ})
    except ValidationError as exc:
        raise validation_error(where, exc) from None


def validation_error(prefix: str, exc: ValidationError) -> ConfigError:
    """The first problem pydantic found in the section at `prefix`, as a ConfigError naming its key
    (and how many more there are); the offending value is shown unless it may be a secret."""
    err = exc.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    # Model-level errors name their own field first ("fast_interval: ...").
    if not err["loc"] and ":" in msg and msg.split(":", 1)[0].isidentifier():
        field, msg = msg.split(":", 1)
        loc, msg = f".{field}", msg.strip()
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see README's collectors section)"
    elif "input" in err and err["type"] != "missing":
        shown = err["input"]
        secret = any(s in loc.lower() for s in ("secret", "password", "connection_string", "key")) or (
            isinstance(shown, str) and "@" in shown
        )  # e.g. a URL with user:password in it
        if not isinstance(shown, (dict, list)) and not secret:
            msg = f"{msg} (got {shown!r})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" [and {more} more problem(s)]"
    return ConfigError(prefix + loc, msg)
