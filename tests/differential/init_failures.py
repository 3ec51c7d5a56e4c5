"""Init failures that depend on what the module did first; `INIT_FAILURE` picks one, at import time."""

import os
import sys

how = os.environ.get("INIT_FAILURE", "")
print("importing", how)
sys.stderr.write("importing, on stderr\n")

if how == "after_logging":
    import logging

    logging.getLogger("init").warning("about to fail")
    raise RuntimeError("failed after logging")
if how == "quiet_root":
    import logging

    # The runtime's own warning about the failure goes through the root logger, and is filtered out with it.
    logging.getLogger().setLevel(logging.ERROR)
    raise RuntimeError("failed with a quiet root logger")
if how == "import_error":
    import definitely_not_a_module  # noqa: F401
if how == "exit":
    sys.exit(4)


def handler(event, context):
    return how
