"""RabbitMQ collector: the management HTTP API (`/api/queues`, paged), read with aiohttp.

Dead-letter linking: a queue's dead-letter exchange comes from its arguments
(`x-dead-letter-exchange`, `x-dead-letter-routing-key`), which win over its effective policy
(`dead-letter-exchange`, `dead-letter-routing-key`). Its DLQs are the queues bound to that exchange
for that routing key (following exchange-to-exchange bindings). Classic and quorum queues alike.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from .base import (Collector, CollectorError, CollectorSettings, DlqDepth, QueueDepth, Sample, check_env_name,
                   secret_from_env)
from .selection import Selector

QUEUE_COLUMNS = ",".join((
    "name", "vhost", "type", "messages_ready", "messages_unacknowledged", "consumers",
    "head_message_timestamp", "arguments", "effective_policy_definition",
))


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
    ca_file: str | None = None  # private CA for an https management endpoint
    verify_tls: bool = True

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
    def _password_from_env(self, info: ValidationInfo) -> "RabbitMQSettings":
        if self.password_env is not None:
            if "password" in self.model_fields_set:
                raise ValueError("password_env: set either password or password_env, not both")
            self.password = secret_from_env("password_env", self.password_env, info)
        return self


def _topic_match(pattern: str, key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more words."""
    pw, kw = pattern.split("."), key.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(pw):
            return j == len(kw)
        if pw[i] == "#":
            return any(go(i + 1, k) for k in range(j, len(kw) + 1))
        return j < len(kw) and (pw[i] == "*" or pw[i] == kw[j]) and go(i + 1, j + 1)

    return go(0, 0)


def dead_letter_target(queue: dict[str, Any]) -> tuple[str, str | None] | None:
    """(exchange, routing key or None) the queue dead-letters to, or None."""
    args = queue.get("arguments") or {}
    policy = queue.get("effective_policy_definition") or {}
    if not isinstance(policy, dict):  # the API answers [] when no policy applies
        policy = {}
    if "x-dead-letter-exchange" in args:
        return args["x-dead-letter-exchange"], args.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
    if "dead-letter-exchange" in policy:
        return policy["dead-letter-exchange"], args.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
    return None


class RabbitMQCollector(Collector):
    broker = "rabbitmq"
    Settings = RabbitMQSettings

    def __init__(self, settings: RabbitMQSettings):
        super().__init__(settings)
        self.settings: RabbitMQSettings = settings
        self.selector = Selector(settings.queues, settings.exclude)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self, path: str, sample: Sample) -> Any:
        sample.api_calls += 1
        url = self.settings.url + path
        try:
            async with self._client().get(url) as resp:
                if resp.status in (401, 403):
                    raise CollectorError("unauthorized", f"HTTP {resp.status} from {self.settings.url} (check username/password and the user's monitoring tag)")
                if resp.status == 404:
                    raise CollectorError("not_found", f"{path.split('?')[0]} not found")
                if resp.status == 429:
                    raise CollectorError("throttled", f"HTTP 429 from {self.settings.url}")
                if resp.status >= 400:
                    raise CollectorError("other", f"HTTP {resp.status} from {path.split('?')[0]}")
                return await resp.json()
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
            raise CollectorError("unreachable", f"{self.settings.url}: {exc.__class__.__name__}") from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise CollectorError("timeout", f"{path.split('?')[0]}: no answer within {self.settings.timeout:g}s") from None
        except aiohttp.ContentTypeError:
            raise CollectorError("other", f"{path.split('?')[0]}: answer is not JSON (is {self.settings.url} the management API?)") from None
        except aiohttp.ClientError as exc:
            raise CollectorError("unreachable", f"{self.settings.url}: {exc.__class__.__name__}") from None

    async def _list_queues(self, base: str, sample: Sample) -> list[dict[str, Any]]:
        def page(n: int) -> str:
            # An explicit sort: without one the pages follow an order that can change between
            # requests, and a listing can repeat some queues and miss others.
            return f"{base}?page={n}&page_size={self.settings.page_size}&sort=name&columns={QUEUE_COLUMNS}"

        first = await self._get(page(1), sample)
        items = list(first.get("items", []))
        rest = await asyncio.gather(*(self._get(page(n), sample) for n in range(2, first.get("page_count", 1) + 1)))
        for p in rest:
            items.extend(p.get("items", []))
        return items

    async def sample(self) -> Sample:
        sample = Sample()
        now = time.time()
        if self.settings.vhosts is None:
            queues = await self._list_queues("/api/queues", sample)
        else:
            async def one(vhost: str) -> list[dict[str, Any]]:
                try:
                    return await self._list_queues(f"/api/queues/{quote(vhost, safe='')}", sample)
                except CollectorError as exc:
                    if exc.reason != "not_found":
                        raise
                    sample.errors.append(CollectorError("not_found", f"vhost {vhost!r} not found"))
                    return []

            lists = await asyncio.gather(*(one(v) for v in self.settings.vhosts))
            queues = [q for lst in lists for q in lst]
            if len(sample.errors) == len(self.settings.vhosts):
                raise sample.errors[0]

        by_vhost: dict[str, dict[str, dict[str, Any]]] = {}
        for q in queues:
            by_vhost.setdefault(q["vhost"], {})[q["name"]] = q
        selected = {(q["vhost"], q["name"]) for q in queues if self.selector.matches(q["name"])}
        for name in self.selector.names:
            if not any(n == name for _, n in selected):
                sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))

        # Dead-letter links over every listed queue, so a selected DLQ also knows its sources.
        targets = {(q["vhost"], q["name"]): t for q in queues if (t := dead_letter_target(q)) is not None}
        routing = await self._routing({vh for vh, _ in targets}, sample)
        dlq_sources: dict[tuple[str, str], set[str]] = {}
        for (vhost, source), (exchange, key) in targets.items():
            dlqs = self._resolve(vhost, exchange, key, routing.get(vhost), by_vhost.get(vhost, {}))
            if not dlqs:
                sample.warnings.append(f"{vhost}/{source}: dead-letter exchange {exchange!r} routes to no queue: its dead letters are dropped")
            for dlq in dlqs:
                dlq_sources.setdefault((vhost, dlq), set()).add(source)
        dlq_keys = {k for k, sources in dlq_sources.items()
                    if k in selected or any((k[0], s) in selected for s in sources)}

        for vhost, name in sorted(selected | dlq_keys):
            q = by_vhost.get(vhost, {}).get(name)
            if q is None or q.get("messages_ready") is None:
                # Declared an instant ago: the management stats have not caught up yet.
                sample.warnings.append(f"{vhost}/{name}: no message counts yet")
                continue
            ready, unacked = float(q["messages_ready"]), float(q.get("messages_unacknowledged") or 0)
            if (vhost, name) in dlq_keys:
                sample.dlqs.append(DlqDepth(vhost, name, ready + unacked, dlq_sources[(vhost, name)]))
                continue
            head = q.get("head_message_timestamp")
            age = max(0.0, now - float(head)) if isinstance(head, (int, float)) and ready > 0 else None
            consumers = q.get("consumers")
            sample.queues.append(QueueDepth(vhost, name, ready, in_flight=unacked, oldest_message_age_seconds=age,
                                            consumers=float(consumers) if isinstance(consumers, int) else None))
        return sample

    async def _routing(self, vhosts: set[str], sample: Sample) -> dict[str, tuple[dict, list]]:
        """Per vhost: exchange name -> type, and all bindings."""
        async def one(vhost: str):
            v = quote(vhost, safe="")
            exchanges, bindings = await asyncio.gather(
                self._get(f"/api/exchanges/{v}?columns=name,type", sample),
                self._get(f"/api/bindings/{v}", sample),
            )
            return vhost, ({e["name"]: e["type"] for e in exchanges}, bindings)

        return dict(await asyncio.gather(*(one(v) for v in sorted(vhosts))))

    @staticmethod
    def _resolve(vhost: str, exchange: str, key: str | None, routing: tuple[dict, list] | None,
                 queues: dict[str, Any]) -> set[str]:
        if exchange == "":
            # The default exchange routes by queue name.
            return {key} if key is not None and key in queues else set()
        if routing is None:
            return set()
        types, bindings = routing
        found: set[str] = set()
        seen: set[str] = set()

        def walk(ex: str, depth: int) -> None:
            if ex in seen or depth > 8 or ex not in types:
                return
            seen.add(ex)
            kind = types[ex]
            for b in bindings:
                if b.get("source") != ex:
                    continue
                bk = b.get("routing_key", "")
                # Without a dead-letter routing key each message keeps its own: any binding may match.
                if key is None or kind in ("fanout", "headers", "x-consistent-hash"):
                    hit = True
                elif kind == "topic":
                    hit = _topic_match(bk, key)
                else:
                    hit = bk == key
                if not hit:
                    continue
                if b.get("destination_type") == "queue":
                    found.add(b["destination"])
                elif b.get("destination_type") == "exchange":
                    walk(b["destination"], depth + 1)

        walk(exchange, 0)
        return found

