"""Seeds `random` during init, as libraries do: after a SnapStart restore the sequence must differ."""

import random

from snapshot_restore_py import register_after_restore, register_before_snapshot

random.seed(1234)
calls = []
register_before_snapshot(calls.append, "before")
register_after_restore(calls.append, "after")


def handler(event, context):
    return {"random": random.random(), "calls": calls}
