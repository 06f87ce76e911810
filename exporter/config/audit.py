"""The `audit:` config section: per flow, how a payload names its record, which system owns which
field (conditional on a payload value or a time window), and where idempotency keys and
destination record IDs are found. Bottom layer: imported by syncwatch.config.models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from syncwatch.config.durations import Duration
from syncwatch.config.jsonpath import parse_json_path

CORRELATION_ID = "correlation_id"
_NAME = r"[A-Za-z0-9_.:-]{1,64}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _single_path(path: str) -> str:
    steps = parse_json_path(path)  # ValueError names the path
    if any(s is None for s in steps):
        raise ValueError(f"{path!r}: a wildcard names many values; an audited path must name one")
    return path


def _any_path(path: str) -> str:
    parse_json_path(path)  # ValueError names the path
    return path


JsonPath = Annotated[str, AfterValidator(_any_path)]  # wildcards allowed; an error names the list item


class OwnerRule(_Model):
    """`owner` owns the field while every condition given holds: the payload's value at `path`
    is one of `equals`, and the write's time is inside [from, until)."""

    owner: str = Field(pattern=_NAME)
    path: str | None = None
    equals: list[str] | None = None
    from_: datetime | None = Field(None, alias="from")
    until: datetime | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return None if v is None else _single_path(v)

    @field_validator("equals", mode="before")
    @classmethod
    def _equals(cls, v: Any) -> Any:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return [str(v)]
        if isinstance(v, list):
            return [str(x) for x in v]
        return v

    @field_validator("from_", "until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give the time a timezone, e.g. 2026-11-27T00:00:00Z")
        return v

    @model_validator(mode="after")
    def _complete(self) -> OwnerRule:
        if (self.path is None) != (self.equals is None):
            raise ValueError("path and equals go together: the owner holds when the value at path is in equals")
        if self.path is None and self.from_ is None and self.until is None:
            raise ValueError("a rule needs a condition: path + equals, or from/until (else use the field's owner)")
        if self.from_ is not None and self.until is not None and self.until <= self.from_:
            raise ValueError("until must be after from")
        return self


class FieldOwnership(_Model):
    path: str
    owner: str | None = Field(None, pattern=_NAME)  # None: nobody owns it (conflicts only)
    rules: list[OwnerRule] = Field(default_factory=list)  # first matching rule wins, else `owner`

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _single_path(v)


class FlowAudit(_Model):
    # `correlation_id`, or a JSON path into the request payload (e.g. $.customer_id).
    record_key: str = CORRELATION_ID
    # Two systems changing one field within this time are a conflict (one sync cycle).
    sync_window: Duration = 24 * 3600.0
    # field name (a metric label) -> path and owner. Empty: every leaf field is tracked
    # (conflicts only, field label `unmapped`).
    fields: dict[str, FieldOwnership] = Field(default_factory=dict)
    # A JSON path into the request payload; the `syncwatch.idempotency_key` log attribute wins.
    idempotency_key: str | None = None
    # JSON paths left out when two payloads with one idempotency key are compared: volatile fields
    # a retry may change (a timestamp, a request ID). Wildcards allowed ($.lines[*].sent_at).
    idempotency_ignore_fields: list[JsonPath] = Field(default_factory=list)
    # A JSON path into the response payload; the `syncwatch.destination.record_id` log attribute wins.
    record_id: str | None = None

    @field_validator("record_key")
    @classmethod
    def _record_key(cls, v: str) -> str:
        return v if v == CORRELATION_ID else _single_path(v)

    @field_validator("idempotency_key", "record_id")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else _single_path(v)

    @field_validator("fields")
    @classmethod
    def _names(cls, v: dict[str, FieldOwnership]) -> dict[str, FieldOwnership]:
        import re

        for name in v:
            if not re.fullmatch(_NAME, name) or name in ("unmapped", "other"):
                raise ValueError(f"field name {name!r}: use 1-64 letters, digits, _ . : - (it becomes a metric label)")
        return v


class AuditConfig(_Model):
    """Payload audits; a flow is audited when it is listed here (`customers: {}` tracks conflicts)."""

    flows: dict[str, FlowAudit] = Field(default_factory=dict)
    # Fields tracked at once, all flows; the least recently written records are dropped beyond it.
    max_tracked_fields: int = Field(200_000, gt=0)
    # Leaf fields tracked per payload when a flow has no field map.
    max_unmapped_fields: int = Field(64, gt=0, le=4096)
    # Daily write counts and conflict counts for `syncwatch ownership report`.
    report_retention: Duration = 35 * 86400.0
    # Audit events (with the redacted values) are swept with the snapshots; at most this many kept.
    max_events: int = Field(100_000, gt=0)
