from snapshot_restore_py import register_before_snapshot


@register_before_snapshot
def broken():
    raise RuntimeError("before-snapshot hook failed")


def handler(event, context):
    return "unreachable"
