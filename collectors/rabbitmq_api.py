"""The RabbitMQ management API's answers, size-capped and type-checked item by item.

Everything here runs in the collector's own thread, never on the event loop; a malformed answer
becomes one CollectorError naming where it went wrong.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from syncwatch.collectors.base import CollectorError
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterSettings, correlation_of, message_key

Text = Annotated[str, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=0, le=2**63)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _DeadLetterArguments(_Model):
    exchange: Text | None = Field(None, alias="x-dead-letter-exchange")
    routing_key: Text | None = Field(None, alias="x-dead-letter-routing-key")


class _DeadLetterPolicy(_Model):
    exchange: Text | None = Field(None, alias="dead-letter-exchange")
    routing_key: Text | None = Field(None, alias="dead-letter-routing-key")


class QueueItem(_Model):
    name: Text
    vhost: Text
    type: Text | None = None  # classic | quorum | stream
    messages_ready: Count | None = None  # absent until the queue's first stats emission
    messages_unacknowledged: Count | None = None
    consumers: Count | None = None
    head_message_timestamp: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None
    arguments: _DeadLetterArguments = Field(default_factory=_DeadLetterArguments)
    effective_policy_definition: _DeadLetterPolicy = Field(default_factory=_DeadLetterPolicy)

    @field_validator("arguments", "effective_policy_definition", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        # Erlang's empty proplist: the API answers `[]` (or null) where it means `{}`.
        return {} if v is None or v == [] else v

    def dead_letter_target(self) -> tuple[str, str | None] | None:
        """(exchange, routing key or None) this queue dead-letters to, or None."""
        args, policy = self.arguments, self.effective_policy_definition
        key = args.routing_key if args.routing_key is not None else policy.routing_key
        if args.exchange is not None:
            return args.exchange, key
        if policy.exchange is not None:
            return policy.exchange, key
        return None


class ExchangeItem(_Model):
    name: Text
    type: Text


class BindingItem(_Model):
    source: Text
    destination: Text
    destination_type: Text
    routing_key: Text


M = TypeVar("M", bound=_Model)
PAGE_COUNT = TypeAdapter(Count)


def _bad(where: str, exc: ValidationError, prefix: str) -> CollectorError:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")[:200]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return CollectorError("bad_response", f"{where}: unexpected answer at {loc or 'top level'}: {err['msg']}{more}")


def _decode(body: bytes, where: str, max_containers: int) -> Any:
    # What decoding costs is mostly objects and arrays (with the garbage collector walking them): count
    # them first, at memchr speed, so no answer within the size cap holds the interpreter for long.
    containers = body.count(b"{") + body.count(b"[")
    if containers > max_containers:
        raise CollectorError("too_large", f"{where}: {containers} JSON objects and arrays, over {max_containers}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter allows
        raise CollectorError("bad_response", f"{where}: the answer is not valid JSON") from None


def _items(data: Any, model: type[M], where: str, prefix: str, max_items: int | None = None) -> list[M]:
    """Each item checked on its own: the first bad one ends the check (one error, not a million), and the
    thread yields the interpreter between items, so even a 4 MiB list of `{}` never holds the loop."""
    if not isinstance(data, list):
        raise CollectorError("bad_response", f"{where}: unexpected answer at {prefix or 'top level'}: not a list")
    if max_items is not None and len(data) > max_items:
        raise CollectorError("bad_response", f"{where}: {len(data)} items, asked for at most {max_items}")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            raise _bad(where, exc, f"{prefix}.{i}" if prefix else str(i)) from None
    return out


def parse_queue_page(body: bytes, where: str, page_size: int) -> tuple[int, list[QueueItem]]:
    """(page_count, items) of one page of /api/queues (run in the collector's thread, never on the loop)."""
    # An item is an object with two more inside (arguments, policy); 16 each leaves room for odd ones.
    data = _decode(body, where, 16 * page_size + 16)
    if not isinstance(data, dict):
        raise CollectorError("bad_response", f"{where}: unexpected answer at top level: not a page object")
    try:
        page_count = PAGE_COUNT.validate_python(data.get("page_count"))
    except ValidationError as exc:
        raise _bad(where, exc, "page_count") from None
    return page_count, _items(data.get("items"), QueueItem, where, "items", page_size)


def parse_list(body: bytes, where: str, model: type[M]) -> list[M]:
    """A plain-list answer (exchanges, bindings), each item checked (in the collector's thread). Their
    items are flat objects of 28 bytes or more: one container per 24 bytes is more than they need."""
    return _items(_decode(body, where, len(body) // 24 + 8), model, where, "")


def unreadable(queue: str, n: int) -> CollectorError:
    return CollectorError("bad_response", f"dead letters of {queue[:200]!r}: {n} message(s) unreadable, skipped")


def parse_messages(body: bytes, queue: str, settings: DeadLetterSettings, now: float) -> tuple[list[DeadLetter], int]:
    """get-messages' answer as DeadLetters: the correlation ID from a header or property (or the
    body's JSON path), reason, source queue and time from the newest x-death entry. Runs in the
    collector's thread; a malformed message is skipped, a malformed answer is bad_response."""
    data = _decode(body, f"/api/queues/.../{queue[:100]}/get", 100_000)
    if not isinstance(data, list):
        raise CollectorError("bad_response", "get-messages: the answer is not a list")
    letters = []
    skipped = 0  # malformed messages: counted, reported as one bad_response per DLQ
    for m in data[: settings.max_per_queue]:
        if not isinstance(m, dict):
            skipped += 1
            continue
        props: dict[str, Any] = m["properties"] if isinstance(m.get("properties"), dict) else {}
        headers: dict[str, Any] = props["headers"] if isinstance(props.get("headers"), dict) else {}
        payload = m.get("payload")
        if not isinstance(payload, str):
            skipped += 1
            continue
        if m.get("payload_encoding") == "base64":
            try:
                raw = base64.b64decode(payload, validate=True)
            except ValueError:
                skipped += 1
                continue
        else:
            raw = payload.encode("utf-8", "surrogatepass")
        raw = raw[: settings.max_body_bytes]
        size = m.get("payload_bytes")
        size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else len(raw)
        deaths = headers.get("x-death")
        death: dict[str, Any] = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        reason = death.get("reason") if isinstance(death.get("reason"), str) else headers.get("x-first-death-reason")
        source = death.get("queue") if isinstance(death.get("queue"), str) else headers.get("x-first-death-queue")
        at = death.get("time")
        at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) and 0 < at < 1e11 else None
        count = death.get("count")
        lookup = {"correlation_id": props.get("correlation_id"), "message_id": props.get("message_id"), **headers}
        mid = props.get("message_id")
        letters.append(
            DeadLetter(
                key=mid[:200]
                if isinstance(mid, str) and mid
                else message_key(raw, at, reason, source, m.get("routing_key")),
                correlation_id=correlation_of(settings.correlation, lookup, raw),
                reason=reason[:200] if isinstance(reason, str) else None,
                source_queue=source[:1024] if isinstance(source, str) else None,
                dead_lettered_at=at,
                deliveries=count if isinstance(count, int) and not isinstance(count, bool) else None,
                body=raw,
                body_size=size,
                truncated=size > len(raw),
            )
        )
    return letters, skipped
