"""The configuration's shape: one pydantic model per section, unknown keys refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncwatch.config.audit import AuditConfig
from syncwatch.config.durations import Duration
from syncwatch.config.jsonpath import parse_json_path
from syncwatch.config.rules import RulesConfig

HOUR = 3600.0
MIN_SNAPSHOT_RETENTION = 72 * HOUR


class _Model(BaseModel):
    # Unknown keys are mistakes (typos), not silently ignored settings.
    model_config = ConfigDict(extra="forbid")


def _check_host_port(value: str) -> str:
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:4317, got {value!r}")
    return value


class ListenConfig(_Model):
    otlp_grpc: str = "127.0.0.1:4317"
    otlp_http: str = "127.0.0.1:4318"
    http: str = "127.0.0.1:9873"

    _hp = field_validator("otlp_grpc", "otlp_http", "http")(_check_host_port)


class PostgresConfig(_Model):
    # The DSN (postgresql://user:password@host/db) holds a password: it is read from a file (a
    # mounted Secret) or an environment variable, never written in the config, never logged.
    dsn_file: Path | None = None
    dsn_env: str | None = None
    connect_timeout: Duration = 5.0
    # A batch that takes longer fails (503 + Retry-After) instead of holding the writer.
    statement_timeout: Duration = 10.0
    # Replicas on one database elect a leader through a lease row; a leader that stops renewing
    # (killed, cut off) is replaced after at most this long.
    lease_ttl: Duration = 4.0

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, v: float) -> float:
        if not 1.0 <= v <= 60.0:
            raise ValueError("lease_ttl must be between 1s and 60s (it is renewed every lease_ttl/4)")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> PostgresConfig:
        if (self.dsn_file is None) == (self.dsn_env is None):
            raise ValueError("set exactly one of dsn_file and dsn_env (the DSN is never written in the config)")
        return self


class StorageConfig(_Model):
    data_dir: Path = Path("syncwatch-data")
    # SQLite ledger file; default `<data_dir>/ledger.db`.
    sqlite_path: Path | None = None
    # An open transaction older than this is closed as `expired` (and its rows are swept after it).
    expire_after: Duration = 7 * 24 * HOUR
    # Where the ledger lives: the embedded SQLite file, or PostgreSQL (storage.postgresql).
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    postgresql: PostgresConfig | None = None

    @field_validator("backend", mode="before")
    @classmethod
    def _no_dsn(cls, v: Any) -> Any:
        if isinstance(v, str) and "://" in v:
            raise ValueError(
                "a DSN holds a password: set backend: postgresql and storage.postgresql.dsn_file or dsn_env"
            )
        return v

    @model_validator(mode="after")
    def _backend_settings(self) -> StorageConfig:
        if self.backend == "postgresql" and self.postgresql is None:
            raise ValueError("backend postgresql needs storage.postgresql.dsn_file or dsn_env")
        return self

    @property
    def ledger_path(self) -> Path:
        return self.sqlite_path or self.data_dir / "ledger.db"


class IntakeConfig(_Model):
    # Decompressed, per request. An SDK's batch (512 spans) is a few hundred KiB; a protobuf parse
    # of the whole limit holds the interpreter, so it is kept well below what a bomb could cost.
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_queued_spans: int = Field(200_000, gt=0)  # beyond this, answer 503 + Retry-After
    retry_after: Duration = 1.0
    max_batch_spans: int = Field(20_000, gt=0)  # group commit: spans per SQLite transaction


class FlowConfig(_Model):
    destinations: list[str] = Field(default_factory=list)
    deadline: Duration = 300.0
    # exactly_once flows count a second confirm with the same idempotency key as a duplicate apply.
    exactly_once: bool = True

    @field_validator("deadline")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("deadline must be above zero")
        return v


def default_flows() -> dict[str, FlowConfig]:
    # The SPEC's table: deadline to confirm and delivery semantics per flow.
    return {
        "inventory": FlowConfig(destinations=["storefront"], deadline=30, exactly_once=True),
        "orders": FlowConfig(destinations=["erp"], deadline=300, exactly_once=True),
        "customers": FlowConfig(destinations=["storefront", "erp"], deadline=6 * HOUR, exactly_once=False),
        "prices": FlowConfig(destinations=["erp"], deadline=300, exactly_once=False),
    }


class CorrelationConfig(_Model):
    keys: list[str] = Field(
        default_factory=lambda: ["messaging.message.conversation_id", "syncwatch.correlation_id", "correlation_id"],
        min_length=1,
    )
    # Spans of a flow nobody configured still get tracked, with this deadline.
    unknown_flow_deadline: Duration = 300.0


class LimitsConfig(_Model):
    """Bounds on what span data can make syncwatch keep: metric label sets and per-span sizes."""

    # Metric labels come from config; flows, systems (source/destination) and response codes seen in
    # spans but not configured get their own label up to these counts, then fold into "other".
    max_unknown_flows: int = Field(20, ge=0)
    max_unknown_systems: int = Field(50, ge=0)  # per flow, sources and destinations together
    max_response_codes: int = Field(50, ge=0)  # distinct non-HTTP codes (syncwatch.response_code)
    # Spans with a longer correlation ID (characters) are rejected, counted.
    max_correlation_id_length: int = Field(256, ge=8, le=65536)
    # Attempts kept in a transaction's timeline: the first few and the latest; the rest are counted.
    max_timeline_attempts: int = Field(1000, ge=10, le=100_000)


class RedactConfig(_Model):
    keys: list[str] = Field(default_factory=list)  # extra key names, case-insensitive, any depth
    paths: list[str] = Field(default_factory=list)  # JSON paths, e.g. $.customer.address.street
    patterns: dict[str, str] = Field(default_factory=dict)  # kind -> regex
    defaults: bool = True  # the built-in keys and patterns (cards, e-mail, IBAN, secrets)
    hash_key: str | None = Field(None, repr=False)  # key for the keyed hash; default: generated once per data dir
    hash_key_file: Path | None = None

    @field_validator("patterns")
    @classmethod
    def _compile_patterns(cls, v: dict[str, str]) -> dict[str, str]:
        import re

        for kind, rx in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", kind):
                raise ValueError(f"pattern kind {kind!r}: use letters, digits, _ . - (it becomes a metric label)")
            try:
                compiled = re.compile(rx)
            except re.error as exc:
                raise ValueError(f"pattern {kind!r} is not a valid regular expression: {exc}") from None
            if compiled.match(""):
                raise ValueError(f"pattern {kind!r} matches the empty string")
        return v

    @field_validator("paths")
    @classmethod
    def _parse_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            parse_json_path(path)  # raises ValueError naming the path
        return v

    @model_validator(mode="before")
    @classmethod
    def _key_is_text(cls, data: Any) -> Any:
        # Checked on the whole section: a field error would quote the (secret) value back.
        if isinstance(data, dict) and data.get("hash_key") is not None and not isinstance(data["hash_key"], str):
            raise ValueError("hash_key must be a string: quote it in YAML (the value is not shown)")
        return data

    @model_validator(mode="after")
    def _key_length(self) -> RedactConfig:
        # A model-level check, so the error message never repeats the (secret) key itself.
        if self.hash_key is not None and len(self.hash_key.encode()) < 16:
            raise ValueError("hash_key must be at least 16 bytes")
        return self


class SnapshotsConfig(_Model):
    enabled: bool = True
    retention: Duration = MIN_SNAPSHOT_RETENTION
    max_bytes: int = Field(1024 * 1024, gt=0)  # per payload; larger bodies are truncated
    redact: RedactConfig = Field(default_factory=RedactConfig)
    backend: str = "sqlite"  # or s3://bucket/prefix
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    sweep_interval: Duration = 60.0
    sweep_batch: int = Field(500, gt=0)  # rows/objects per delete; intake waits at most one batch
    # SQLite backend: cap on the snapshot file; beyond it snapshots are dropped (snapshot_store_full)
    # instead of filling the disk the ledger lives on.
    max_store_bytes: int | None = Field(None, gt=0)

    @field_validator("retention")
    @classmethod
    def _min_retention(cls, v: float) -> float:
        if v < MIN_SNAPSHOT_RETENTION:
            raise ValueError("retention must be at least 72h: payload snapshots are kept for 72 hours minimum")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v != "sqlite" and not (v.startswith("s3://") and len(v) > 5 and not v.startswith("s3:///")):
            raise ValueError("expected 'sqlite' or s3://bucket/prefix")
        return v


class ApiConfig(_Model):
    token: str | None = Field(None, repr=False)
    token_file: Path | None = None

    def resolve_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            return self.token_file.read_text().strip() or None
        return None


class Config(_Model):
    listen: ListenConfig = Field(default_factory=ListenConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    flows: dict[str, FlowConfig] = Field(default_factory=default_flows)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    # Mapping rules: transactions from the spans stock instrumentations emit (syncwatch.rules).
    rules: RulesConfig = Field(default_factory=RulesConfig)
    # Payload audits: field ownership, write conflicts, idempotency misuse (syncwatch.audit).
    audit: AuditConfig = Field(default_factory=AuditConfig)
    # Validated by the collectors package (each plug-in owns its own settings model).
    collectors: list[dict[str, Any]] = Field(default_factory=list)
    sampling: dict[str, Any] = Field(default_factory=dict)
    # Validated by the reconcile package (each plug-in owns its own settings model).
    reconcilers: list[dict[str, Any]] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _token_file_exists(self) -> Config:
        if self.api.token_file is not None and not self.api.token_file.is_file():
            raise ValueError(f"api.token_file: {self.api.token_file} does not exist")
        return self
