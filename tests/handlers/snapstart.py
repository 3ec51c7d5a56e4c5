"""SnapStart hooks registered through snapshot_restore_py, as users register them."""

from snapshot_restore_py import register_after_restore, register_before_snapshot

calls = []


@register_before_snapshot
def before_1():
    calls.append("before-1")


register_before_snapshot(lambda: calls.append("before-2"))


@register_after_restore
def after_1():
    calls.append("after-1")


register_after_restore(calls.append, "after-2")


def handler(event, context):
    return calls
