"""Settings of the collectors (`collectors:`) and of adaptive sampling (`sampling:`).

Each collector entry is validated by its own plug-in's pydantic model, so a third-party type brings
its own keys; errors name the key, e.g. `collectors[1].queues` or `sampling.fast_interval`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncwatch.collectors.base import CollectorSettings
from syncwatch.collectors.plugins import PluginError, load_collector_class
from syncwatch.config.durations import Duration
from syncwatch.config.errors import ConfigError
from syncwatch.config.sections import plugin_class, plugin_settings, validation_error

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_GROUPS = {"weekdays": DAY_NAMES[:5], "weekend": DAY_NAMES[5:], "daily": DAY_NAMES}
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _parse_hhmm(value: Any) -> int:
    """Minutes after midnight; `24:00` is the end of the day."""
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 09:00 as the sexagesimal number 540.
        value = f"{value // 60:02d}:{value % 60:02d}"
    m = _HHMM.match(str(value))
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise ValueError(f"expected a time of day HH:MM, e.g. 09:30, got {value!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


class HighTrafficWindow(BaseModel):
    """Days and a time range in a time zone during which sampling runs at fast_interval.
    An end before the start runs past midnight into the next day."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    days: list[str] = Field(default_factory=lambda: list(DAY_NAMES))
    start: int
    end: int
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: Any) -> list[str]:
        if isinstance(v, str):
            v = [v]
        out: list[str] = []
        for d in v:
            key = str(d).strip().lower()[:3] if str(d).lower() not in _DAY_GROUPS else str(d).lower()
            if key in _DAY_GROUPS:
                out.extend(_DAY_GROUPS[key])
            elif key in DAY_NAMES:
                out.append(key)
            else:
                raise ValueError(f"unknown day {d!r}: use mon..sun, weekdays, weekend or daily")
        if not out:
            raise ValueError("at least one day is needed")
        return out

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, v: Any) -> int:
        return _parse_hhmm(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> HighTrafficWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self

    def contains(self, unix_seconds: float) -> bool:
        from datetime import datetime

        local = datetime.fromtimestamp(unix_seconds, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        today = DAY_NAMES[local.weekday()]
        yesterday = DAY_NAMES[(local.weekday() - 1) % 7]
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        # Overnight window: the evening part belongs to the start day, the morning part to the day before.
        return (today in self.days and minute >= self.start) or (yesterday in self.days and minute < self.end)


class SamplingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval: Duration = 60.0
    fast_interval: Duration = 10.0
    high_traffic_windows: list[HighTrafficWindow] = Field(default_factory=list)
    # Fast-mode triggers besides the windows.
    fast_when_depth_growing: bool = True
    fast_when_dlq_not_empty: bool = True
    # Back to `interval` after this long without any trigger.
    calm_period: Duration = 300.0

    @field_validator("interval", "fast_interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1s")
        return v

    @model_validator(mode="after")
    def _order(self) -> SamplingSettings:
        if self.fast_interval > self.interval:
            raise ValueError("fast_interval: must not be longer than interval")
        return self


def parse_sampling(sampling: dict[str, Any]) -> SamplingSettings:
    try:
        return SamplingSettings.model_validate(sampling or {})
    except ValidationError as exc:
        raise validation_error("sampling", exc) from None


def parse_collector(index: int, entry: Any, environ: Mapping[str, str] | None = None) -> tuple[type, CollectorSettings]:
    """Return (collector class, validated settings) for `collectors[index]`.

    `*_env` keys (e.g. rabbitmq's password_env) are read from `environ`, default os.environ."""
    where = f"collectors[{index}]"
    cls = plugin_class(
        where,
        entry,
        load_collector_class,
        (PluginError,),
        "the collector type (sqs, servicebus, rabbitmq or a plug-in's name)",
    )
    return cls, plugin_settings(where, cls.Settings, entry, environ)


def validate_collectors_section(
    collectors: list[dict[str, Any]], sampling: dict[str, Any], environ: Mapping[str, str] | None = None
) -> None:
    """Validate `collectors:` and `sampling:`; raise syncwatch.config.errors.ConfigError naming the key."""
    load_collectors_section(collectors, sampling, environ)


def load_collectors_section(
    collectors: list[dict[str, Any]], sampling: dict[str, Any], environ: Mapping[str, str] | None = None
) -> tuple[list[tuple[type, CollectorSettings]], SamplingSettings]:
    samp = parse_sampling(sampling)
    parsed = [parse_collector(i, entry, environ) for i, entry in enumerate(collectors or [])]
    parsed = [
        (
            cls,
            settings
            if settings.timeout is not None
            else settings.model_copy(update={"timeout": min(5.0, samp.fast_interval / 2)}),
        )
        for cls, settings in parsed
    ]
    seen: dict[str, int] = {}
    for i, (_, settings) in enumerate(parsed):
        if settings.name in seen:
            raise ConfigError(
                f"collectors[{i}].name",
                f"{settings.name!r} is already used by collectors[{seen[settings.name]}]: names label the health metrics and must be unique",
            )
        seen[settings.name] = i
        if settings.timeout >= samp.fast_interval:
            raise ConfigError(
                f"collectors[{i}].timeout",
                f"must be shorter than sampling.fast_interval ({samp.fast_interval:g}s) so a slow broker cannot hold up a cycle",
            )
    return parsed, samp
