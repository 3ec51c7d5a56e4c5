"""A handler whose init fails: a cold start reports Runtime.ImportModuleError."""

import slipstream_snapshot_tests_missing_module  # noqa: F401


def handler(event, context):
    return None
