"""Imported by the handler on its first invocation only."""

VALUE = "lazy"
