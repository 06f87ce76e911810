"""The reconciler interface every plug-in implements: a source side that lists IDs in a time
window, page by page, and a destination side that looks IDs up. The comparison is syncwatch's."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from syncwatch.collectors.config import HighTrafficWindow
from syncwatch.config.durations import Duration
from syncwatch.config.errors import SyncwatchError

# Why a run failed, as exported in syncwatch_reconciler_errors_total{reason}. `bad_result`: the query
# ran but returned something that is not an ID (a number with decimals, a date, a blob, no column).
Reason = Literal["unreachable", "timeout", "unauthorized", "query_error", "bad_result", "other"]
REASONS: tuple[Reason, ...] = get_args(Reason)

# What a run finds, the `kind` label of syncwatch_reconcile_findings.
Kind = Literal["missing", "duplicated", "never_traced", "late"]
KINDS: tuple[Kind, ...] = get_args(Kind)


class ExpectedRate(HighTrafficWindow):
    """At least `min_per_hour` source records of `flow` per hour within these days and hours: fewer
    is a flow gone quiet (exported as syncwatch_reconcile_expected_source_ids_per_hour)."""

    flow: str
    min_per_hour: float = Field(gt=0)


class ReconcilerSettings(BaseModel):
    """Keys every reconciler entry has; a plug-in subclasses this with its connection and query keys."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    interval: Duration = 300.0
    # The first run looks this far back; later runs start where the last one ended, less the deadline.
    lookback: Duration = 86400.0
    # Open findings kept per (flow, kind); beyond it new ones are counted, not stored.
    max_findings: int = Field(10_000, gt=0, le=1_000_000)
    # Findings resolved or recorded longer ago than this are deleted.
    retention: Duration = 14 * 86400.0
    # Business hours with a minimum source rate per flow (the quiet-flow alert's configured floor).
    expected: list[ExpectedRate] = Field(default_factory=list)

    def flow_names(self) -> list[str]:
        return []

    def correlation_template(self, flow: str) -> str:
        """How a source ID appears as a correlation ID in spans (the ledger cross-check)."""
        return "{id}"


class ReconcileError(SyncwatchError):
    """A query or connection failed; `reason` is one of REASONS. The message never holds a secret."""

    def __init__(self, reason: Reason, message: str):
        self.reason: Reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True, slots=True)
class SourceRow:
    id: str
    changed_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class DestinationRow:
    id: str
    record_id: str
    arrived_at: float | None  # unix seconds; None when the destination does not tell


class Reconciler(abc.ABC):
    """A reconciler plug-in. Its coroutines run on the sidecar's event loop: they must not block it,
    must page through results (never a whole table in memory) and must bound every call in time."""

    Settings: ClassVar[type[ReconcilerSettings]] = ReconcilerSettings

    def __init__(self, settings: ReconcilerSettings):
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    def flows(self) -> list[str]:
        return self.settings.flow_names()

    @abc.abstractmethod
    def source_pages(self, flow: str, start: float, end: float) -> AsyncIterator[list[SourceRow]]:
        """IDs created or changed at the source with start <= changed_at < end, in pages."""

    @abc.abstractmethod
    async def destination_lookup(self, flow: str, ids: list[str]) -> list[DestinationRow]:
        """Every destination record of these source IDs (several for a duplicate, none when missing)."""

    async def open(self) -> None:  # noqa: B027 -- optional hook
        """Connect for one run (the manager calls close() after it)."""

    async def close(self) -> None:  # noqa: B027 -- optional hook
        """Release connections."""

    def describe(self) -> dict[str, Any]:
        """What `syncwatch reconcile test` prints about the targets (never secrets)."""
        return {"type": self.settings.type, "name": self.name}
