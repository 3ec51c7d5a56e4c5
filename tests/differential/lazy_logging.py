"""A handler module that leaves `logging` alone until its handler runs: the runtime's logging is set up then."""

import sys


def handler(event, context):
    print("before logging")
    import logging

    logging.getLogger("lazy").warning("first record %s", 1)
    logging.getLogger().info("root info")
    try:
        raise KeyError("caught")
    except KeyError:
        logging.getLogger("lazy").error("with a traceback", exc_info=True)
    sys.stderr.write("after logging\n")
    if event.get("raise"):
        raise ValueError("lazy failure")
    return "ok"
