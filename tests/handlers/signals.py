"""A function that registers its own SIGTERM handler at init, as graceful-shutdown code does."""

import signal
import sys


def on_sigterm(signum, frame):
    sys.stdout.write("user SIGTERM handler ran\n")
    sys.stdout.flush()


signal.signal(signal.SIGTERM, on_sigterm)


def handler(event, context):
    return "ok"
