"""RabbitMQ collector: the management HTTP API (`/api/queues`, paged), read with aiohttp.

Dead-letter linking: a queue's dead-letter exchange comes from its arguments
(`x-dead-letter-exchange`, `x-dead-letter-routing-key`), which win over its effective policy
(`dead-letter-exchange`, `dead-letter-routing-key`). Its DLQs are the queues bound to that exchange
for that routing key (following exchange-to-exchange bindings). Classic and quorum queues alike.

Every answer is size-capped, parsed and type-checked in this collector's own thread, and the linking
runs there too with a bounded amount of topic matching: a broker's data cannot stall the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import math
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from syncwatch.collectors.base import (
    Collector,
    CollectorError,
    CollectorSettings,
    Sample,
    check_env_name,
    secret_from_env,
)
from syncwatch.collectors.deadletters import DeadLetterRead, DeadLetterSettings
from syncwatch.collectors.rabbitmq_api import (
    BindingItem,
    ExchangeItem,
    QueueItem,
    parse_list,
    parse_messages,
    parse_queue_page,
    unreadable,
)
from syncwatch.collectors.rabbitmq_linking import Plan, Routing, link_sample, plan_sample
from syncwatch.collectors.selection import Selector

# Re-exported: tests and callers import the answer parser from here.
__all__ = ["RabbitMQCollector", "RabbitMQSettings", "parse_messages"]

T = TypeVar("T")

QUEUE_COLUMNS = ",".join(
    (
        "name",
        "vhost",
        "type",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "head_message_timestamp",
        "arguments",
        "effective_policy_definition",
    )
)
BINDING_COLUMNS = "source,destination,destination_type,routing_key"


class RabbitMQSettings(CollectorSettings):
    url: str = "http://127.0.0.1:15672"  # management API base URL
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    # Or the name of an environment variable holding the password (e.g. filled from a Kubernetes Secret);
    # read when the config is validated. Not together with `password`.
    password_env: str | None = None
    vhosts: list[str] | None = None  # default: every vhost the user can see
    queues: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    exclude: list[str] = Field(default_factory=list)
    page_size: int = Field(500, ge=1, le=500)
    # Queues one sample may list (all vhosts together). A broker listing more is refused as too_large
    # (collector down, last values kept) before the further pages are requested.
    max_queues: int = Field(10_000, ge=1, le=1_000_000)
    # Largest single answer (one page of queues, or one vhost's exchanges or bindings), decompressed.
    # Parsing holds the interpreter for up to ~0.1 s per MiB, so this bounds any stall too.
    max_response_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    ca_file: str | None = None  # private CA for an https management endpoint
    verify_tls: bool = True
    # Read the DLQs' messages (get-messages with requeue: sets their redelivered flag); off by default.
    dead_letters: DeadLetterSettings = Field(default_factory=DeadLetterSettings)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected the management API URL, e.g. http://rabbitmq:15672")
        if "@" in v.split("//", 1)[1].split("/", 1)[0]:
            # The URL appears in error messages and logs: credentials belong in username/password.
            raise ValueError("put the credentials in `username` and `password`, not in the URL")
        return v.rstrip("/")

    @field_validator("password_env")
    @classmethod
    def _password_env(cls, v: str | None) -> str | None:
        return check_env_name(v)

    @model_validator(mode="after")
    def _password_from_env(self, info: ValidationInfo) -> RabbitMQSettings:
        if self.password_env is not None:
            if "password" in self.model_fields_set:
                raise ValueError("password_env: set either password or password_env, not both")
            self.password = secret_from_env("password_env", self.password_env, info)
        return self


class RabbitMQCollector(Collector):
    broker = "rabbitmq"
    Settings = RabbitMQSettings

    def __init__(self, settings: RabbitMQSettings):
        super().__init__(settings)
        self.settings: RabbitMQSettings = settings
        self.selector = Selector(settings.queues, settings.exclude)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        # One thread: parsing and linking of one sample run in turn, off the event loop.
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {"type": s.type, "name": s.name, "url": s.url, "vhosts": s.vhosts or "all"}

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        # A session belongs to one event loop; `collectors test` and tests may run several loops in turn.
        if self._session is None or self._session.closed or self._session_loop is not loop:
            s = self.settings
            ctx: ssl.SSLContext | bool = True
            if s.url.startswith("https://"):
                ctx = ssl.create_default_context(cafile=s.ca_file) if s.verify_tls else False
            token = base64.b64encode(f"{s.username}:{s.password.get_secret_value()}".encode()).decode()
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Basic {token}"},
                timeout=aiohttp.ClientTimeout(total=s.timeout),
                connector=aiohttp.TCPConnector(limit=8, ssl=ctx),
            )
            self._session_loop = loop
        return self._session

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rabbitmq-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _get(self, path: str, sample: Sample, post: dict[str, Any] | None = None) -> bytes:
        """The body of one GET (or POST of `post` as JSON), at most max_response_bytes (decompressed);
        errors as CollectorError."""
        sample.api_calls += 1
        url = self.settings.url + path
        where = path.split("?", maxsplit=1)[0]
        cap = self.settings.max_response_bytes
        too_large = CollectorError("too_large", f"{where}: the answer is over max_response_bytes ({cap} bytes)")
        try:
            async with self._client().request("GET" if post is None else "POST", url, json=post) as resp:
                if resp.status in (401, 403):
                    raise CollectorError(
                        "unauthorized",
                        f"HTTP {resp.status} from {self.settings.url} (check username/password and the user's monitoring tag)",
                    )
                if resp.status == 404:
                    raise CollectorError("not_found", f"{where} not found")
                if resp.status == 429:
                    raise CollectorError("throttled", f"HTTP 429 from {self.settings.url}")
                if resp.status >= 400:
                    raise CollectorError("other", f"HTTP {resp.status} from {where}")
                if resp.content_type != "application/json":
                    raise CollectorError(
                        "bad_response", f"{where}: the answer is not JSON (is {self.settings.url} the management API?)"
                    )
                if resp.content_length is not None and resp.content_length > cap:
                    raise too_large
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > cap:
                        raise too_large
                return bytes(body)
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
            raise CollectorError("unreachable", f"{self.settings.url}: {exc.__class__.__name__}") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise CollectorError("timeout", f"{where}: no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise CollectorError("unreachable", f"{self.settings.url}: {exc.__class__.__name__}") from None

    async def _get_parsed(self, path: str, sample: Sample, parse: Callable[..., T], *args: Any) -> T:
        body = await self._get(path, sample)
        return await self._offload(parse, body, path.split("?", maxsplit=1)[0], *args)

    async def _list_queues(self, base: str, sample: Sample, listed: list[int]) -> list[QueueItem]:
        """All pages of one listing. `listed` is this sample's running count over every listing, so
        max_queues bounds the sample as a whole; pages beyond it are never requested."""
        s = self.settings
        max_pages = math.ceil(s.max_queues / s.page_size)

        def page(n: int) -> str:
            # An explicit sort: without one the pages follow an order that can change between
            # requests, and a listing can repeat some queues and miss others.
            return f"{base}?page={n}&page_size={s.page_size}&sort=name&columns={QUEUE_COLUMNS}"

        def take(items: list[QueueItem]) -> list[QueueItem]:
            listed[0] += len(items)
            if listed[0] > s.max_queues:
                raise CollectorError(
                    "too_large",
                    f"more than max_queues ({s.max_queues}) queues listed: raise max_queues or narrow `vhosts`",
                )
            return items

        async def fetch(n: int) -> list[QueueItem]:
            return take((await self._get_parsed(page(n), sample, parse_queue_page, s.page_size))[1])

        page_count, first = await self._get_parsed(page(1), sample, parse_queue_page, s.page_size)
        if page_count > max_pages:
            raise CollectorError(
                "too_large",
                f"{base} lists {page_count} pages of {s.page_size} queues, over "
                f"max_queues ({s.max_queues}): raise max_queues or narrow `vhosts`",
            )
        items = take(first)
        for rest in await _all(fetch(n) for n in range(2, page_count + 1)):
            items.extend(rest)
        return items

    async def sample(self) -> Sample:
        sample = Sample()
        listed = [0]
        if self.settings.vhosts is None:
            queues = await self._list_queues("/api/queues", sample, listed)
        else:

            async def one(vhost: str) -> list[QueueItem]:
                try:
                    return await self._list_queues(f"/api/queues/{quote(vhost, safe='')}", sample, listed)
                except CollectorError as exc:
                    if exc.reason != "not_found":
                        raise
                    sample.errors.append(CollectorError("not_found", f"vhost {vhost!r} not found"))
                    return []

            queues = [q for lst in await _all(one(v) for v in self.settings.vhosts) for q in lst]
            if len(sample.errors) == len(self.settings.vhosts):
                raise sample.errors[0]

        plan = await self._offload(plan_sample, queues, self.selector, sample)
        routing = await self._routing(plan.dead_letter_vhosts, sample)
        await self._offload(link_sample, plan, routing, sample, time.time())
        if self.settings.dead_letters.enabled:
            sample.dead_letters = await self._read_dead_letters(plan, sample)
        return sample

    async def _read_dead_letters(self, plan: Plan, sample: Sample) -> list[DeadLetterRead]:
        """At most max_per_queue messages of each non-empty classic DLQ, through get-messages with
        ack_requeue_true: each goes back where it was, with its redelivered flag set."""
        dl = self.settings.dead_letters
        reads = []
        for d in sample.dlqs:
            item = plan.by_vhost.get(d.namespace, {}).get(d.queue)
            if d.messages == 0:
                reads.append(DeadLetterRead(d.namespace, d.queue, complete=True))
                continue
            if item is not None and item.type not in (None, "classic"):
                # A quorum queue counts a requeue as a delivery (its delivery-limit could drop the
                # message); a stream has no get. Neither is read.
                sample.warnings.append(f"{d.namespace}/{d.queue}: a {item.type} queue: dead letters not read")
                continue
            path = f"/api/queues/{quote(d.namespace, safe='')}/{quote(d.queue, safe='')}/get"
            request = {
                "count": dl.max_per_queue,
                "ackmode": "ack_requeue_true",
                "encoding": "auto",
                "truncate": dl.max_body_bytes,
            }
            try:
                body = await self._get(path, sample, post=request)
                letters, skipped = await self._offload(parse_messages, body, d.queue, dl, time.time())
            except CollectorError as exc:
                sample.errors.append(CollectorError(exc.reason, f"dead letters of {d.queue[:200]!r}: {exc.message}"))
                continue
            if skipped:
                sample.errors.append(unreadable(d.queue, skipped))
            reads.append(DeadLetterRead(d.namespace, d.queue, letters, complete=len(letters) >= d.messages))
        return reads

    async def _routing(self, vhosts: set[str], sample: Sample) -> Routing:
        """Per vhost: its exchanges (name, type) and all its bindings."""

        async def one(vhost: str) -> tuple[str, tuple[list[ExchangeItem], list[BindingItem]]]:
            v = quote(vhost, safe="")
            exchanges = await self._get_parsed(
                f"/api/exchanges/{v}?columns=name,type", sample, parse_list, ExchangeItem
            )
            bindings = await self._get_parsed(
                f"/api/bindings/{v}?columns={BINDING_COLUMNS}", sample, parse_list, BindingItem
            )
            return vhost, (exchanges, bindings)

        return dict(await _all(one(v) for v in sorted(vhosts)))


async def _all(coros: Any) -> list[Any]:
    """Like gather, but the first failure cancels the calls still running (no work for a lost sample)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
