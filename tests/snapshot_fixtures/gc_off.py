"""An init that turns the garbage collector off for good, as some functions do for speed."""

import gc

gc.disable()


def handler(event, context):
    return {"enabled": gc.isenabled(), "threshold": gc.get_threshold()[0]}
