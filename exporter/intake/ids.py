"""What a correlation ID must be, wherever one is found (explicit attributes or mapping rules)."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def correlation_problem(text: str, limit: int) -> str | None:
    """Why a correlation ID is refused, or None: longer than `limit` characters, or with control
    characters (a newline in an ID forges log lines and breaks every list that shows it)."""
    if len(text) > limit:
        return f"correlation ID longer than {limit} characters (limits.max_correlation_id_length)"
    if not text.isprintable() and _CONTROL.search(text):
        return "correlation ID contains control characters"
    return None
