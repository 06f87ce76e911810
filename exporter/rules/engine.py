"""Compiled mapping rules: a span without syncwatch attributes becomes ledger events.

The engine picks the first matching rule per span (conditions.py compiles them, events.py builds
the events) and stitches spans that carry no correlation ID to the trace that taught one."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from syncwatch.config.rules import RulesConfig
from syncwatch.intake.ids import correlation_problem
from syncwatch.ledger.records import Event
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_NAMES, STAGE_SOURCE
from syncwatch.rules.conditions import (
    ALIASES,
    MAX_VALUE_LENGTH,
    Rule,
    Values,
    When,
    compile_rule,
    text_of,
)
from syncwatch.rules.events import (
    CODE,
    DEST_NAME,
    ERROR,
    EVENT_KEYS,
    MESSAGE_ID,
    PEER,
    RESEND,
    SERVER,
    URL,
    span_events,
)
from syncwatch.rules.metrics import RulesMetrics
from syncwatch.rules.stitch import Pending, StitchIndex

_new = tuple.__new__  # records built without NamedTuple's keyword handling (the hot path's way, see ledger.records)

# Re-exported: settings validates rules with compile_rule from here.
__all__ = ["Decision", "RuleEngine", "build_engine", "compile_rule"]


@dataclass
class Decision:
    """What `rules test` prints for a span."""

    span: str
    name: str
    rule: str | None
    flow: str | None = None
    stages: list[str] = field(default_factory=list)
    corr: str | None = None
    via: str = ""


_STAGE_TEXT = {v: k for k, v in STAGE_NAMES.items()}
# A rule decision: the rule (None: no rule matches), the stages, whether a stage is not the source,
# and the keys (a bit per key index) the span's events and stitching read.
Decided = tuple[Rule | None, tuple[int, ...], bool, int]
_NO_RULE: Decided = (None, (), False, 0)


class Reads(NamedTuple):
    """What the engine reads of spans with one set of attribute names, as (key index, the name the
    span has it under): the keys conditions read (always), the rest (as a decision needs them),
    and a bit per condition key present (part of the decision signature)."""

    match: tuple[tuple[int, str], ...]
    rest: tuple[tuple[int, str], ...]
    mask: int


MAX_DECISIONS = 4096  # remembered rule decisions (per distinct set of values the conditions read)


class RuleEngine:
    """Runs on the ledger writer thread (never the event loop), one extract call at a time."""

    def __init__(
        self,
        cfg: RulesConfig,
        max_correlation_id_length: int = 256,
        metrics: RulesMetrics | None = None,
        explain: bool = False,
    ):
        self.rules = [compile_rule(name, rule) for name, rule in cfg.map.items()]
        # Attribute keys and conditions, interned: each is read / evaluated at most once per span.
        self._key_ids: dict[str, int] = {k: i for i, k in enumerate(EVENT_KEYS)}
        self._check_ids: dict[tuple[int, str], int] = {}
        self._checks: list[tuple[int, Values]] = []
        for rule in self.rules:
            for w in (*rule.whens, *rule.confirm, *rule.fail):
                self._intern(w)
            rule.correlation_ids = tuple(
                (self._key_ids.setdefault(key, len(self._key_ids)), rx, group) for key, rx, group in rule.correlation
            )
        self._keys = list(self._key_ids)
        # Each key with the older names it may appear under: the first one a span has is read.
        self._names = [(k, *ALIASES.get(k, ())) for k in self._keys]
        self._match_keys = frozenset(ki for ki, _ in self._checks)  # keys conditions read
        self._rest_mask = sum(1 << ki for ki in range(len(self._keys)) if ki not in self._match_keys)
        whens = [w for r in self.rules for w in (*r.whens, *r.confirm, *r.fail)]
        self._sig_name = any(w.names is not None or w.name_rx is not None for w in whens)
        self._sig_status = any(w.status is not None for w in whens)
        self._sig_service = any(w.services is not None for w in whens)
        self._sig_extra = self._sig_name or self._sig_status or self._sig_service
        self._cacheable = not any(w.res for w in whens)
        self._decisions: dict[tuple, Decided] = {}
        # Candidate rules per span kind (0-5), in configured order.
        self._by_kind = [[r for r in self.rules if r.kinds is None or k in r.kinds] for k in range(6)]
        self.index = StitchIndex(cfg.stitch.max_entries, cfg.stitch.max_pending_spans, cfg.stitch.window)
        self.max_corr = max_correlation_id_length
        self.metrics = metrics
        self._matches: dict[str, int] = {}
        self._failed: OrderedDict[tuple[str, str | None, str], set[bytes]] = OrderedDict()
        self._max_failed = cfg.stitch.max_entries
        self.explain: dict[str, Decision] | None = {} if explain else None

    def _intern(self, w: When) -> None:
        ids = []
        for key, spec, matcher in w.attrs:
            ki = self._key_ids.setdefault(key, len(self._key_ids))
            ci = self._check_ids.get((ki, spec))
            if ci is None:
                ci = self._check_ids[(ki, spec)] = len(self._checks)
                self._checks.append((ki, matcher))
            ids.append(ci)
        w.check_ids = tuple(ids)

    def names_read(self) -> set[str]:
        """Every attribute name the rules may read, of spans and resources (with older names)."""
        names = {name for options in self._names for name in options}
        for rule in self.rules:
            for w in (*rule.whens, *rule.confirm, *rule.fail):
                for key, _ in w.res:
                    names.update((key, *ALIASES.get(key, ())))
        return names

    # ---- per request --------------------------------------------------------------------------
    def begin(self, now: float) -> None:
        self.index.expire(now)

    def end(self, out: Any) -> None:
        """Count what the index dropped (a dropped waiting span is an uncorrelated span of a flow)."""
        ev = self.index.take_evicted()
        out.uncorrelated += len(ev.pending_age) + len(ev.pending_size)
        m = self.metrics
        if m is None:
            self._matches.clear()
            return
        for rule, n in self._matches.items():
            m.matches.labels(rule).inc(n)
        self._matches.clear()
        for index, reason, n in (
            ("learned", "age", ev.learned_age),
            ("learned", "size", ev.learned_size),
            ("pending", "age", len(ev.pending_age)),
            ("pending", "size", len(ev.pending_size)),
        ):
            if n:
                m.stitch_evictions.labels(index, reason).inc(n)
        m.stitch_entries.labels("learned").set(self.index.learned_size)
        m.stitch_entries.labels("pending").set(self.index.pending_size)

    def learn(self, trace_id: bytes, corr: Any, now: float, out: Any) -> None:
        """A span that carries its own ID (explicit attributes) teaches its trace."""
        self._release(self.index.learn((trace_id,), text_of(corr), now), out)

    def drain(self, out: Any) -> list[Pending]:
        left = self.index.drain()
        out.uncorrelated += len(left)
        return left

    # ---- per span -----------------------------------------------------------------------------
    def reads(self, present: frozenset[str]) -> Reads:
        """What `span` reads of spans whose attribute names are `present` (each key under the
        first of its names the span has)."""
        match: list[tuple[int, str]] = []
        rest: list[tuple[int, str]] = []
        mask = 0
        for ki, names in enumerate(self._names):
            name = next((n for n in names if n in present), None)
            if name is None:
                continue
            if ki in self._match_keys:
                mask |= 1 << ki
                match.append((ki, name))
            else:
                rest.append((ki, name))
        return Reads(tuple(match), tuple(rest), mask)

    def span(
        self, span: Any, attrs: Any, reads: Reads, res_attrs: Any, service: str, corr: Any, received: float, out: Any
    ) -> None:
        """A span without syncwatch.stage: map it by the first rule that matches, or count it.
        `attrs` and `res_attrs` are the span's and its resource's attributes (intake.attributes);
        `reads` is `reads()` of this span's attribute names."""
        vals: list[Any] = [None] * len(self._keys)
        parts: list[Any] = [reads.mask, span.kind]
        for ki, name in reads.match:
            vals[ki] = value = attrs[name]
            if value.__class__ is str:
                parts.append(value[:MAX_VALUE_LENGTH])
            else:
                # True == 1 in a tuple, but conditions compare "true" and "1": keep them apart.
                parts.append(text_of(value) if value.__class__ is bool else value)
        if self._cacheable:
            # The decision depends only on the values the conditions read: remember it per value set.
            if self._sig_extra:
                if self._sig_name:
                    parts.append(span.name[:MAX_VALUE_LENGTH])
                if self._sig_status:
                    parts.append(span.status.code)
                if self._sig_service:
                    parts.append(service)
            sig = tuple(parts)
            decided = self._decisions.get(sig)
            if decided is None:
                decided = self._decide(span, vals, res_attrs, service)
                if len(self._decisions) >= MAX_DECISIONS:
                    self._decisions.clear()
                self._decisions[sig] = decided
        else:
            decided = self._decide(span, vals, res_attrs, service)
        rule, stages, closes, need = decided
        if rule is None:
            if corr is not None:
                out.correlated += 1
                self._release(self.index.learn((span.trace_id,), text_of(corr), received), out)
            else:
                out.unrelated += 1
            return
        matches = self._matches
        matches[rule.name] = matches.get(rule.name, 0) + 1
        if need & self._rest_mask:
            for ki, name in reads.rest:  # the keys no condition reads, if this rule's events need them
                if need >> ki & 1:
                    vals[ki] = attrs[name]
        own = None
        for ki, rx, group in rule.correlation_ids:  # the first of the rule's sources the span has
            value = vals[ki]
            if value is not None:
                if rx is None:
                    own = value
                    break
                m = rx.search(text_of(value)[:MAX_VALUE_LENGTH])
                if m is not None and m.group(group):
                    own = m.group(group)
                    break
        if own is None:
            own = corr
        trace_id = span.trace_id
        msg = vals[MESSAGE_ID]
        if msg is None and not span.links:
            key_tuple: tuple[Hashable, ...] = (trace_id,)
        else:
            keys: list[Hashable] = [trace_id]
            if msg is not None:
                keys.append(("m", text_of(msg)[:MAX_VALUE_LENGTH]))
            keys.extend(link.trace_id for link in span.links if link.trace_id)
            key_tuple = tuple(keys)
        stitched = own is None
        if stitched:
            own = self.index.lookup(key_tuple)
        elif own.__class__ is not str:
            own = text_of(own)
        events = span_events(rule, stages, closes, span, trace_id, vals, service, received, own, out)
        if events is None:
            return
        if self.explain is not None:
            decision = self.explain[span.span_id.hex()] = Decision(
                span.span_id.hex(), span.name, rule.name, rule.flow, [_STAGE_TEXT[s] for s in stages]
            )
            if own is not None:
                decision.via = "stitched" if stitched else "attribute"
        else:
            decision = None
        if own is None:
            self.index.hold(Pending(key_tuple, (rule, events, decision), received))
            return
        self._emit(rule, events, own, out, decision)
        if not stitched or len(key_tuple) > 1:  # a span stitched by its trace alone teaches nothing new
            released = self.index.learn(key_tuple, own, received)
            if released:
                self._release(released, out)

    def _decide(self, span: Any, vals: list[Any], res_attrs: Any, service: str) -> Decided:
        """The first rule whose conditions hold, the stages the span becomes, and whether one of
        them closes (is not the source)."""
        results: list[bool | None] = [None] * len(self._checks)
        holds = self._holds
        kind = span.kind
        for rule in self._by_kind[kind] if 0 <= kind < 6 else self.rules:
            for w in rule.whens:
                if not holds(w, span, vals, results, res_attrs, service):
                    break
            else:
                stages: list[int] = [] if rule.stage is None else [rule.stage]
                if rule.confirm and any(holds(w, span, vals, results, res_attrs, service) for w in rule.confirm):
                    stages.append(STAGE_CONFIRM)
                elif rule.fail and any(holds(w, span, vals, results, res_attrs, service) for w in rule.fail):
                    stages.append(STAGE_FAIL)
                return self._decided(rule, tuple(stages))
        return _NO_RULE

    def _decided(self, rule: Rule, stages: tuple[int, ...]) -> Decided:
        """A decision with what follows from it: whether a stage closes, the keys its events read."""
        closes = any(s != STAGE_SOURCE for s in stages)
        need = 1 << MESSAGE_ID
        for ki, _, _ in rule.correlation_ids:
            need |= 1 << ki
        if closes:
            need |= 1 << CODE | 1 << ERROR | 1 << RESEND
            if rule.destination is None:
                need |= 1 << SERVER | 1 << PEER | 1 << URL | 1 << DEST_NAME
        return rule, stages, closes, need

    def _holds(
        self, w: When, span: Any, vals: list[Any], results: list[bool | None], res_attrs: Any, service: str
    ) -> bool:
        checks = self._checks
        for ci in w.check_ids:
            r = results[ci]
            if r is None:
                ki, matcher = checks[ci]
                r = results[ci] = matcher(vals[ki])
            if not r:
                return False
        return not w.rest_needed or w.rest(span, res_attrs, service)

    def _release(self, released: Iterable[tuple[Pending, str]], out: Any) -> None:
        for p, corr in released:
            rule, events, decision = p.payload
            if decision is not None:
                decision.via = "stitched later"
            self._emit(rule, [_new(Event, (*ev[:2], corr, *ev[3:])) for ev in events], corr, out, decision)

    def _emit(self, rule: Rule, events: list[Event], corr: str, out: Any, decision: Decision | None) -> None:
        """Hand over a span's events (built with `corr`) unless the ID is refused."""
        if len(corr) > self.max_corr or not corr.isprintable():  # the cheap checks first
            problem = correlation_problem(corr, self.max_corr)
            if problem is not None:
                out.reject(f"span {events[0][1].hex() if events else '?'}: {problem}")
                return
        out.correlated += 1
        if decision is not None:
            decision.corr = corr
        if events:
            out.events.extend(events)
            if rule.give_up_after is not None:
                self._retry_policy(rule, events, corr, out, decision)

    def _retry_policy(self, rule: Rule, events: list[Event], corr: str, out: Any, decision: Decision | None) -> None:
        """The n-th attempt that neither confirmed nor failed is the fail (the integration gives up)."""
        last = events[-1]
        key = (corr, last[6], rule.flow)
        if last[4] != STAGE_ATTEMPT:
            self._failed.pop(key, None)
            return
        spans = self._failed.get(key)
        if spans is None:
            spans = self._failed[key] = set()
            if len(self._failed) > self._max_failed:
                self._failed.popitem(last=False)
        spans.add(last[1])
        if len(spans) >= (rule.give_up_after or 0):
            del self._failed[key]
            out.events.append(
                _new(Event, (*last[:2], corr, last[3], STAGE_FAIL, *last[5:12], last[12] or "gave_up", *last[13:]))
            )
            if decision is not None:
                decision.stages.append("fail (give_up_after)")


def build_engine(
    cfg: RulesConfig, max_correlation_id_length: int, metrics: RulesMetrics | None = None, explain: bool = False
) -> RuleEngine | None:
    """None when no rule is configured: intake then runs its plain path."""
    if not cfg.map:
        return None
    return RuleEngine(cfg, max_correlation_id_length, metrics, explain)
