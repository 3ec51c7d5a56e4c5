"""Example handlers: what `slipstream demo` runs."""
