"""Settings of the SQS collector (its own module: the client factory and the collector both read them)."""

from __future__ import annotations

from pydantic import Field

from syncwatch.collectors.base import CollectorSettings
from syncwatch.collectors.deadletters import DeadLetterSettings
from syncwatch.config.durations import Duration


class SqsSettings(CollectorSettings):
    region: str | None = None  # default: from the profile or AWS_DEFAULT_REGION
    profile: str | None = None  # a named profile of ~/.aws; default: the default credential chain
    role_arn: str | None = None  # assume this role (renewed before it expires)
    role_session_name: str = "syncwatch"
    external_id: str | None = None
    endpoint_url: str | None = None  # e.g. a VPC endpoint, or a local SQS-compatible server
    sts_endpoint_url: str | None = None
    queues: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[str] = Field(default_factory=list)
    # Queues that are DLQs: their source queues are looked up with ListDeadLetterSourceQueues.
    dead_letter_queues: list[str] = Field(default_factory=list)
    discovery_interval: Duration = 300.0
    concurrency: int = Field(32, ge=1, le=256)  # GetQueueAttributes calls in flight at once
    list_page_size: int = Field(1000, ge=1, le=1000)  # ListQueues / ListDeadLetterSourceQueues MaxResults
    # Queue URLs one listing may return. A longer listing (or one that keeps paging) is refused as
    # too_large: raise this, or select by a longer prefix.
    max_queues: int = Field(10_000, ge=1, le=1_000_000)
    # Read the DLQs' messages (ReceiveMessage with VisibilityTimeout=0: raises their receive count); off by default.
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
