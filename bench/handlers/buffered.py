"""A large buffered response, built once at init and encoded again on every invocation."""

import os

import payloads

RESPONSE = payloads.document(int(os.environ.get("BENCH_RESPONSE_BYTES", "5000000")))


def handler(event, context):
    return RESPONSE
