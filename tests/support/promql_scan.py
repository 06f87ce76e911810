"""How a PromQL expression aggregates a metric over replicas, read from the text.

With several replicas on one ledger (issue 16) a gauge exported by every replica, or one that moves
with the leader lease, must be taken with max/min/count over the replicas before anything sums it.
`innermost_aggregations` finds, for each place a metric is selected, the aggregation operators that
enclose it, innermost first; the dashboard and alert tests check the first one.
"""

from __future__ import annotations

import re

AGGREGATORS = ("sum", "avg", "max", "min", "count", "topk", "bottomk", "quantile", "group", "stddev", "stdvar")
_AGG_BEFORE_PAREN = re.compile(
    r"\b(" + "|".join(AGGREGATORS) + r")\s*(?:(?:by|without)\s*\([^()]*\)\s*)?$",
)
_AGG_CLAUSE_AFTER = re.compile(r"^\s*(?:by|without)\s*\([^()]*\)")


def _strip_strings(expr: str) -> str:
    # label values may hold anything, parentheses included: blank them, keep the offsets
    return re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)


def _close(expr: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(expr)):
        if expr[i] == "(":
            depth += 1
        elif expr[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return len(expr)


def innermost_aggregations(expr: str, metric: str) -> list[tuple[str, str]]:
    """For each selection of `metric` in `expr`: (the innermost enclosing aggregation operator, or
    "" when none, and the aggregation's by/without clause). The clause tells which labels it keeps."""
    text = _strip_strings(expr)
    found = []
    for m in re.finditer(rf"\b{re.escape(metric)}\b(?!_)", text):
        pos = m.start()
        result = ("", "")
        # walk outwards over the parentheses that contain pos
        depth = 0
        for i in range(pos - 1, -1, -1):
            c = text[i]
            if c == ")":
                depth += 1
            elif c == "(":
                if depth:
                    depth -= 1
                    continue
                agg = _AGG_BEFORE_PAREN.search(text[:i])
                if agg:
                    clause = re.search(r"(by|without)\s*\(([^()]*)\)", agg.group(0))
                    if not clause:  # `sum (x) by (y)`: the clause may follow the parentheses
                        after = _AGG_CLAUSE_AFTER.match(text[_close(text, i) + 1 :])
                        clause = re.search(r"(by|without)\s*\(([^()]*)\)", after.group(0)) if after else None
                    result = (agg.group(1), f"{clause.group(1)} ({clause.group(2)})" if clause else "")
                    break
        found.append(result)
    return found
