"""A module in a namespace package (nspkg has no __init__.py)."""

PART = "part"
