"""A function started with an import hook ahead of the runtime (hooks/sitecustomize.py on PYTHONPATH)."""

import sys

import sitecustomize

SERVED = any(type(finder).__module__ == "slipstream.preload" for finder in sys.meta_path)

import json  # noqa: E402, F401

from pkg import sub  # noqa: E402, F401


def handler(event, context):
    return {"served": SERVED, "hook_saw": [name for name in ("json", "pkg", "pkg.sub") if name in sitecustomize.FOUND]}
