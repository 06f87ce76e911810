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
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from syncwatch.collectors.base import Collector, CollectorError, DlqDepth, QueueDepth, Sample
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterRead, DeadLetterSettings
from syncwatch.collectors.selection import Selector, literal_prefix
from syncwatch.collectors.sqs_answers import (
    ATTRIBUTES,
    QueueAttributes,
    check_attributes,
    check_url,
    check_urls,
    parse_messages,
    queue_name,
    split_arn,
)
from syncwatch.collectors.sqs_api import classify, make_client
from syncwatch.collectors.sqs_settings import SqsSettings

# Re-exported: where callers imported them from before the split.
__all__ = ["SqsCollector", "SqsSettings", "classify", "parse_messages"]


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
                        self._client = make_client(self.settings)
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
                if selector.matches(queue_name(url)):
                    found[queue_name(url)] = url

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
            queue_name(u)
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
                    exc = CollectorError("bad_response", f"queue {queue_name(url)[:200]!r}: {exc.message}")
                if exc.reason == "not_found":
                    exc = CollectorError("not_found", f"queue {queue_name(url)!r} vanished")
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
                split = split_arn(arn)  # checked when its RedrivePolicy was read
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
            dlq_sources.setdefault(dlq_arn, set()).add(queue_name(source_arn))
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
            sample.dead_letters = [
                await read_dead_letters(self._call, sample, d, dlq_urls, self.settings.dead_letters)
                for d in sample.dlqs
            ]
        return sample


async def read_dead_letters(
    call: Callable[..., Awaitable[Any]],
    sample: Sample,
    dlq: DlqDepth,
    urls: dict[tuple[str, str], str],
    dl: DeadLetterSettings,
) -> DeadLetterRead:
    """At most max_per_queue messages of one DLQ, received with VisibilityTimeout=0 so they stay
    visible (each receive raises their ApproximateReceiveCount); never deleted."""
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
            messages, skipped = await call(
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
