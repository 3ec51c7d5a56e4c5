raise RuntimeError("module-level failure")


def handler(event, context):
    return 1
