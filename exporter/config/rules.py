"""The `rules:` section: per-flow span mapping rules, presets, and the stitching index's bounds.

Only pydantic and the config layer are imported here, so syncwatch.config can embed the section;
the rules are compiled (regexes, presets) by syncwatch.rules.compile when the sidecar starts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncwatch.config.durations import Duration

PresetName = Literal[
    "http-client",
    "rabbitmq-publish",
    "rabbitmq-consume",
    "sqs-send",
    "sqs-receive",
    "servicebus-send",
    "servicebus-receive",
    "servicebus-settle",
]
SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]
StageName = Literal["source", "attempt", "confirm", "fail", "none"]
AttrValue = str | int | float | bool
MAX_PATTERN_LENGTH = 512


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WhenConfig(_Model):
    """Conditions on what OpenTelemetry records; all given ones must hold. Attribute values are
    globs over the value's text (`2??`), a list means any of them; `null` means absent."""

    kind: SpanKindName | list[SpanKindName] | None = None
    name: str | list[str] | None = None  # glob(s) over the span name
    name_regex: str | None = None
    service: str | list[str] | None = None  # glob(s) over the resource's service.name
    status: Literal["unset", "ok", "error"] | None = None
    attributes: dict[str, AttrValue | list[AttrValue] | None] = Field(default_factory=dict)
    resource: dict[str, AttrValue | list[AttrValue] | None] = Field(default_factory=dict)

    @field_validator("name", "name_regex", "service")
    @classmethod
    def _length(cls, v: str | list[str] | None) -> str | list[str] | None:
        for item in [v] if isinstance(v, str) else v or ():
            if len(item) > MAX_PATTERN_LENGTH:
                raise ValueError(f"longer than {MAX_PATTERN_LENGTH} characters")
        return v


class CorrelationSource(_Model):
    """Where a rule finds the correlation ID: an attribute (new or old semantic-convention name),
    optionally narrowed by a regex whose group `id` (or first group, or whole match) is the ID."""

    attribute: str
    regex: str | None = None


class RuleConfig(_Model):
    flow: str = Field(min_length=1, max_length=128)
    preset: PresetName | None = None
    when: WhenConfig = Field(default_factory=WhenConfig)
    stage: StageName | None = None  # default: the preset's; `none` = a span of the flow without a stage
    correlation: list[CorrelationSource] | None = None
    source: str | None = Field(None, max_length=128)
    destination: str | None = Field(None, max_length=128)
    # Extra stages the same span can close: e.g. an HTTP client attempt that is also the confirm on a 2xx.
    # A list means any of them.
    confirm_when: WhenConfig | list[WhenConfig] | None = None
    fail_when: WhenConfig | list[WhenConfig] | None = None
    # The integration's own retry policy: the n-th failed attempt (not a confirm) is the fail.
    give_up_after: int | None = Field(None, ge=1, le=1000)

    @field_validator("correlation", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        if isinstance(v, (dict, str)):
            v = [v]
        if isinstance(v, list):
            return [{"attribute": item} if isinstance(item, str) else item for item in v]
        return v

    @model_validator(mode="after")
    def _has_stage(self) -> RuleConfig:
        if self.preset is None and self.stage is None:
            raise ValueError("give a stage (source, attempt, confirm, fail or none) or a preset")
        return self


class StitchConfig(_Model):
    # Traces and message IDs whose correlation ID is remembered, and spans waiting for one.
    max_entries: int = Field(200_000, ge=100, le=10_000_000)
    max_pending_spans: int = Field(50_000, ge=10, le=1_000_000)
    # How long a learned ID is kept, and how long a span of a flow waits for its trace's ID.
    window: Duration = 600.0

    @field_validator("window")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("window must be above zero")
        return v


class RulesConfig(_Model):
    stitch: StitchConfig = Field(default_factory=StitchConfig)
    # Rule name -> rule; the first rule (in this order) whose conditions hold maps a span.
    map: dict[str, RuleConfig] = Field(default_factory=dict)

    @field_validator("map")
    @classmethod
    def _names(cls, v: dict[str, RuleConfig]) -> dict[str, RuleConfig]:
        for name in v:
            if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"rule name {name!r}: use 1-64 letters, digits, - _ .")
        return v
