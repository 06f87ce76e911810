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
import json
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from syncwatch.collectors.base import (
    Collector,
    CollectorError,
    CollectorSettings,
    DlqDepth,
    QueueDepth,
    Sample,
    check_env_name,
    secret_from_env,
)
from syncwatch.collectors.deadletters import DeadLetter, DeadLetterRead, DeadLetterSettings, correlation_of, message_key
from syncwatch.collectors.selection import Selector

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

# AMQP carries routing and binding keys as short strings: 255 bytes is what a client can publish or
# bind with. Longer keys (the HTTP API accepts them) are not topic-matched: refused and counted.
MAX_TOPIC_KEY_BYTES = 255
# Topic-matching work per sample (one step = one routing-key word against one wildcard binding).
MAX_MATCH_STEPS = 1_000_000
# Exchange-to-exchange hops followed from a dead-letter exchange.
MAX_EXCHANGE_HOPS = 8


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


class TopicPattern:
    """An AMQP topic binding key (`*` one word, `#` zero or more) compiled for a linear match: the set of
    pattern positions reachable after each routing-key word is a bit mask, so a match costs one step per
    key word (O(pattern x key) at worst), never the exponential backtracking `#.#.#...` provokes."""

    __slots__ = ("advance", "final", "hash_mask", "star_mask", "start")

    def __init__(self, pattern: str):
        words: list[str] = []
        for w in pattern.split(".") if pattern else []:
            if not (w == "#" and words and words[-1] == "#"):  # `#.#` matches exactly what `#` matches
                words.append(w)
        self.hash_mask = self.star_mask = 0
        self.advance: dict[str, int] = {}  # literal word -> positions that word lets pass
        for i, w in enumerate(words):
            if w == "#":
                self.hash_mask |= 1 << i
            elif w == "*":
                self.star_mask |= 1 << i
            else:
                self.advance[w] = self.advance.get(w, 0) | 1 << i
        self.final = 1 << len(words)
        self.start = self._closure(1)

    def _closure(self, states: int) -> int:
        # A `#` may match no word: its position reaches the next one (no two `#` are adjacent).
        return states | ((states & self.hash_mask) << 1)

    def matches(self, key_words: list[str]) -> bool:
        states = self.start
        for w in key_words:
            states = self._closure(
                (states & self.hash_mask) | ((states & (self.star_mask | self.advance.get(w, 0))) << 1)
            )
            if not states:
                return False
        return bool(states & self.final)


def topic_words(key: str) -> list[str]:
    """Words of a routing key as RabbitMQ splits them: "" has none, "a." has two ("a" and "")."""
    return key.split(".") if key else []


def is_wildcard(binding_key: str) -> bool:
    return any(w in ("*", "#") for w in topic_words(binding_key))


# --- the management API's answers, type-checked --------------------------------------------------

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
T = TypeVar("T")
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


# --- dead-letter linking -------------------------------------------------------------------------


@dataclass
class _Linker:
    """One sample's dead-letter resolution over each vhost's exchanges and bindings, indexed once:
    exact keys by dict, wildcard topic bindings by TopicPattern, each (exchange, key) resolved once,
    and a step budget for the topic matching as a whole."""

    routing: dict[str, tuple[list[ExchangeItem], list[BindingItem]]]
    steps_left: int = MAX_MATCH_STEPS
    refused: list[CollectorError] = field(default_factory=list)
    exhausted: bool = False
    _index: dict[str, Any] = field(default_factory=dict)
    _patterns: dict[str, TopicPattern] = field(default_factory=dict)
    _cache: dict[tuple[str, str, str | None], set[str]] = field(default_factory=dict)
    _refused_bindings: set[tuple[str, str, str]] = field(default_factory=set)

    def _vhost(self, vhost: str) -> Any:
        if vhost not in self._index:
            exchanges, bindings = self.routing.get(vhost, ([], []))
            types = {e.name: e.type for e in exchanges}
            every: dict[str, list[tuple[str, str]]] = {}
            exact: dict[tuple[str, str], list[tuple[str, str]]] = {}
            wild: dict[str, list[tuple[str, tuple[str, str]]]] = {}
            for b in bindings:
                if b.source == "" or b.destination_type not in ("queue", "exchange"):
                    continue  # the default exchange routes by queue name (handled apart)
                dest = (b.destination_type, b.destination)
                every.setdefault(b.source, []).append(dest)
                if types.get(b.source) == "topic" and is_wildcard(b.routing_key):
                    wild.setdefault(b.source, []).append((b.routing_key, dest))
                else:
                    exact.setdefault((b.source, b.routing_key), []).append(dest)
            self._index[vhost] = (types, every, exact, wild)
        return self._index[vhost]

    def _topic(self, vhost: str, exchange: str, pattern: str, key_words: list[str]) -> bool:
        if len(pattern.encode()) > MAX_TOPIC_KEY_BYTES:
            if (vhost, exchange, pattern) not in self._refused_bindings:
                self._refused_bindings.add((vhost, exchange, pattern))
                self.refused.append(
                    CollectorError(
                        "too_large",
                        f"{vhost!r}/{exchange!r}: a binding key of "
                        f"{len(pattern.encode())} bytes (over {MAX_TOPIC_KEY_BYTES}) is not matched",
                    )
                )
            return False
        cost = len(key_words) + 1
        if cost > self.steps_left:
            self.exhausted = True
            return False
        self.steps_left -= cost
        compiled = self._patterns.get(pattern)
        if compiled is None:
            compiled = self._patterns[pattern] = TopicPattern(pattern)
        return compiled.matches(key_words)

    def resolve(self, vhost: str, exchange: str, key: str | None) -> tuple[set[str], str | None]:
        """(queues the dead letters reach, None or why that set may be incomplete: "key" when the routing
        key is too long to topic-match, "budget" when this sample's matching budget ran out)."""
        cached = self._cache.get((vhost, exchange, key))
        if cached is not None:
            return cached, None
        types, every, exact, wild = self._vhost(vhost)
        found: set[str] = set()
        problem: str | None = None
        key_words = topic_words(key) if key is not None else []
        seen: set[str] = set()
        todo = deque([(exchange, 0)])  # breadth first: each exchange is reached by its shortest path
        while todo:
            ex, hops = todo.popleft()
            if ex in seen or hops > MAX_EXCHANGE_HOPS or ex not in types:
                continue
            seen.add(ex)
            kind = types[ex]
            # Without a dead-letter routing key each message keeps its own: any binding may match.
            if key is None or kind in ("fanout", "headers", "x-consistent-hash"):
                dests = every.get(ex, [])
            else:
                dests = list(exact.get((ex, key), []))
                if kind == "topic" and wild.get(ex):
                    if len(key.encode()) > MAX_TOPIC_KEY_BYTES:
                        problem = problem or "key"
                    else:
                        dests.extend(dest for pattern, dest in wild[ex] if self._topic(vhost, ex, pattern, key_words))
                        if self.exhausted:
                            problem = "budget"
            for dest_type, dest in dests:
                if dest_type == "queue":
                    found.add(dest)
                else:
                    todo.append((dest, hops + 1))
        if problem is None:
            self._cache[(vhost, exchange, key)] = found
        return found, problem


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

        plan = await self._offload(self._plan, queues, sample)
        routing = await self._routing(plan.dead_letter_vhosts, sample)
        await self._offload(self._finish, plan, routing, sample, time.time())
        if self.settings.dead_letters.enabled:
            sample.dead_letters = await self._read_dead_letters(plan, sample)
        return sample

    async def _read_dead_letters(self, plan: _Plan, sample: Sample) -> list[DeadLetterRead]:
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
                sample.errors.append(_unreadable(d.queue, skipped))
            reads.append(DeadLetterRead(d.namespace, d.queue, letters, complete=len(letters) >= d.messages))
        return reads

    def _plan(self, queues: list[QueueItem], sample: Sample) -> _Plan:
        plan = _Plan()
        for q in queues:
            plan.by_vhost.setdefault(q.vhost, {})[q.name] = q
            if self.selector.matches(q.name):
                plan.selected.add((q.vhost, q.name))
            target = q.dead_letter_target()
            if target is not None:
                plan.targets[(q.vhost, q.name)] = target
        selected_names = {n for _, n in plan.selected}
        for name in self.selector.names:
            if name not in selected_names:
                sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))
        plan.dead_letter_vhosts = {vh for (vh, _), (exchange, _) in plan.targets.items() if exchange != ""}
        return plan

    def _finish(
        self,
        plan: _Plan,
        routing: dict[str, tuple[list[ExchangeItem], list[BindingItem]]],
        sample: Sample,
        now: float,
    ) -> None:
        """Link dead-letter queues to their sources and fill the sample (in the collector's thread)."""
        linker = _Linker(routing)
        dlq_sources: dict[tuple[str, str], set[str]] = {}
        unresolved = 0
        for (vhost, source), (exchange, key) in sorted(plan.targets.items()):
            if exchange == "":
                # The default exchange routes by queue name.
                dlqs = {key} if key is not None and key in plan.by_vhost.get(vhost, {}) else set()
                problem = None
            else:
                dlqs, problem = linker.resolve(vhost, exchange, key)
            if problem == "key":
                sample.errors.append(
                    CollectorError(
                        "too_large",
                        f"{vhost!r}/{source!r}: dead-letter routing key of "
                        f"{len((key or '').encode())} bytes (over {MAX_TOPIC_KEY_BYTES}) "
                        "is not matched against topic bindings",
                    )
                )
            elif problem == "budget":
                unresolved += 1
            elif not dlqs:
                sample.warnings.append(
                    f"{vhost}/{source}: dead-letter exchange {exchange!r} routes to no queue: its dead letters are dropped"
                )
            for dlq in dlqs:
                dlq_sources.setdefault((vhost, dlq), set()).add(source)
        sample.errors.extend(linker.refused)
        if unresolved:
            sample.errors.append(
                CollectorError(
                    "too_large",
                    f"topic matching stopped after {MAX_MATCH_STEPS} steps: "
                    f"the dead-letter queues of {unresolved} queue(s) may be missing",
                )
            )
        dlq_keys = {
            k
            for k, sources in dlq_sources.items()
            if k in plan.selected or any((k[0], s) in plan.selected for s in sources)
        }

        for vhost, name in sorted(plan.selected | dlq_keys):
            q = plan.by_vhost.get(vhost, {}).get(name)
            if q is None or q.messages_ready is None:
                # Declared an instant ago: the management stats have not caught up yet.
                sample.warnings.append(f"{vhost}/{name}: no message counts yet")
                continue
            ready, unacked = float(q.messages_ready), float(q.messages_unacknowledged or 0)
            if (vhost, name) in dlq_keys:
                sample.dlqs.append(DlqDepth(vhost, name, ready + unacked, dlq_sources[(vhost, name)]))
                continue
            head = q.head_message_timestamp
            age = max(0.0, now - head) if head is not None and ready > 0 else None
            consumers = float(q.consumers) if q.consumers is not None else None
            sample.queues.append(
                QueueDepth(vhost, name, ready, in_flight=unacked, oldest_message_age_seconds=age, consumers=consumers)
            )

    async def _routing(
        self, vhosts: set[str], sample: Sample
    ) -> dict[str, tuple[list[ExchangeItem], list[BindingItem]]]:
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


def _unreadable(queue: str, n: int) -> CollectorError:
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


async def _all(coros: Any) -> list[Any]:
    """Like gather, but the first failure cancels the calls still running (no work for a lost sample)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


@dataclass
class _Plan:
    by_vhost: dict[str, dict[str, QueueItem]] = field(default_factory=dict)
    selected: set[tuple[str, str]] = field(default_factory=set)
    targets: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    dead_letter_vhosts: set[str] = field(default_factory=set)
