"""The collector interface every broker plug-in implements, and the shapes a sample returns."""

from __future__ import annotations

import abc
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo

from syncwatch.collectors.deadletters import DeadLetterRead
from syncwatch.config.durations import Duration
from syncwatch.config.errors import SyncwatchError

# Why a call failed, as exported in syncwatch_collector_errors_total{reason}. `bad_response`: the
# answer does not have the shape or types the API documents; `too_large`: it is over a size cap.
Reason = Literal[
    "unreachable", "timeout", "unauthorized", "throttled", "not_found", "bad_response", "too_large", "other"
]
REASONS: tuple[Reason, ...] = get_args(Reason)

# Longest queue/namespace label accepted from a broker (Service Bus paths reach ~520 characters).
MAX_LABEL_CHARS = 1024


class CollectorSettings(BaseModel):
    """Keys every collector entry has. A plug-in subclasses this with its own connection and queue keys."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(min_length=1)
    # Timeout of every single broker call; must stay below sampling.fast_interval.
    # Default: 5 s, or half of fast_interval when that is shorter (filled in by syncwatch.collectors.config).
    timeout: Duration = None  # type: ignore[assignment]  # None until the config fills the default in


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_env_name(value: str | None) -> str | None:
    """Field validator body for a `*_env` key: the name of an environment variable."""
    if value is not None and not ENV_NAME.match(value):
        raise ValueError("expected the name of an environment variable, e.g. RABBITMQ_PASSWORD")
    return value


def secret_from_env(key: str, name: str, info: ValidationInfo) -> SecretStr:
    """The value of environment variable `name`, for the `*_env` key `key`.

    The environment is `environ` from the validation context (syncwatch.collectors.config passes it), else
    os.environ. A missing or empty variable is a validation error naming the key, never the value.
    """
    context = info.context if isinstance(info.context, dict) else {}
    environ: Mapping[str, str] = context.get("environ") if context.get("environ") is not None else os.environ
    value = environ.get(name)
    if value is None:
        raise ValueError(f"{key}: environment variable {name} is not set")
    if not value.strip():
        raise ValueError(f"{key}: environment variable {name} is empty")
    return SecretStr(value)


class CollectorError(SyncwatchError):
    """A broker call failed; `reason` is one of REASONS."""

    def __init__(self, reason: Reason, message: str):
        self.reason: Reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass
class QueueDepth:
    """One queue as the broker reported it. None means the broker does not tell."""

    namespace: str
    queue: str
    messages: float
    in_flight: float | None = None
    delayed: float | None = None
    oldest_message_age_seconds: float | None = None
    consumers: float | None = None


@dataclass
class DlqDepth:
    """One dead-letter queue and the queues whose failures land in it."""

    namespace: str
    queue: str
    messages: float
    source_queues: set[str] = field(default_factory=set)


@dataclass
class Sample:
    """The result of one sampling pass. `errors` are partial failures (e.g. one queue vanished)
    that did not stop the rest; a failure of the whole pass is raised as CollectorError instead."""

    queues: list[QueueDepth] = field(default_factory=list)
    dlqs: list[DlqDepth] = field(default_factory=list)
    errors: list[CollectorError] = field(default_factory=list)
    # Things a user should know that are not call failures (e.g. a DLX that routes nowhere).
    warnings: list[str] = field(default_factory=list)
    api_calls: int = 0
    # Dead letters read this cycle (collectors with dead_letters.enabled); None when not reading.
    dead_letters: list[DeadLetterRead] | None = None


def _label_ok(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL_CHARS:
        return False
    try:
        value.encode("utf-8")  # a lone surrogate from a JSON \ud800 escape would fail every scrape
    except UnicodeEncodeError:
        return False
    return True


def _value_ok(value: Any, optional: bool) -> bool:
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_sample(sample: Any) -> None:
    """Raise CollectorError("bad_response") unless every label is a sane string and every value a finite
    number >= 0. The manager checks each plug-in's sample here, so one broker's odd answer fails that
    collector only and can never break the /metrics scrape."""
    if not isinstance(sample, Sample):
        raise CollectorError("bad_response", f"sample() returned {type(sample).__name__}, not a Sample")
    for q in sample.queues:
        if not isinstance(q, QueueDepth) or not (_label_ok(q.namespace) and _label_ok(q.queue)):
            raise CollectorError(
                "bad_response",
                "a queue without a usable name or namespace (empty, not a string, "
                f"or over {MAX_LABEL_CHARS} characters)",
            )
        if not (
            _value_ok(q.messages, False)
            and all(_value_ok(v, True) for v in (q.in_flight, q.delayed, q.oldest_message_age_seconds, q.consumers))
        ):
            raise CollectorError("bad_response", f"queue {q.queue[:200]!r}: a count that is not a finite number >= 0")
    for d in sample.dlqs:
        if not isinstance(d, DlqDepth) or not (_label_ok(d.namespace) and _label_ok(d.queue)):
            raise CollectorError("bad_response", "a dead-letter queue without a usable name or namespace")
        if not _value_ok(d.messages, False):
            raise CollectorError(
                "bad_response", f"dead-letter queue {d.queue[:200]!r}: a count that is not a finite number >= 0"
            )
        if not isinstance(d.source_queues, (set, frozenset)) or not all(_label_ok(s) for s in d.source_queues):
            raise CollectorError(
                "bad_response", f"dead-letter queue {d.queue[:200]!r}: a source queue without a usable name"
            )


class Collector(abc.ABC):
    """A broker collector. Subclasses set `broker` (the `broker` label) and `Settings`.

    `sample()` is awaited on the sidecar's event loop: it must not block it (run blocking SDKs in
    a thread) and must give every broker call `settings.timeout`.
    """

    broker: ClassVar[str]
    Settings: ClassVar[type[CollectorSettings]] = CollectorSettings

    def __init__(self, settings: CollectorSettings):
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    @abc.abstractmethod
    async def sample(self) -> Sample:
        """Read every selected queue and DLQ once."""

    async def close(self) -> None:  # noqa: B027 -- optional hook: nothing to release is a valid default
        """Release connections and threads."""

    def describe(self) -> dict[str, Any]:
        """What `syncwatch collectors test` prints about the target (never secrets)."""
        return {"type": self.settings.type, "name": self.name}
