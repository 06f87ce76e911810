"""Rule conditions, compiled once at start: attribute matchers, `when` blocks and the Rule itself.

User regexes run on RE2 (linear time): a pattern RE2 cannot run is refused at start, naming the
rule and key, and every value a pattern sees is cut to MAX_VALUE_LENGTH characters first."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

import re2

from syncwatch.config.errors import ConfigError
from syncwatch.config.rules import CorrelationSource, RuleConfig, WhenConfig
from syncwatch.ledger.schema import STAGE_NAMES
from syncwatch.rules.presets import PRESETS

MAX_VALUE_LENGTH = 512
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


def attr(attrs: dict[str, Any], key: str) -> Any:
    """The value of `key` (or an older name of it) in a dict of attributes (intake.attributes);
    None when absent. A key present with an empty value is None and hides its older names."""
    if key in attrs:
        return attrs[key]
    for old in ALIASES.get(key, ()):
        if old in attrs:
            return attrs[old]
    return None


def _re2(pattern: str, key: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ConfigError(key, f"not a regular expression RE2 can run in linear time: {detail}") from None


class Values:
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
        self.attrs = [(k, repr(v), Values(v)) for k, v in cfg.attributes.items()]
        self.res = [(k, Values(v)) for k, v in cfg.resource.items()]
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
    # `correlation` with each attribute as the engine's key index (set by the engine).
    correlation_ids: tuple[tuple[int, Any, int | str], ...] = ()

    @property
    def kinds(self) -> frozenset[int] | None:
        """Span kinds this rule can match (None: any)."""
        found: frozenset[int] | None = None
        for w in self.whens:
            if w.kinds is not None:
                found = w.kinds if found is None else found & w.kinds
        return found


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
