"""Dead-letter linking for the RabbitMQ collector: which queues a queue's dead letters reach.

A queue's dead-letter exchange and key are followed through the vhost's bindings (exchange to
exchange too), with a step budget on topic matching so a broker's data cannot stall a sample.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from syncwatch.collectors.base import CollectorError, DlqDepth, QueueDepth, Sample
from syncwatch.collectors.rabbitmq_api import BindingItem, ExchangeItem, QueueItem
from syncwatch.collectors.selection import Selector
from syncwatch.collectors.topic_match import MAX_TOPIC_KEY_BYTES, TopicPattern, is_wildcard, topic_words

# Topic-matching work per sample (one step = one routing-key word against one wildcard binding).
MAX_MATCH_STEPS = 1_000_000
# Exchange-to-exchange hops followed from a dead-letter exchange.
MAX_EXCHANGE_HOPS = 8

Routing = dict[str, tuple[list[ExchangeItem], list[BindingItem]]]


@dataclass
class Plan:
    """One sample's queues by vhost, the selected ones and each queue's dead-letter target."""

    by_vhost: dict[str, dict[str, QueueItem]] = field(default_factory=dict)
    selected: set[tuple[str, str]] = field(default_factory=set)
    targets: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)
    dead_letter_vhosts: set[str] = field(default_factory=set)


@dataclass
class Linker:
    """One sample's dead-letter resolution over each vhost's exchanges and bindings, indexed once:
    exact keys by dict, wildcard topic bindings by TopicPattern, each (exchange, key) resolved once,
    and a step budget for the topic matching as a whole."""

    routing: Routing
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


def plan_sample(queues: list[QueueItem], selector: Selector, sample: Sample) -> Plan:
    plan = Plan()
    for q in queues:
        plan.by_vhost.setdefault(q.vhost, {})[q.name] = q
        if selector.matches(q.name):
            plan.selected.add((q.vhost, q.name))
        target = q.dead_letter_target()
        if target is not None:
            plan.targets[(q.vhost, q.name)] = target
    selected_names = {n for _, n in plan.selected}
    for name in selector.names:
        if name not in selected_names:
            sample.errors.append(CollectorError("not_found", f"queue {name!r} not found"))
    plan.dead_letter_vhosts = {vh for (vh, _), (exchange, _) in plan.targets.items() if exchange != ""}
    return plan


def link_sample(
    plan: Plan,
    routing: Routing,
    sample: Sample,
    now: float,
) -> None:
    """Link dead-letter queues to their sources and fill the sample (in the collector's thread)."""
    linker = Linker(routing)
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
