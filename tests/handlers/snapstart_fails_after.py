from snapshot_restore_py import register_after_restore


@register_after_restore
def broken():
    raise RuntimeError("after-restore hook failed")


def handler(event, context):
    return "unreachable"
