"""A function whose init imports standard-library and local packages; tests/test_snapshot.py snapshots it."""

import gc
import sys

# What init sees when the snapshot serves it: the finder in place and the collector paused.
SERVED = any(type(finder).__module__ == "slipstream.preload" for finder in sys.meta_path)
GC_PAUSED = gc.get_threshold()[0] > 100_000

import asyncio  # noqa: E402
import csv  # noqa: E402  (its _csv is an extension module: left to the import system)
import email.utils  # noqa: E402
import http  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import xml.etree.ElementTree  # noqa: E402

import nspkg.part  # noqa: E402
from pkg import sub  # noqa: E402

MODULES = [asyncio, csv, email.utils, http, json, logging, xml.etree.ElementTree, nspkg.part]


def handler(event, context):
    preimported = "lazy_mod" in sys.modules
    import lazy_mod

    logging.getLogger("app").warning("logged from the handler")

    return {
        "served": SERVED,
        "gc_paused": GC_PAUSED,
        "gc_now": gc.isenabled() and gc.get_threshold()[0] < 100_000,
        "preimported": preimported,
        "value": sub.VALUE,
        "lazy": lazy_mod.VALUE,
        "event": event,
    }


def other(event, context):
    return "other"
