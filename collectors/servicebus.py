"""Azure Service Bus collector: runtime properties of queues and topic subscriptions through
azure-servicebus's ServiceBusAdministrationClient (the namespace's management endpoint, not Azure Monitor).

Every entity's dead-letter sub-queue `<entity>/$DeadLetterQueue` is its DLQ, and its transfer
dead-letter queue `<entity>/$Transfer/$DeadLetterQueue` holds what failed to auto-forward. Reading
runtime properties needs the Manage right: Azure answers 401 both for a refused key or token and for
one without that right (its detail names the missing claims); both are `unauthorized`, saying which.
The SDK is blocking: it runs in this collector's own threads, with per-request timeouts. Answers are
read up to a size cap, listings up to `max_queues` entities, and every entity is type-checked.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    DeserializationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

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
from syncwatch.collectors.selection import Selector

DLQ_SUFFIX = "/$DeadLetterQueue"
TRANSFER_DLQ_SUFFIX = "/$Transfer/$DeadLetterQueue"
# Largest answer the SDK is let parse (a page of 100 queue descriptions is ~250 KB).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
PAGE_SIZE = 100  # entities per listing page, as the SDK asks for them


class ServiceBusSettings(CollectorSettings):
    # Either a connection string (shared access key with Manage rights)...
    connection_string: SecretStr | None = None
    # (or the name of an environment variable holding it, e.g. filled from a Kubernetes Secret;
    # read when the config is validated)...
    connection_string_env: str | None = None
    # ...or the namespace host, e.g. myns.servicebus.windows.net, with an Azure AD credential:
    # DefaultAzureCredential (environment, workload / managed identity, Azure CLI), or a service principal.
    namespace: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    queues: list[str] = Field(default_factory=lambda: ["*"])
    # Subscriptions as `topic/subscription`, names or patterns, e.g. `orders-events/*`.
    subscriptions: list[str] = Field(default_factory=lambda: ["*/*"])
    exclude: list[str] = Field(default_factory=list)
    ca_file: str | None = None  # a private CA (e.g. a TLS-inspecting proxy in front of the namespace)
    concurrency: int = Field(8, ge=1, le=64)
    # Entities one listing (queues, topics, or one topic's subscriptions) may return. A longer one, or one
    # that keeps paging, is refused as too_large: raise this, or select by name.
    max_queues: int = Field(10_000, ge=1, le=1_000_000)

    @field_validator("connection_string_env")
    @classmethod
    def _connection_string_env(cls, v: str | None) -> str | None:
        return check_env_name(v)

    @model_validator(mode="after")
    def _one_credential(self, info: ValidationInfo) -> ServiceBusSettings:
        if self.connection_string_env is not None:
            if self.connection_string is not None:
                raise ValueError(
                    "connection_string_env: set either connection_string or connection_string_env, not both"
                )
            if self.namespace is not None:
                raise ValueError(
                    "connection_string_env: set either connection_string_env or namespace (with an Azure AD credential)"
                )
            self.connection_string = secret_from_env("connection_string_env", self.connection_string_env, info)
        if (self.connection_string is None) == (self.namespace is None):
            raise ValueError(
                "connection_string: set either connection_string (or connection_string_env) or namespace "
                "(with an Azure AD credential)"
            )
        if self.client_secret is not None and not (self.tenant_id and self.client_id):
            raise ValueError("client_secret: a service principal needs tenant_id and client_id too")
        return self


def classify(exc: BaseException) -> CollectorError:
    if isinstance(exc, CollectorError):
        return exc
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return CollectorError("timeout", str(exc).splitlines()[0][:200])
    if isinstance(exc, ClientAuthenticationError) or (
        isinstance(exc, HttpResponseError) and exc.status_code in (401, 403)
    ):
        status = getattr(exc, "status_code", None)
        # Azure's detail for a credential without the right: "Manage,EntityRead claims required for this
        # operation" (SAS) or "claim is empty or token is invalid" (Azure AD without a role).
        detail = str(exc)[:4096].lower()  # the SDK appends the answer: <Error><Detail>…
        if "claims required" in detail or "claim is empty" in detail or status == 403:
            return CollectorError(
                "unauthorized",
                f"HTTP {status}: the credential lacks the Manage right reading runtime "
                "properties needs (a Listen/Send key or a Data Receiver role is not enough)",
            )
        return CollectorError(
            "unauthorized",
            f"HTTP {status}: the key or token was refused (wrong SharedAccessKey, "
            "expired token, or a credential for another namespace)",
        )
    if isinstance(exc, (DeserializationError, DecodeError)):
        return CollectorError(
            "bad_response", f"the answer is not a Service Bus entity description ({type(exc).__name__})"
        )
    if isinstance(exc, ResourceNotFoundError):
        return CollectorError("not_found", str(exc).splitlines()[0][:200])
    if isinstance(exc, HttpResponseError):
        if exc.status_code == 429 or (exc.status_code == 503 and "busy" in str(exc).lower()):
            return CollectorError("throttled", f"HTTP {exc.status_code}")
        return CollectorError("other", f"HTTP {exc.status_code}")
    if isinstance(exc, ServiceResponseError):
        text = str(exc).lower()
        return CollectorError(
            "timeout" if "timed out" in text or "timeout" in text else "unreachable", str(exc).splitlines()[0][:200]
        )
    if isinstance(exc, ServiceRequestError):
        text = str(exc).lower()
        return CollectorError("timeout" if "timed out" in text else "unreachable", str(exc).splitlines()[0][:200])
    name = type(exc).__name__
    if name in ("CredentialUnavailableError",):
        return CollectorError("unauthorized", f"no Azure AD credential available: {exc}")
    return CollectorError("other", f"{name}: {exc}")


class ServiceBusCollector(Collector):
    broker = "servicebus"
    Settings = ServiceBusSettings

    def __init__(self, settings: ServiceBusSettings):
        super().__init__(settings)
        self.settings: ServiceBusSettings = settings
        self.queue_selector = Selector(settings.queues, settings.exclude)
        self.sub_selector = Selector(settings.subscriptions, settings.exclude)
        self.topic_selector = Selector([p.split("/", 1)[0] for p in settings.subscriptions])
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix=f"sb-{settings.name}")
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None
        self._client_lock = threading.Lock()  # the first cycle's threads must not each build a client

    def describe(self) -> dict[str, Any]:
        s = self.settings
        ns = s.namespace
        if s.connection_string is not None:
            ns = _endpoint_of(s.connection_string.get_secret_value())
        auth = "Azure AD"
        if s.connection_string is not None:
            auth = (
                f"connection string from ${s.connection_string_env}" if s.connection_string_env else "connection string"
            )
        return {"type": s.type, "name": s.name, "namespace": ns, "auth": auth}

    def _make_client(self) -> Any:
        from azure.servicebus.management import ServiceBusAdministrationClient

        s = self.settings
        kwargs: dict[str, Any] = {"connection_timeout": s.timeout, "read_timeout": s.timeout, "retry_total": 0}
        if s.ca_file:
            kwargs["connection_verify"] = s.ca_file
        kwargs["transport"] = CappedTransport(**kwargs)
        if s.connection_string is not None:
            return ServiceBusAdministrationClient.from_connection_string(
                s.connection_string.get_secret_value(), **kwargs
            )
        from azure.identity import ClientSecretCredential, DefaultAzureCredential

        if s.client_secret is not None:
            credential = ClientSecretCredential(s.tenant_id, s.client_id, s.client_secret.get_secret_value())
        else:
            credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        return ServiceBusAdministrationClient(s.namespace, credential, **kwargs)

    @property
    def namespace(self) -> str:
        return self._client.fully_qualified_namespace.rstrip("/") if self._client else (self.settings.namespace or "")

    async def _call(self, sample: Sample, fn: Callable[[Any], tuple[Any, int]]) -> Any:
        """Run `fn(client)` in a thread; it returns (result, number of HTTP requests it made)."""
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:  # a semaphore belongs to one event loop
            self._sem, self._sem_loop = asyncio.Semaphore(self.settings.concurrency), loop
        async with self._sem:

            def run() -> tuple[Any, int]:
                with self._client_lock:
                    if self._client is None:
                        self._client = self._make_client()
                return fn(self._client)

            try:
                result, calls = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(self._pool, run), self.settings.timeout * 2 + 1
                )
            except TimeoutError:
                sample.api_calls += 1
                raise CollectorError("timeout", f"no answer within {self.settings.timeout:g}s") from None
            except Exception as exc:
                sample.api_calls += 1
                raise classify(exc) from None
            sample.api_calls += calls
            return result

    def _paged(self, pager: Any, kind: str) -> tuple[list[Any], int]:
        """Every entity of a listing, checked, at most max_queues of them: the thread stops paging there."""
        cap = self.settings.max_queues
        max_pages = 2 * math.ceil(cap / PAGE_SIZE) + 1  # pages may come back short: allow twice as many
        items, pages = [], 0
        for page in pager.by_page():
            pages += 1
            items.extend(check_entity(p, kind) for p in page)
            if len(items) > cap or pages > max_pages:
                raise CollectorError(
                    "too_large",
                    f"listing {kind}s: more than max_queues ({cap}) entities or "
                    f"{max_pages} pages: raise max_queues or select by name",
                )
        return items, max(pages, 1)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def sample(self) -> Sample:
        sample = Sample()
        queues: list[Any] = []
        if self.settings.queues:
            if self.queue_selector.needs_listing:
                listed = await self._call(sample, lambda c: self._paged(c.list_queues_runtime_properties(), "queue"))
                queues = [q for q in listed if self.queue_selector.matches(q.name)]
            else:

                async def one(name: str):
                    try:
                        return await self._call(
                            sample, lambda c: (check_entity(c.get_queue_runtime_properties(name), "queue"), 1)
                        )
                    except CollectorError as exc:
                        if exc.reason in ("bad_response", "too_large"):  # this queue's answer only
                            sample.errors.append(exc)
                            return None
                        if exc.reason != "not_found":
                            raise
                        sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))
                        return None

                queues = [
                    q for q in await asyncio.gather(*(one(n) for n in self.queue_selector.names)) if q is not None
                ]
                odd = [e for e in sample.errors if e.reason != "not_found"]
                if not queues and odd:  # every named queue answered oddly: the collector's failure
                    raise odd[0]
            for name in self.queue_selector.names:
                if self.queue_selector.needs_listing and not any(q.name == name for q in queues):
                    sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))

        subscriptions: list[tuple[str, Any]] = []
        if self.settings.subscriptions:
            topics = await self._call(sample, lambda c: self._paged(c.list_topics(), "topic"))
            wanted = [t.name for t in topics if self.topic_selector.matches(t.name)]
            lists = await asyncio.gather(
                *(
                    self._call(
                        sample, lambda c, t=t: self._paged(c.list_subscriptions_runtime_properties(t), "subscription")
                    )
                    for t in wanted
                )
            )
            for topic, subs in zip(wanted, lists, strict=False):
                subscriptions.extend((topic, s) for s in subs if self.sub_selector.matches(f"{topic}/{s.name}"))

        ns = self.namespace
        entities = [(q.name, q, q.scheduled_message_count) for q in queues]
        entities += [(f"{t}/Subscriptions/{s.name}", s, None) for t, s in subscriptions]
        for path, props, scheduled in entities:
            sample.queues.append(
                QueueDepth(
                    ns,
                    path,
                    float(props.active_message_count or 0),
                    delayed=None if scheduled is None else float(scheduled),
                )
            )
            sample.dlqs.append(DlqDepth(ns, path + DLQ_SUFFIX, float(props.dead_letter_message_count or 0), {path}))
            sample.dlqs.append(
                DlqDepth(ns, path + TRANSFER_DLQ_SUFFIX, float(props.transfer_dead_letter_message_count or 0), {path})
            )
        return sample


class CappedTransport(RequestsTransport):
    """Reads each answer up to MAX_RESPONSE_BYTES (decompressed) and refuses a longer one unparsed, so a
    misbehaving endpoint or proxy can neither fill the memory nor hold the interpreter parsing XML."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        raw = response.internal_response
        body = bytearray()
        try:
            for chunk in raw.iter_content(1 << 16):
                body += chunk
                if len(body) > MAX_RESPONSE_BYTES:
                    raise CollectorError("too_large", f"an answer over {MAX_RESPONSE_BYTES} bytes")
        except requests.RequestException as err:  # cut or timed out mid-body: classify() reads which
            raise ServiceResponseError(err, error=err) from None
        finally:
            if len(body) > MAX_RESPONSE_BYTES:
                raw.close()
        raw._content, raw._content_consumed = bytes(body), True
        return response


def _count(value: Any, what: str) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise CollectorError("bad_response", f"{what} is not a count")


def check_entity(props: Any, kind: str) -> Any:
    """An entity's runtime properties as the SDK built them from the XML: a name and counts >= 0."""
    name = getattr(props, "name", None)
    if not isinstance(name, str) or not name or "/" in name:
        raise CollectorError("bad_response", f"a {kind} without a usable name")
    fields = {
        "queue": [
            "active_message_count",
            "dead_letter_message_count",
            "transfer_dead_letter_message_count",
            "scheduled_message_count",
        ],
        "subscription": ["active_message_count", "dead_letter_message_count", "transfer_dead_letter_message_count"],
    }
    for f in fields.get(kind, []):
        _count(getattr(props, f, None), f"{kind} {name[:200]!r}: {f}")
    return props


def _endpoint_of(conn_str: str) -> str:
    for part in conn_str.split(";"):
        key, _, val = part.partition("=")
        if key.strip().lower() == "endpoint":
            return val.split("//", 1)[-1].rstrip("/")
    return "?"
