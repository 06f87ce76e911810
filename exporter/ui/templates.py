"""The pages' Jinja2 templates, kept in code (no package data, no build step) and autoescaped:
payloads, correlation IDs and queue names are data from outside and render as text only."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;background:#f6f7f9}
header{background:#1d2733;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a{color:#cfe3ff;text-decoration:none}header a.on{color:#fff;font-weight:600;border-bottom:2px solid #6cb2ff}
header .brand{font-weight:700;color:#fff;margin-right:1em}header .right{margin-left:auto}
main{padding:1em 1.2em;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35em .6em;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#fff;border:1px solid #dde1e6;padding:.6em;overflow:auto;max-height:32em;white-space:pre-wrap;word-break:break-all}
form.filters{display:flex;gap:.8em;align-items:end;margin:0 0 1em;flex-wrap:wrap}label{display:flex;flex-direction:column;font-size:12px;color:#555}
input,select,button{font:inherit;padding:.25em .4em}.muted{color:#6b7480}.err{color:#b00020;font-weight:600}
.badge{display:inline-block;padding:0 .45em;border-radius:3px;font-size:12px;background:#e3e6ea}
.badge.overdue,.badge.failed,.badge.expired,.badge.dead-lettered{background:#fbd5d5;color:#8a1111}.badge.confirmed{background:#d6f2dc;color:#135c25}
.badge.pending{background:#fff1c2}.badge.code-ok{background:#d6f2dc}.badge.code-client{background:#ffe0b8}.badge.code-server{background:#fbd5d5}.badge.duplicate{background:#ffe0b8}
.dest{background:#fff;border:1px solid #dde1e6;padding:.8em 1em;margin:0 0 1.2em}
.axis{position:relative;height:54px;margin:3em 0 .4em;border-bottom:2px solid #9aa4af}
.axis .bar{position:absolute;bottom:4px;height:18px;border-radius:2px;min-width:3px}
.bar.ok{background:#2e9d4f}.bar.client{background:#e08a00}.bar.server{background:#d3302f}.bar.other{background:#7d8793}
.axis .mark{position:absolute;bottom:-6px;height:62px;border-left:2px dashed #4a6fa5}
.axis .mark span{position:absolute;left:2px;font-size:11px;white-space:nowrap;color:#333}
.axis .mark.deadline{border-left-color:#d3302f}.axis .mark.now{border-left-color:#111}
.axisends{display:flex;justify-content:space-between;font-size:11px;color:#6b7480}
.diff .add{background:#e6f7ea;color:#135c25}.diff .del{background:#fdeaea;color:#8a1111}.diff .hunk{color:#4a6fa5}
.diff div{white-space:pre-wrap;word-break:break-all}
.login{max-width:26em;margin:4em auto;background:#fff;padding:1.5em;border:1px solid #dde1e6}
.pager{margin:1em 0;display:flex;gap:1em}
"""

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{% block title %}syncwatch{% endblock %} · syncwatch</title>
<style>{{ css }}</style></head><body>
{% if nav %}<header><span class="brand">syncwatch</span>
{% for s in states %}<a href="/ui/transactions?state={{ s }}" {% if active == s %}class="on"{% endif %}>{{ s }}</a>{% endfor %}
<a href="/ui/dead-letters" {% if active == 'dead-letters' %}class="on"{% endif %}>dead letters</a>
<a href="/ui/queues" {% if active == 'queues' %}class="on"{% endif %}>queues</a>
<a class="right" href="/ui/logout">log out</a></header>{% endif %}
<main>{% block main %}{% endblock %}</main></body></html>
"""

LOGIN = """{% extends "base" %}{% block title %}log in{% endblock %}{% block main %}
<form class="login" method="post" action="/ui/login">
<h2>syncwatch</h2>
<p class="muted">The API token of this sidecar (api.token). It is kept in a cookie for this browser only.</p>
{% if error %}<p class="err" id="login-error">{{ error }}</p>{% endif %}
<input type="hidden" name="next" value="{{ next }}">
<label>API token <input type="password" name="token" id="token" autocomplete="current-password" autofocus required></label>
<p><button type="submit" id="login">Log in</button></p>
</form>{% endblock %}
"""

CLOSED = """{% extends "base" %}{% block title %}closed{% endblock %}{% block main %}
<p class="err">{{ message }}</p>{% endblock %}
"""

UNAVAILABLE = """{% extends "base" %}{% block title %}ledger unavailable{% endblock %}{% block main %}
<p class="err" id="unavailable">{{ message }}</p>{% endblock %}
"""

LIST = """{% extends "base" %}{% block title %}{{ state }}{% if flow %} · {{ flow }}{% endif %}{% endblock %}{% block main %}
<h2>{{ state }} transactions{% if flow %} of flow <code>{{ flow }}</code>{% endif %}</h2>
<form class="filters" method="get" action="/ui/transactions">
<label>state <select name="state">{% for s in states %}<option {% if s == state %}selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
<label>flow <input name="flow" value="{{ flow or '' }}" list="flows" placeholder="all flows"></label>
<datalist id="flows">{% for f in flows %}<option value="{{ f }}">{% endfor %}</datalist>
<label>rows <select name="limit">{% for n in (50, 100, 500, 1000) %}<option {% if n == limit %}selected{% endif %}>{{ n }}</option>{% endfor %}</select></label>
<button type="submit">show</button></form>
{% if error %}<p class="err">{{ error }}</p>{% endif %}
{% if not items %}<p class="muted" id="empty">no {{ state }} transactions{% if flow %} in flow {{ flow }}{% endif %}.</p>{% else %}
<table id="list"><thead><tr><th>correlation ID</th><th>flow</th><th>source</th><th>destination</th>
{% if state in ('overdue', 'pending') %}<th>overdue by</th><th>deadline</th><th>changed at</th><th>attempts</th><th>last code</th>
{% elif state in ('failed', 'expired') %}<th>closed at</th><th>changed at</th><th>attempts</th><th>last code</th>
{% else %}<th>applies</th><th>first</th><th>last</th>{% endif %}</tr></thead><tbody>
{% for it in items %}<tr>
<td><a class="tx" href="/ui/transactions/{{ it.href }}"><code>{{ it.correlation_id }}</code></a>{% if it.dead_lettered %} <span class="badge dead-lettered">dead-lettered</span>{% endif %}</td>
<td>{{ it.flow }}</td><td>{{ it.source or '-' }}</td><td>{{ it.destination }}</td>
{% if state in ('overdue', 'pending') %}<td class="num">{{ it.overdue_by }}</td><td>{{ it.deadline_at }}</td><td>{{ it.changed }}</td><td class="num">{{ it.attempts }}</td><td>{{ it.last_code or '-' }}</td>
{% elif state in ('failed', 'expired') %}<td>{{ it.closed }}</td><td>{{ it.changed }}</td><td class="num">{{ it.attempts }}</td><td>{{ it.last_code or '-' }}</td>
{% else %}<td class="num">{{ it.applies }}</td><td>{{ it.first }}</td><td>{{ it.last }}</td>{% endif %}
</tr>{% endfor %}</tbody></table>{% endif %}
<div class="pager">{% if cursor %}<a href="{{ first_url }}">first page</a>{% endif %}
{% if next_url %}<a id="next" href="{{ next_url }}">next page →</a>{% endif %}</div>
{% endblock %}
"""

TX = """{% extends "base" %}{% block title %}{{ corr }}{% endblock %}{% block main %}
<h2>transaction <code id="corr">{{ corr }}</code></h2>
{% if snapshot_error %}<p class="err">snapshot store: {{ snapshot_error }}</p>{% endif %}
{% if not dests %}<p class="muted">the ledger has no record of this correlation ID (or it was swept after its retention).</p>{% endif %}
{% for d in dests %}<section class="dest">
<h3>{{ d.flow }} → {{ d.destination }} <span class="badge {{ d.state }}">{{ d.state }}</span>
{% if d.dead_lettered %}<span class="badge dead-lettered">dead-lettered</span>{% endif %}
{% if d.duplicate %}<span class="badge duplicate">duplicate apply</span>{% endif %}</h3>
<p class="muted">source {{ d.source or '-' }} · changed {{ d.changed }} · opened {{ d.opened }} · deadline {{ d.deadline_at }}
{% if d.overdue_by %} · <b>overdue by {{ d.overdue_by }}</b>{% endif %}{% if d.lag %} · lag {{ d.lag }}{% endif %}</p>
<div class="axis" title="{{ d.axis.start }} … {{ d.axis.end }}">
{% for m in d.axis.markers %}<div class="mark {{ m.label }}" style="left:{{ m.left }}%" title="{{ m.label }} {{ m.at }}"><span style="top:{{ -1.3 - 1.2 * m.row }}em">{{ m.label }}</span></div>{% endfor %}
{% for b in d.axis.bars %}<div class="bar {{ b.cls }}" style="left:{{ b.left }}%;width:{{ b.width }}%" title="{{ b.title }}"></div>{% endfor %}
</div><div class="axisends"><span>{{ d.axis.start }}</span><span>{{ d.axis.span }}</span><span>{{ d.axis.end }}</span></div>
{% if d.storm %}<p class="storm"><b>{{ d.storm }}</b></p>{% endif %}
<h4>attempts ({{ d.attempt_count }})</h4>
{% if d.attempts %}<table class="attempts"><thead><tr><th>#</th><th>start</th><th>took</th><th>code</th><th>error</th><th>backoff</th><th>payloads</th></tr></thead><tbody>
{% for a in d.attempts %}<tr class="attempt"><td class="num">{{ a.attempt }}</td><td>{{ a.start_at }}</td><td class="num">{{ a.took }}</td>
<td><span class="badge code-{{ a.cls }}">{{ a.code or '-' }}</span></td><td>{{ a.error or '' }}</td><td class="num">{{ a.backoff }}</td><td class="num">{{ a.snapshots|length }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">no attempts recorded.</p>{% endif %}
{% for c in d.confirmations %}<p>{{ 'duplicate apply' if c.duplicate else 'confirmed' }} at {{ c.at }}{% if c.idempotency_key %} (key <code>{{ c.idempotency_key }}</code>){% endif %}</p>{% endfor %}
{% for f in d.failures %}<p class="err">fail reported at {{ f.at }}: {{ f.error or '' }}</p>{% endfor %}
{% for s in d.snapshots %}{% include "snapshot" %}{% endfor %}
</section>{% endfor %}
{% if unlinked %}<h3>payload snapshots not linked to a destination</h3>{% for s in unlinked %}{% include "snapshot" %}{% endfor %}{% endif %}
{% if dead_letters %}<h3>dead letters</h3>{% with letters = dead_letters %}{% include "letters" %}{% endwith %}{% endif %}
{% endblock %}
"""

SNAPSHOT = """<details class="snapshot" open><summary>{% if s.attempt is defined %}attempt {{ s.attempt }} · {% endif %}{{ s.direction }} at {{ s.time }} · {{ s.content_type }} · {{ s.size }} bytes
{% if s.truncated %} · truncated{% endif %}{% if s.redactions %} · {{ s.redactions }} redacted{% endif %}</summary>
<pre class="payload">{{ s.pretty }}</pre>
{% if s.diff is defined %}<div class="diff"><b>change against the previous request{% if s.diff_cut %} (first lines only){% endif %}:</b>
{% if s.diff_same %}<p class="muted">identical to the previous request.</p>{% else %}<pre>{% for l in s.diff %}<div class="{{ l.cls }}">{{ l.text }}</div>{% endfor %}</pre>{% endif %}</div>{% endif %}
</details>
"""

LETTERS = """<table class="letters"><thead><tr><th>correlation ID</th><th>collector</th><th>queue</th><th>source queue</th><th>reason</th><th>age</th><th>deliveries</th><th>body (redacted)</th></tr></thead><tbody>
{% for l in letters %}<tr class="letter"><td>{% if l.correlation_id %}{% if l.linked %}<a href="/ui/transactions/{{ l.href }}"><code>{{ l.correlation_id }}</code></a>{% else %}<code>{{ l.correlation_id }}</code> <span class="muted">(not in the ledger)</span>{% endif %}{% else %}<span class="muted">none found</span>{% endif %}</td>
<td>{{ l.collector }}</td><td>{{ l.queue }}</td><td>{{ l.source_queue or '-' }}</td><td>{{ l.reason or '-' }}</td><td class="num">{{ l.age }}</td><td class="num">{{ l.deliveries if l.deliveries is not none else '-' }}</td>
<td><details><summary>{{ l.body_size }} bytes</summary><pre>{{ l.body }}</pre></details></td></tr>{% endfor %}
</tbody></table>
"""

DEAD_LETTERS = """{% extends "base" %}{% block title %}dead letters{% endblock %}{% block main %}
<h2>dead letters</h2>
<form class="filters" method="get" action="/ui/dead-letters">
<label>queue <input name="queue" value="{{ queue or '' }}"></label>
<label>linked <select name="linked"><option value="">all</option><option value="true" {% if linked == 'true' %}selected{% endif %}>linked</option><option value="false" {% if linked == 'false' %}selected{% endif %}>unlinked</option></select></label>
<button type="submit">show</button></form>
{% if not enabled %}<p class="muted">no collector reads dead letters (set <code>dead_letters.enabled: true</code> on a RabbitMQ or SQS collector).</p>
{% elif not letters %}<p class="muted" id="empty">no dead letters read.</p>{% else %}{% include "letters" %}{% endif %}
{% endblock %}
"""

QUEUES = """{% extends "base" %}{% block title %}queues{% endblock %}{% block main %}
<h2>queues</h2>
{% if not collectors %}<p class="muted">no collectors configured.</p>{% endif %}
{% for c in collectors %}<section class="dest"><h3>{{ c.name }} <span class="badge {{ 'confirmed' if c.up else 'failed' }}">{{ 'up' if c.up else 'down' }}</span></h3>
{% if c.error %}<p class="err">{{ c.error }}</p>{% endif %}
<table><thead><tr><th>namespace</th><th>queue</th><th>depth</th><th>in flight</th><th>oldest</th><th>consumers</th></tr></thead><tbody>
{% for q in c.queues %}<tr><td>{{ q.namespace }}</td><td>{{ q.queue }}</td><td class="num">{{ q.messages }}</td><td class="num">{{ q.in_flight }}</td><td class="num">{{ q.oldest }}</td><td class="num">{{ q.consumers }}</td></tr>{% endfor %}
</tbody></table>
<h4>dead-letter queues</h4>
<table><thead><tr><th>namespace</th><th>DLQ</th><th>depth</th><th>sources</th></tr></thead><tbody>
{% for q in c.dlqs %}<tr><td>{{ q.namespace }}</td><td><a href="/ui/dead-letters?queue={{ q.queue|urlencode }}">{{ q.queue }}</a></td><td class="num">{{ q.messages }}</td><td>{{ q.sources }}</td></tr>{% endfor %}
</tbody></table>
{% if c.letters %}<h4>dead letters read</h4>{% with letters = c.letters %}{% include "letters" %}{% endwith %}{% endif %}
</section>{% endfor %}
{% endblock %}
"""

ENV = Environment(
    loader=DictLoader(
        {
            "base": BASE,
            "login": LOGIN,
            "closed": CLOSED,
            "unavailable": UNAVAILABLE,
            "list": LIST,
            "tx": TX,
            "snapshot": SNAPSHOT,
            "letters": LETTERS,
            "dead_letters": DEAD_LETTERS,
            "queues": QUEUES,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: object) -> str:
    return ENV.get_template(name).render(css=CSS, **context)
