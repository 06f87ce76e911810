"""Compiled mapping rules: a span without syncwatch attributes becomes ledger events.

Rules are compiled once at start. User regexes run on RE2 (linear time, no backreferences or
lookarounds: a pattern RE2 cannot run is refused at start, naming the rule and key), and every
value a pattern sees is cut to MAX_VALUE_LENGTH characters first."""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import re2

from syncwatch.config.errors import ConfigError
from syncwatch.ledger.schema import STAGE_ATTEMPT, STAGE_CONFIRM, STAGE_FAIL, STAGE_NAMES, STAGE_SOURCE
from syncwatch.rules.metrics import RulesMetrics
from syncwatch.rules.models import CorrelationSource, RuleConfig, RulesConfig, WhenConfig
from syncwatch.rules.presets import PRESETS
from syncwatch.rules.stitch import Pending, StitchIndex

MAX_VALUE_LENGTH = 512
MAX_NAME_LENGTH = 128
# Current semantic-convention name -> older names instrumentations still write.
ALIASES: dict[str, tuple[str, ...]] = {
    "http.request.method": ("http.method",),
    "http.response.status_code": ("http.status_code",),
    "http.request.resend_count": ("http.resend_count",),
    "url.full": ("http.url",),
    "url.path": ("http.target",),
    "server.address": ("net.peer.name", "http.host"),
    "server.port": ("net.peer.port",),
    "messaging.destination.name": ("messaging.destination",),
    "messaging.message.id": ("messaging.message_id",),
    "messaging.message.conversation_id": ("messaging.conversation_id",),
    "messaging.operation.type": ("messaging.operation",),
}
KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUSES = {"unset": 0, "ok": 1, "error": 2}
_GLOB = re.compile(r"[*?\[]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 1 << 20  # per pattern: a huge counted repetition is refused at start


def text_of(value: Any) -> str:
    """A value as rules compare it: true/false, integral numbers without a fraction."""
    if value is True or value is False:
        return "true" if value else "false"
    if value.__class__ is float and value.is_integer():
        return str(int(value))
    return value if value.__class__ is str else str(value)


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(v)
    val = getattr(v, kind)
    return None if val == "" else val


def attr(attrs: Any, key: str) -> Any:
    """The value of `key` (or an older name of it) in an OTLP attribute map; None when absent."""
    v = attrs.get(key)
    if v is not None:
        return v.string_value or _any_value(v)
    for old in ALIASES.get(key, ()):
        v = attrs.get(old)
        if v is not None:
            return v.string_value or _any_value(v)
    return None


def _re2(pattern: str, key: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ConfigError(key, f"not a regular expression RE2 can run in linear time: {detail}") from None


class _Values:
    """Alternatives for one attribute: exact texts and globs; `None` asks for absence."""

    def __init__(self, spec: Any):
        alts = spec if isinstance(spec, list) else [spec]
        self.absent = None in alts
        texts = [text_of(a) for a in alts if a is not None]
        self.exact = frozenset(t for t in texts if not _GLOB.search(t))
        self.globs = [re.compile(fnmatch.translate(t)) for t in texts if _GLOB.search(t)]

    def __call__(self, value: Any) -> bool:
        if value is None:
            return self.absent
        text = text_of(value)[:MAX_VALUE_LENGTH]
        return text in self.exact or any(g.match(text) for g in self.globs)


def _globs(spec: str | list[str] | None) -> list[re.Pattern[str]] | None:
    if spec is None:
        return None
    return [re.compile(fnmatch.translate(s)) for s in ([spec] if isinstance(spec, str) else spec)]


class When:
    """One set of conditions. Attribute conditions are interned by the engine (check_ids), so a
    condition several rules share is evaluated once per span; the rest is `rest`."""

    def __init__(self, cfg: WhenConfig, key: str):
        kinds = cfg.kind if isinstance(cfg.kind, list) else [cfg.kind] if cfg.kind else None
        self.kinds = frozenset(KINDS[k] for k in kinds) if kinds else None
        self.names = _globs(cfg.name)
        self.name_rx = _re2(cfg.name_regex, f"{key}.name_regex") if cfg.name_regex else None
        self.services = _globs(cfg.service)
        self.status = STATUSES[cfg.status] if cfg.status else None
        self.attrs = [(k, repr(v), _Values(v)) for k, v in cfg.attributes.items()]
        self.res = [(k, _Values(v)) for k, v in cfg.resource.items()]
        self.check_ids: tuple[int, ...] = ()
        simple = self.status is None and self.names is None and self.name_rx is None
        self.rest_needed = not (simple and self.services is None and not self.res)

    def rest(self, span: Any, res_attrs: Any, service: str) -> bool:
        """Every condition but the span attributes'."""
        if self.kinds is not None and span.kind not in self.kinds:
            return False
        if self.status is not None and span.status.code != self.status:
            return False
        if self.names is not None:
            name = span.name[:MAX_VALUE_LENGTH]
            if not any(g.match(name) for g in self.names):
                return False
        if self.name_rx is not None and self.name_rx.search(span.name[:MAX_VALUE_LENGTH]) is None:
            return False
        if self.services is not None and not any(g.match(service) for g in self.services):
            return False
        return all(match(attr(res_attrs, k)) for k, match in self.res)


def _merge(preset: dict[str, Any], rule: RuleConfig) -> dict[str, Any]:
    given = rule.model_dump(exclude_unset=True)
    return {k: given.get(k, preset.get(k)) for k in ("stage", "correlation", "confirm_when", "fail_when")}


@dataclass
class Rule:
    name: str
    flow: str
    stage: int | None
    whens: list[When]
    correlation: list[tuple[str, Any, int | str]]
    source: str | None
    destination: str | None
    confirm: list[When]
    fail: list[When]
    give_up_after: int | None

    @property
    def kinds(self) -> frozenset[int] | None:
        """Span kinds this rule can match (None: any)."""
        found: frozenset[int] | None = None
        for w in self.whens:
            if w.kinds is not None:
                found = w.kinds if found is None else found & w.kinds
        return found

    def correlation_id(self, attrs: Any) -> Any:
        for key, rx, group in self.correlation:
            value = attr(attrs, key)
            if value is None:
                continue
            if rx is None:
                return value
            m = rx.search(text_of(value)[:MAX_VALUE_LENGTH])
            if m is not None and m.group(group):
                return m.group(group)
        return None


def _whens(spec: Any, key: str) -> list[When]:
    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    return [When(w if isinstance(w, WhenConfig) else WhenConfig.model_validate(w), key) for w in items]


def compile_rule(name: str, cfg: RuleConfig) -> Rule:
    """Raises ConfigError naming rules.map.<name>.<key>."""
    key = f"rules.map.{name}"
    preset = PRESETS[cfg.preset] if cfg.preset else {}
    merged = _merge(preset, cfg)
    # The rule's own conditions first: they are the selective ones.
    whens = [When(cfg.when, f"{key}.when"), *_whens(preset.get("when"), f"{key}.preset")]
    correlation: list[tuple[str, Any, int | str]] = []
    for i, src in enumerate(merged["correlation"] or ()):
        src = src if isinstance(src, CorrelationSource) else CorrelationSource.model_validate(src)
        rx = _re2(src.regex, f"{key}.correlation.{i}.regex") if src.regex else None
        group: int | str = 0
        if rx is not None:
            if "id" in rx.groupindex:
                group = "id"
            elif rx.groups:
                group = 1
        correlation.append((src.attribute, rx, group))
    stage = merged["stage"]
    return Rule(
        name=name,
        flow=cfg.flow,
        stage=None if stage == "none" else STAGE_NAMES[stage],
        whens=whens,
        correlation=correlation,
        source=cfg.source,
        destination=cfg.destination,
        confirm=_whens(merged["confirm_when"], f"{key}.confirm_when"),
        fail=_whens(merged["fail_when"], f"{key}.fail_when"),
        give_up_after=cfg.give_up_after,
    )


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
_UNSET = object()
MAX_DECISIONS = 4096  # remembered rule decisions (per distinct set of values the conditions read)


# Keys events read, first in every engine's key table (their index is fixed).
_EVENT_KEYS = (
    "http.response.status_code",
    "error.type",
    "http.request.resend_count",
    "server.address",
    "peer.service",
    "url.full",
    "messaging.destination.name",
    "messaging.message.id",
)
_CODE, _ERROR, _RESEND, _SERVER, _PEER, _URL, _DEST_NAME, _MESSAGE_ID = range(len(_EVENT_KEYS))


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
        self._key_ids: dict[str, int] = {k: i for i, k in enumerate(_EVENT_KEYS)}
        self._check_ids: dict[tuple[int, str], int] = {}
        self._checks: list[tuple[int, _Values]] = []
        for rule in self.rules:
            for w in (*rule.whens, *rule.confirm, *rule.fail):
                self._intern(w)
        self._keys = list(self._key_ids)
        whens = [w for r in self.rules for w in (*r.whens, *r.confirm, *r.fail)]
        self._match_lookup = [
            (ki, (self._keys[ki], *ALIASES.get(self._keys[ki], ()))) for ki in sorted({ki for ki, _ in self._checks})
        ]
        self._sig_name = any(w.names is not None or w.name_rx is not None for w in whens)
        self._sig_status = any(w.status is not None for w in whens)
        self._sig_service = any(w.services is not None for w in whens)
        self._cacheable = not any(w.res for w in whens)
        self._decisions: dict[tuple, tuple[Rule | None, tuple[int, ...]]] = {}
        # Candidate rules per span kind (0-5), in configured order.
        self._by_kind = [[r for r in self.rules if r.kinds is None or k in r.kinds] for k in range(6)]
        self.index = StitchIndex(cfg.stitch.max_entries, cfg.stitch.max_pending_spans, cfg.stitch.window)
        self.max_corr = max_correlation_id_length
        self.metrics = metrics
        self._matches: dict[str, int] = {}
        self._failed: OrderedDict[tuple[str, str, str], set[bytes]] = OrderedDict()
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
    def span(self, span: Any, res_attrs: Any, service: str, corr: Any, received: float, out: Any) -> None:
        """A span without syncwatch.stage: map it by the first rule that matches, or count it."""
        attrs = span.attributes
        vals: list[Any] = [_UNSET] * len(self._keys)
        if self._cacheable:
            # The decision depends only on the values the conditions read: remember it per value set.
            get = attrs.get
            parts = [span.kind]
            for ki, names in self._match_lookup:  # attr(), inlined: this runs for every span
                value = None
                for n in names:
                    v = get(n)
                    if v is not None:
                        value = v.string_value or _any_value(v)
                        break
                vals[ki] = value
                parts.append(value[:MAX_VALUE_LENGTH] if value.__class__ is str else value)
            if self._sig_name:
                parts.append(span.name[:MAX_VALUE_LENGTH])
            if self._sig_status:
                parts.append(span.status.code)
            if self._sig_service:
                parts.append(service)
            sig = tuple(parts)
            cache = self._decisions
            decided = cache.get(sig)
            if decided is None:
                decided = self._decide(span, attrs, vals, res_attrs, service)
                if len(cache) >= MAX_DECISIONS:
                    cache.clear()
                cache[sig] = decided
        else:
            decided = self._decide(span, attrs, vals, res_attrs, service)
        rule, stages = decided
        if rule is None:
            if corr is not None:
                out.correlated += 1
                self._release(self.index.learn((span.trace_id,), text_of(corr), received), out)
            else:
                out.unrelated += 1
            return
        self._matches[rule.name] = self._matches.get(rule.name, 0) + 1
        own = rule.correlation_id(attrs) if rule.correlation else None
        if own is None:
            own = corr
        events = self._events(rule, stages, span, attrs, vals, service, received, out)
        if events is None:
            return
        keys: list[Hashable] = [span.trace_id]
        msg = self._val(attrs, vals, _MESSAGE_ID)
        if msg is not None:
            keys.append(("m", text_of(msg)[:MAX_VALUE_LENGTH]))
        if len(span.links):
            keys.extend(link.trace_id for link in span.links if link.trace_id)
        explain = self.explain
        decision = None
        if explain is not None:
            decision = explain[span.span_id.hex()] = Decision(
                span.span_id.hex(),
                span.name,
                rule.name,
                rule.flow,
                [_STAGE_TEXT[e[4]] for e in events],
            )
        via = "attribute"
        key_tuple = tuple(keys)
        if own is None:
            own = self.index.lookup(key_tuple)
            via = "stitched"
        if own is None:
            self.index.hold(Pending(key_tuple, (rule, events, decision), received))
            return
        if decision is not None:
            decision.via = via
        own = text_of(own)
        self._emit(rule, events, own, out, decision)
        if via == "attribute" or len(key_tuple) > 1:  # a span stitched by its trace alone teaches nothing new
            self._release(self.index.learn(key_tuple, own, received), out)

    def _destination(self, attrs: Any, vals: list[Any]) -> str | None:
        for ki in (_SERVER, _PEER):
            value = self._val(attrs, vals, ki)
            if value is not None:
                return text_of(value)
        url = self._val(attrs, vals, _URL)
        if url is not None:
            try:
                host = urlsplit(text_of(url)[:2048]).hostname
            except ValueError:
                host = None
            if host:
                return host
        value = self._val(attrs, vals, _DEST_NAME)
        return None if value is None else text_of(value)

    def _decide(
        self, span: Any, attrs: Any, vals: list[Any], res_attrs: Any, service: str
    ) -> tuple[Rule | None, tuple[int, ...]]:
        """The first rule whose conditions hold, and the stages the span becomes."""
        results: list[bool | None] = [None] * len(self._checks)
        holds = self._holds
        kind = span.kind
        for rule in self._by_kind[kind] if 0 <= kind < 6 else self.rules:
            for w in rule.whens:
                if not holds(w, span, attrs, vals, results, res_attrs, service):
                    break
            else:
                stages: list[int] = [] if rule.stage is None else [rule.stage]
                if rule.confirm and any(holds(w, span, attrs, vals, results, res_attrs, service) for w in rule.confirm):
                    stages.append(STAGE_CONFIRM)
                elif rule.fail and any(holds(w, span, attrs, vals, results, res_attrs, service) for w in rule.fail):
                    stages.append(STAGE_FAIL)
                return rule, tuple(stages)
        return None, ()

    def _holds(
        self, w: When, span: Any, attrs: Any, vals: list[Any], results: list[bool | None], res_attrs: Any, service: str
    ) -> bool:
        checks, keys = self._checks, self._keys
        for ci in w.check_ids:
            r = results[ci]
            if r is None:
                ki, matcher = checks[ci]
                v = vals[ki]
                if v is _UNSET:
                    v = vals[ki] = attr(attrs, keys[ki])
                r = results[ci] = matcher(v)
            if not r:
                return False
        return not w.rest_needed or w.rest(span, res_attrs, service)

    def _val(self, attrs: Any, vals: list[Any], ki: int) -> Any:
        v = vals[ki]
        if v is _UNSET:
            v = vals[ki] = attr(attrs, self._keys[ki])
        return v

    def _release(self, released: Iterable[tuple[Pending, str]], out: Any) -> None:
        for p, corr in released:
            rule, events, decision = p.payload
            if decision is not None:
                decision.via = "stitched later"
            self._emit(rule, events, corr, out, decision)

    def _emit(self, rule: Rule, events: list[tuple], corr: str, out: Any, decision: Decision | None) -> None:
        if len(corr) > self.max_corr:
            out.reject(
                f"span {events[0][1].hex() if events else '?'}: correlation ID longer than {self.max_corr} characters"
            )
            return
        if not corr.isprintable() and _CONTROL.search(corr):
            out.reject(f"span {events[0][1].hex() if events else '?'}: correlation ID contains control characters")
            return
        out.correlated += 1
        if decision is not None:
            decision.corr = corr
        append = out.events.append
        for ev in events:
            append((*ev[:2], corr, *ev[3:]))
        if rule.give_up_after is not None and events:
            self._retry_policy(rule, events, corr, out, decision)

    def _retry_policy(self, rule: Rule, events: list[tuple], corr: str, out: Any, decision: Decision | None) -> None:
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
            out.events.append((*last[:2], corr, last[3], STAGE_FAIL, *last[5:12], last[12] or "gave_up", *last[13:]))
            if decision is not None:
                decision.stages.append("fail (give_up_after)")

    def _events(
        self,
        rule: Rule,
        stages: tuple[int, ...],
        span: Any,
        attrs: Any,
        vals: list[Any],
        service: str,
        received: float,
        out: Any,
    ) -> list[tuple] | None:
        """The events of a matched span, with the correlation ID still to fill in."""
        trace_id, span_id = span.trace_id, span.span_id
        if len(trace_id) != 16 or len(span_id) != 8:
            out.reject(f"span {span_id.hex() or '?'} (rule {rule.name}): trace_id must be 16 bytes and span_id 8 bytes")
            return None
        if not stages:
            return []
        source = rule.source or service or None
        # A source span opens the flow's configured destinations (a queue is not a destination).
        closes = any(s != STAGE_SOURCE for s in stages)
        dest = rule.destination or (self._destination(attrs, vals) if closes else None)
        if dest is None and closes:
            out.reject(
                f"span {span_id.hex()} (rule {rule.name}): no destination (set `destination` on the rule, or server.address on the span)"
            )
            return None
        if (source is not None and len(source) > MAX_NAME_LENGTH) or (dest is not None and len(dest) > MAX_NAME_LENGTH):
            out.reject(
                f"span {span_id.hex()} (rule {rule.name}): source or destination name longer than {MAX_NAME_LENGTH} characters"
            )
            return None
        start = span.start_time_unix_nano / 1e9
        end = span.end_time_unix_nano / 1e9 or start
        val = self._val
        code = val(attrs, vals, _CODE)
        code_text = None if code is None else text_of(code)[:MAX_VALUE_LENGTH]
        error = val(attrs, vals, _ERROR)
        if error is None and span.status.code == 2:
            error = code_text or "error"  # an ERROR status without error.type (older conventions)
        error_text = None if error is None else text_of(error)[:MAX_VALUE_LENGTH]
        attempt = None
        resend = val(attrs, vals, _RESEND)
        if resend is not None and text_of(resend).isdigit() and int(text_of(resend)) < 1 << 31:
            attempt = int(text_of(resend)) + 1
        out_events = []
        for stage in stages:
            out_events.append(
                (
                    trace_id,
                    span_id,
                    None,
                    rule.flow,
                    stage,
                    source,
                    dest,
                    start,
                    end,
                    start if stage == STAGE_SOURCE else None,
                    attempt if stage == STAGE_ATTEMPT else None,
                    code_text if stage == STAGE_ATTEMPT else None,
                    error_text if stage != STAGE_SOURCE else None,
                    None,
                    received,
                )
            )
        return out_events


def build_engine(
    cfg: RulesConfig, max_correlation_id_length: int, metrics: RulesMetrics | None = None, explain: bool = False
) -> RuleEngine | None:
    """None when no rule is configured: intake then runs its plain path."""
    if not cfg.map:
        return None
    return RuleEngine(cfg, max_correlation_id_length, metrics, explain)
