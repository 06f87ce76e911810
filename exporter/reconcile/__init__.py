"""Continuous reconciliation: what the systems of record say exists where, compared on a schedule,
so an order nobody traced is still found missing."""
