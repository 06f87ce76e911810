"""SQS answers, type-checked in the collector's thread: one queue's odd attributes become that
queue's counted bad_response, never an exported NaN or a crash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncwatch.collectors.base import CollectorError
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterSettings, correlation_of

ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
    "QueueArn",
]


def queue_name(url_or_arn: str) -> str:
    return url_or_arn.rsplit(":" if url_or_arn.startswith("arn:") else "/", 1)[-1]


def _bad(op: str, what: str) -> CollectorError:
    return CollectorError("bad_response", f"{op}: {what}")


def split_arn(arn: Any) -> tuple[str, str, str] | None:
    """(region, account, queue name) of an SQS queue ARN, or None when it is not one."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not all(parts[3:]):
        return None
    return parts[3], parts[4], parts[5]


def _count(value: Any, op: str, name: str) -> float:
    # SQS sends counts as decimal strings; a compatible server may send JSON integers.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return float(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**18:
        return float(value)
    raise _bad(op, f"{name} is not a count")


@dataclass(frozen=True)
class QueueAttributes:
    arn: str
    region: str
    account: str
    name: str
    visible: float
    hidden: float
    delayed: float
    dead_letter_arn: str | None  # from the RedrivePolicy
    redrive_problem: str | None  # why a RedrivePolicy could not be read


def check_attributes(answer: Any) -> QueueAttributes:
    op = "GetQueueAttributes"
    attrs = answer.get("Attributes") if isinstance(answer, dict) else None
    if not isinstance(attrs, dict):
        raise _bad(op, "no Attributes map")
    arn = attrs.get("QueueArn")
    parts = split_arn(arn)
    if parts is None:
        raise _bad(op, "QueueArn is not an SQS queue ARN")
    counts = [_count(attrs.get(n), op, n) for n in ATTRIBUTES[:3]]
    target, problem = None, None
    policy = attrs.get("RedrivePolicy")
    if policy:
        try:
            target = json.loads(policy)["deadLetterTargetArn"] if isinstance(policy, str) else None
        except (ValueError, KeyError, TypeError, RecursionError):
            target = None
        if split_arn(target) is None:
            target, problem = None, "RedrivePolicy without a readable deadLetterTargetArn"
    region, account, name = parts
    visible, hidden, delayed = counts
    return QueueAttributes(
        str(arn), region, account, name, visible, hidden, delayed, dead_letter_arn=target, redrive_problem=problem
    )


def check_urls(key: str, op: str) -> Callable[[Any], tuple[list[str], str | None]]:
    """A check for one page of a listing: (its URLs, the NextToken or None)."""

    def check(answer: Any) -> tuple[list[str], str | None]:
        urls = answer.get(key, []) if isinstance(answer, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) and "/" in u for u in urls):
            raise _bad(op, f"{key} is not a list of queue URLs")
        token = answer.get("NextToken")
        if token is not None and not isinstance(token, str):
            raise _bad(op, "NextToken is not a string")
        return urls, token or None

    return check


def check_url(answer: Any) -> str:
    url = answer.get("QueueUrl") if isinstance(answer, dict) else None
    if not isinstance(url, str) or "/" not in url:
        raise _bad("GetQueueUrl", "QueueUrl is not a queue URL")
    return url


def parse_messages(answer: Any, settings: DeadLetterSettings) -> tuple[list[DeadLetter], int]:
    """ReceiveMessage's messages as DeadLetters (in the collector's thread): the correlation ID from
    a message attribute or the body's JSON path; reason from a DeadLetterReason attribute, else
    maxReceiveCount (SQS moves a message after that many receives); time from SentTimestamp."""
    messages = answer.get("Messages", []) if isinstance(answer, dict) else None
    if not isinstance(messages, list):
        raise _bad("ReceiveMessage", "Messages is not a list")
    out = []
    skipped = 0  # malformed messages: counted, reported as one bad_response per DLQ
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("MessageId"), str) or not isinstance(m.get("Body"), str):
            skipped += 1
            continue
        attrs: dict[str, Any] = m["Attributes"] if isinstance(m.get("Attributes"), dict) else {}
        mattrs: dict[str, Any] = m["MessageAttributes"] if isinstance(m.get("MessageAttributes"), dict) else {}
        values = {k: v.get("StringValue") for k, v in mattrs.items() if isinstance(v, dict)}
        raw_all = m["Body"].encode("utf-8", "surrogatepass")
        raw = raw_all[: settings.max_body_bytes]
        sent = _int(attrs.get("SentTimestamp"))
        source = attrs.get("DeadLetterQueueSourceArn")
        reason = values.get("DeadLetterReason")
        out.append(
            DeadLetter(
                key=m["MessageId"][:200],
                correlation_id=correlation_of(settings.correlation, values, raw_all[: 1024 * 1024]),
                reason=reason[:200] if isinstance(reason, str) else "maxReceiveCount",
                source_queue=queue_name(source) if isinstance(source, str) else None,
                dead_lettered_at=sent / 1000 if sent is not None else None,
                deliveries=_int(attrs.get("ApproximateReceiveCount")),
                body=raw,
                body_size=len(raw_all),
                truncated=len(raw_all) > len(raw),
            )
        )
    return out, skipped


def _int(value: Any) -> int | None:
    try:
        return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 20 else None
    except ValueError:
        return None
