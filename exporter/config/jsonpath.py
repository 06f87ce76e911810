"""JSON paths as config keys use them: `$`, then `.name`, `['name']`, `[n]`, `[*]` or `.*` steps."""

from __future__ import annotations

import re

# A step: a name, an index, or None for a wildcard.
Step = str | int | None

_STEP = re.compile(r"\.([A-Za-z0-9_$@-]+)|\.\*|\[\*\]|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_json_path(text: str) -> list[Step]:
    """The steps of a JSON path; ValueError naming the path when it cannot be read."""
    if not text.startswith("$"):
        raise ValueError(f"JSON path must start with $: {text!r}")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        m = _STEP.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse JSON path {text!r} at position {pos}")
        name, index, q1, q2 = m.groups()
        if name is not None:
            steps.append(name)
        elif index is not None:
            steps.append(int(index))
        elif q1 is not None or q2 is not None:
            steps.append(q1 if q1 is not None else q2)
        else:
            steps.append(None)  # wildcard
        pos = m.end()
    if not steps:
        raise ValueError("JSON path $ alone would redact the whole body; name a field")
    return steps
