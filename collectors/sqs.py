"""Amazon SQS collector: GetQueueAttributes per queue through boto3, seconds fresh (no CloudWatch).

Selection by names or patterns (ListQueues, paginated, re-listed every `discovery_interval`). A queue's
DLQ comes from its `RedrivePolicy.deadLetterTargetArn`; a queue configured under `dead_letter_queues`
gets its sources from `ListDeadLetterSourceQueues`. boto3 is blocking: every call runs in this
collector's own thread pool with botocore timeouts, so it never blocks the event loop or other collectors.
Every answer is size-capped before botocore parses it, and its fields are type-checked in that thread:
one queue's odd attributes are that queue's counted failure, never an exported NaN or a crash.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.session import get_session
from pydantic import Field

from syncwatch.collectors.base import Collector, CollectorError, CollectorSettings, DlqDepth, QueueDepth, Sample
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterRead, DeadLetterSettings, correlation_of
from syncwatch.collectors.selection import Selector, literal_prefix
from syncwatch.config.durations import Duration

ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
    "QueueArn",
]
NOT_FOUND = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "KmsThrottled",
}
# Largest answer botocore is let parse (ListQueues of 1,000 URLs is ~100 KB).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
UNAUTHORIZED = {
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
    "InvalidSecurity",
    "MissingAuthenticationToken",
}


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


def classify(exc: BaseException) -> CollectorError:
    if isinstance(exc, CollectorError):
        return exc
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return CollectorError("timeout", str(exc))
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError)):
        return CollectorError("unreachable", str(exc))
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)):
        return CollectorError("unauthorized", f"{exc} (default chain, `profile` or `role_arn`)")
    if isinstance(exc, NoRegionError):
        return CollectorError("other", "no AWS region: set `region`, or AWS_DEFAULT_REGION, or a region in the profile")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        op = exc.operation_name
        if code in NOT_FOUND:
            return CollectorError("not_found", f"{op}: {code}")
        if code in THROTTLED or status == 429:
            return CollectorError("throttled", f"{op}: {code}")
        if code in UNAUTHORIZED or status in (401, 403):
            return CollectorError("unauthorized", f"{op}: {code}")
        return CollectorError("other", f"{op}: {code} (HTTP {status})")
    if isinstance(exc, BotoCoreError):
        return CollectorError("other", str(exc))
    return CollectorError("other", f"{type(exc).__name__}: {exc}")


def _queue_name(url_or_arn: str) -> str:
    return url_or_arn.rsplit(":" if url_or_arn.startswith("arn:") else "/", 1)[-1]


# --- answers, type-checked in the collector's thread ---------------------------------------------


def _bad(op: str, what: str) -> CollectorError:
    return CollectorError("bad_response", f"{op}: {what}")


def _split_arn(arn: Any) -> tuple[str, str, str] | None:
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
    parts = _split_arn(arn)
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
        if _split_arn(target) is None:
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


def _refuse_large_answers(response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's before-parse hook: an oversized answer is refused before it is decoded."""
    body = response_dict.get("body") or b""
    if len(body) > MAX_RESPONSE_BYTES:
        raise CollectorError("too_large", f"an answer of {len(body)} bytes, over {MAX_RESPONSE_BYTES}")


class SqsCollector(Collector):
    broker = "sqs"
    Settings = SqsSettings

    def __init__(self, settings: SqsSettings):
        super().__init__(settings)
        self.settings: SqsSettings = settings
        self.selector = Selector(settings.queues, settings.exclude)
        self.dlq_selector = Selector(settings.dead_letter_queues)
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix=f"sqs-{settings.name}")
        self._client: Any = None
        self._discovered_at: float | None = None
        self._urls: dict[str, str] = {}  # selected queue name -> URL
        self._dlq_urls: dict[str, str] = {}  # configured DLQ name -> URL
        self._dlq_sources: dict[str, set[str]] = {}  # configured DLQ name -> source queue names
        self._arn_urls: dict[str, str] = {}  # DLQ ARN (from a RedrivePolicy) -> URL
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._client_lock = threading.Lock()  # the first cycle's threads must not each build a client

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "type": s.type,
            "name": s.name,
            "region": s.region or "(default chain)",
            "profile": s.profile,
            "role_arn": s.role_arn,
            "endpoint_url": s.endpoint_url,
        }

    # --- plumbing -----------------------------------------------------------------------------

    def _make_client(self) -> Any:
        s = self.settings
        # No botocore retries: the next cycle is the retry. No client-side parameter validation: the
        # parameters are built here, and skipping it saves ~25% of the per-call CPU at 1,000 queues.
        cfg = BotoConfig(
            connect_timeout=s.timeout,
            read_timeout=s.timeout,
            max_pool_connections=s.concurrency,
            retries={"max_attempts": 1, "mode": "standard"},
            parameter_validation=False,
        )
        session = boto3.session.Session(profile_name=s.profile, region_name=s.region)
        if s.role_arn:
            sts = session.client("sts", endpoint_url=s.sts_endpoint_url, config=cfg)

            def assume() -> dict[str, str]:
                kwargs = {"RoleArn": s.role_arn, "RoleSessionName": s.role_session_name}
                if s.external_id:
                    kwargs["ExternalId"] = s.external_id
                c = sts.assume_role(**kwargs)["Credentials"]
                return {
                    "access_key": c["AccessKeyId"],
                    "secret_key": c["SecretAccessKey"],
                    "token": c["SessionToken"],
                    "expiry_time": c["Expiration"].isoformat(),
                }

            # Refreshable: botocore assumes the role again shortly before the credentials expire.
            creds = RefreshableCredentials.create_from_metadata(assume(), assume, "assume-role")
            botocore_session = get_session()
            botocore_session._credentials = creds
            session = boto3.session.Session(
                botocore_session=botocore_session, region_name=s.region or session.region_name
            )
        client = session.client("sqs", endpoint_url=s.endpoint_url, config=cfg)
        client.meta.events.register("before-parse.sqs", _refuse_large_answers)
        return client

    async def _call(self, sample: Sample, op: str, check: Callable[[Any], Any] | None = None, **kwargs: Any) -> Any:
        """`op(**kwargs)` in this collector's thread; `check` turns the answer into checked values there."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # a semaphore belongs to one event loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.settings.concurrency), loop
        async with self._sem:
            sample.api_calls += 1
            loop = asyncio.get_running_loop()

            def run() -> dict[str, Any]:
                with self._client_lock:
                    if self._client is None:
                        self._client = self._make_client()
                answer = getattr(self._client, op)(**kwargs)
                return check(answer) if check is not None else answer

            try:
                # botocore's own timeouts end the thread's call; this guard bounds the wait for it.
                return await asyncio.wait_for(loop.run_in_executor(self._pool, run), self.settings.timeout + 1)
            except TimeoutError:
                raise CollectorError("timeout", f"{op}: no answer within {self.settings.timeout:g}s") from None
            except Exception as exc:
                raise classify(exc) from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- discovery ----------------------------------------------------------------------------

    async def _paginate(self, sample: Sample, method: str, op: str, key: str, kwargs: dict[str, Any]) -> list[str]:
        """Every URL of a paged listing, at most max_queues of them; pages beyond are never requested."""
        s = self.settings
        check = check_urls(key, op)
        # Pages may come back short of MaxResults: allow twice the pages a full listing would need.
        max_pages = 2 * math.ceil(s.max_queues / s.list_page_size) + 1
        urls: list[str] = []
        for _ in range(max_pages):
            page, token = await self._call(sample, method, check, **kwargs)
            urls.extend(page)
            if len(urls) > s.max_queues:
                break
            if token is None:
                return urls
            kwargs["NextToken"] = token
        raise CollectorError(
            "too_large",
            f"{op}: more than max_queues ({s.max_queues}) queues, or more than "
            f"{max_pages} pages: raise max_queues or select by a longer prefix",
        )

    async def _list_queues(self, sample: Sample, prefix: str) -> list[str]:
        kwargs: dict[str, Any] = {"MaxResults": self.settings.list_page_size}
        if prefix:
            kwargs["QueueNamePrefix"] = prefix[:80]
        return await self._paginate(sample, "list_queues", "ListQueues", "QueueUrls", kwargs)

    async def _resolve(self, sample: Sample, selector: Selector) -> dict[str, str]:
        found: dict[str, str] = {}
        if selector.patterns:
            prefixes = {literal_prefix(p) for p in selector.patterns}
            # One listing when any pattern starts with a wildcard; else one per distinct prefix.
            prefixes = {""} if "" in prefixes else prefixes
            listed = await asyncio.gather(*(self._list_queues(sample, p) for p in sorted(prefixes)))
            for url in (u for lst in listed for u in lst):
                if selector.matches(_queue_name(url)):
                    found[_queue_name(url)] = url

        async def by_name(name: str) -> None:
            try:
                found[name] = await self._call(sample, "get_queue_url", check_url, QueueName=name)
            except CollectorError as exc:
                if exc.reason != "not_found":
                    raise
                sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))

        await asyncio.gather(*(by_name(n) for n in selector.names if n not in found))
        return found

    async def _sources_of(self, sample: Sample, url: str) -> set[str]:
        kwargs: dict[str, Any] = {"QueueUrl": url, "MaxResults": self.settings.list_page_size}
        return {
            _queue_name(u)
            for u in await self._paginate(
                sample, "list_dead_letter_source_queues", "ListDeadLetterSourceQueues", "queueUrls", kwargs
            )
        }

    async def _discover(self, sample: Sample) -> None:
        self._urls = await self._resolve(sample, self.selector)
        self._dlq_urls = await self._resolve(sample, self.dlq_selector) if self.settings.dead_letter_queues else {}
        names = sorted(self._dlq_urls)
        sources = await asyncio.gather(*(self._sources_of(sample, self._dlq_urls[n]) for n in names))
        self._dlq_sources = dict(zip(names, sources, strict=False))
        self._discovered_at = time.monotonic()

    # --- sampling -----------------------------------------------------------------------------

    async def _attributes(self, sample: Sample, urls: list[str]) -> dict[str, QueueAttributes]:
        """URL -> attributes. One queue failing (deleted since discovery, throttled) is counted and the
        rest still reported; only when every queue fails is the whole sample a failure."""
        failures: list[CollectorError] = []

        async def one(url: str) -> tuple[str, QueueAttributes | None]:
            try:
                return url, await self._call(
                    sample, "get_queue_attributes", check_attributes, QueueUrl=url, AttributeNames=ATTRIBUTES
                )
            except CollectorError as exc:
                if exc.reason == "bad_response":
                    exc = CollectorError("bad_response", f"queue {_queue_name(url)[:200]!r}: {exc.message}")
                if exc.reason == "not_found":
                    exc = CollectorError("not_found", f"queue {_queue_name(url)!r} vanished")
                    self._discovered_at = None  # list again next cycle
                failures.append(exc)
                return url, None

        results = await asyncio.gather(*(one(u) for u in urls))
        if urls and len(failures) == len(urls) and any(f.reason != "not_found" for f in failures):
            raise next(f for f in failures if f.reason != "not_found")
        sample.errors.extend(failures)
        return {u: a for u, a in results if a is not None}

    async def sample(self) -> Sample:
        sample = Sample()
        if self._discovered_at is None or time.monotonic() - self._discovered_at >= self.settings.discovery_interval:
            await self._discover(sample)
        urls = sorted(set(self._urls.values()) | set(self._dlq_urls.values()))
        attrs = await self._attributes(sample, urls)

        # Redrive targets named by the sampled queues that were not sampled yet: find and read them too.
        redrive: dict[str, str] = {}  # source queue ARN -> DLQ ARN
        for a in attrs.values():
            if a.redrive_problem is not None:
                # Its dead letters cannot be linked: counted, and the queue itself is still reported.
                sample.errors.append(CollectorError("bad_response", f"queue {a.name[:200]!r}: {a.redrive_problem}"))
            elif a.dead_letter_arn is not None:
                redrive[a.arn] = a.dead_letter_arn
        sampled_arns = {a.arn for a in attrs.values()}
        missing = sorted(set(redrive.values()) - sampled_arns)
        for arn in missing:
            if arn not in self._arn_urls:
                split = _split_arn(arn)  # checked when its RedrivePolicy was read
                if split is None:
                    continue
                _, account, name = split
                try:
                    self._arn_urls[arn] = await self._call(
                        sample, "get_queue_url", check_url, QueueName=name, QueueOwnerAWSAccountId=account
                    )
                except CollectorError as exc:
                    if exc.reason != "not_found":
                        raise
                    sample.errors.append(
                        CollectorError(
                            "not_found", f"dead-letter queue {name[:200]!r} of a redrive policy does not exist"
                        )
                    )
        attrs.update(await self._attributes(sample, [self._arn_urls[a] for a in missing if a in self._arn_urls]))

        dlq_sources: dict[str, set[str]] = {}  # DLQ ARN -> source queue names
        for source_arn, dlq_arn in redrive.items():
            dlq_sources.setdefault(dlq_arn, set()).add(_queue_name(source_arn))
        configured = {self._dlq_urls[n]: n for n in self._dlq_urls}
        for url, a in sorted(attrs.items()):
            namespace = f"{a.account}/{a.region}"
            if a.arn in dlq_sources or url in configured:
                sources = dlq_sources.get(a.arn, set()) | self._dlq_sources.get(configured.get(url, ""), set())
                # A DLQ's depth counts messages someone is looking at, too: the page must not resolve then.
                sample.dlqs.append(DlqDepth(namespace, a.name, a.visible + a.hidden, sources))
            else:
                sample.queues.append(QueueDepth(namespace, a.name, a.visible, in_flight=a.hidden, delayed=a.delayed))
        if self.settings.dead_letters.enabled:
            dlq_urls = {(f"{a.account}/{a.region}", a.name): u for u, a in attrs.items()}
            sample.dead_letters = [await self._read_dead_letters(sample, d, dlq_urls) for d in sample.dlqs]
        return sample

    async def _read_dead_letters(
        self, sample: Sample, dlq: DlqDepth, urls: dict[tuple[str, str], str]
    ) -> DeadLetterRead:
        """At most max_per_queue messages of one DLQ, received with VisibilityTimeout=0 so they stay
        visible (each receive raises their ApproximateReceiveCount); never deleted."""
        dl = self.settings.dead_letters
        read = DeadLetterRead(dlq.namespace, dlq.queue, complete=dlq.messages == 0)
        url = urls.get((dlq.namespace, dlq.queue))
        if url is None or dlq.messages == 0:
            return read
        seen: dict[str, DeadLetter] = {}
        # A receive returns up to 10 of the visible messages, some sampled again: a few calls more than needed.
        for _ in range(-(-dl.max_per_queue // 10) + 2):
            want = min(10, dl.max_per_queue - len(seen))
            if want <= 0:
                break
            try:
                messages, skipped = await self._call(
                    sample,
                    "receive_message",
                    lambda answer: parse_messages(answer, dl),
                    QueueUrl=url,
                    MaxNumberOfMessages=want,
                    VisibilityTimeout=0,
                    WaitTimeSeconds=0,
                    # AttributeNames: the older name of MessageSystemAttributeNames, which moto reads.
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except CollectorError as exc:
                sample.errors.append(CollectorError(exc.reason, f"dead letters of {dlq.queue[:200]!r}: {exc.message}"))
                return read
            if skipped:
                sample.errors.append(
                    CollectorError(
                        "bad_response", f"dead letters of {dlq.queue[:200]!r}: {skipped} message(s) unreadable, skipped"
                    )
                )
            new = [m for m in messages if m.key not in seen]
            seen.update((m.key, m) for m in new)
            if not new:
                break
        read.letters = list(seen.values())[: dl.max_per_queue]
        read.complete = len(read.letters) >= dlq.messages
        return read


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
                source_queue=_queue_name(source) if isinstance(source, str) else None,
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
