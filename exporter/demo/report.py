"""The reconciliation report: what syncwatch found, side by side with the simulator's truth."""

from __future__ import annotations

from pathlib import Path

from syncwatch.demo.live import MetricsView
from syncwatch.demo.truth import Findings, GroundTruth


def _ids(ids: set[str], limit: int = 6) -> str:
    shown = sorted(ids)[:limit]
    return ", ".join(shown) + (f" … (+{len(ids) - limit})" if len(ids) > limit else "")


def _gap(earlier: str, later: str) -> str:
    from datetime import datetime

    try:
        seconds = (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()
    except (TypeError, ValueError):
        return "moments"
    return f"{seconds:.1f}s"


def compare(truth: GroundTruth, found: Findings) -> list[tuple[str, int, int, set[str], set[str]]]:
    """Rows (what, found, true, missed, false positives)."""
    rows = []
    for what, got, want in (
        ("sent, never confirmed (overdue)", found.overdue, truth.lost),
        ("dead-lettered (failed)", found.failed, truth.dead_lettered),
        ("applied twice (duplicate)", found.duplicates, truth.duplicates),
        # From the storefront's and the ERP's own databases, not from the spans.
        ("missing at destination (orders)", found.missing, truth.missing),
        # From the payloads: the ERP's nightly sync writing an old shipping address back.
        ("write conflicts (customers)", found.conflicts, truth.conflicts),
        ("ownership violations (customers)", found.violations, truth.violations),
    ):
        rows.append((what, len(got), len(want), want - got, got - want))
    return rows


def matches(truth: GroundTruth, found: Findings) -> bool:
    return (
        all(not missed and not extra for _, _, _, missed, extra in compare(truth, found))
        and not found.pending
        and found.dlq_depth == truth.dlq_depth
    )


def render_report(
    truth: GroundTruth,
    found: Findings,
    view: MetricsView,
    outcomes: dict[str, int],
    config_path: Path,
    api_url: str,
    token_file: Path,
    keep_running: bool = False,
) -> str:
    lines = [
        "Reconciliation: what syncwatch found vs. the simulator's ground truth",
        f"  {'':34s} {'syncwatch':>9s} {'truth':>7s}",
    ]
    for what, got, want, missed, extra in compare(truth, found):
        mark = "ok" if not missed and not extra else "MISMATCH"
        lines.append(f"  {what:34s} {got:9d} {want:7d}  {mark}")
        if missed:
            lines.append(f"    missed by syncwatch: {_ids(missed)}")
        if extra:
            lines.append(f"    false positives: {_ids(extra)}")
    dlq_mark = "ok" if found.dlq_depth == truth.dlq_depth else "MISMATCH"
    lines.append(
        f"  {'DLQ depth (sampled from the queue)':34s} {int(found.dlq_depth):9d} {truth.dlq_depth:7d}  {dlq_mark}"
    )
    if truth.dlq_depth > len(truth.dead_lettered):
        lines.append(
            f"    ({truth.dlq_depth - len(truth.dead_lettered)} DLQ message(s) are redelivered copies of records "
            "already applied: confirmed, not failed)"
        )
    if found.pending:
        lines.append(f"  still pending within deadline: {_ids(found.pending)}")
    for e in found.conflict_events:
        new, old = e["write"], e["previous"]
        lines.append(
            f"    conflict: customer {e['record']} {e['field']} (owner {e['owner']}): "
            f"{old['writer']} wrote {old['value']}, then {new['writer']} wrote {new['value']} "
            f"{_gap(old['time'], new['time'])} later"
        )
    lines.append(
        f"  records sent {len(truth.sent)}, applied at the ERP {truth.applied}; "
        f"worker: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}"
    )

    codes = ", ".join(f"{c}: {int(n)}" for c, n in sorted(found.attempts_by_code.items()) if n)
    lines.append("")
    lines.append(f"Retries: {int(found.retries)} (attempts by response code: {codes or 'none'})")
    jitter = {f: r for f, r in found.jitter_ratio.items() if r is not None}
    if jitter:
        worst = min(jitter, key=jitter.get)
        risk = (
            "RETRY-STORM RISK: retries at fixed intervals hit the rate-limited ERP in lockstep"
            if jitter[worst] < 0.1
            else "retries are spread out"
        )
        lines.append(f"  retry jitter ratio ({worst}) {jitter[worst]:.3f}: {risk}")
    lag_p95 = view.quantile("syncwatch_sync_lag_seconds", 0.95, flow="orders")
    if lag_p95 is not None:
        lines.append(f"  order sync lag p95 <= {lag_p95:g}s")

    lines.append("")
    lines.append("Without syncwatch, these would surface in the reconciliation two weeks from now.")
    show = ""
    if truth.lost:
        example = sorted(truth.lost)[0]
        show = f"syncwatch transactions show {example} --url {api_url} --token-file {token_file}"
    if keep_running:
        if show:
            lines.append("Inspect one lost order (attempts, response codes, payload snapshots):")
            lines.append(f"  {show}")
    else:
        lines.append(f"The ledger stays in {config_path.parent}. To look around, restart the sidecar on it:")
        lines.append(f"  syncwatch run --config {config_path}")
        if show:
            lines.append("and inspect one lost order (attempts, response codes, payload snapshots):")
            lines.append(f"  {show}")
        lines.append("(or run `syncwatch demo --keep-running`)")
    lines.append("Who writes which customer field, and the conflicts seen (the ownership document's draft):")
    lines.append(f"  syncwatch ownership report --url {api_url} --token-file {token_file}")
    lines.append("")
    lines.append(f"The overdue orders in the web view: {api_url}/ui/transactions?state=overdue&flow=orders")
    lines.append(f"  (log in with the API token in {token_file}{'' if keep_running else ', while the sidecar runs'})")
    return "\n".join(lines)
