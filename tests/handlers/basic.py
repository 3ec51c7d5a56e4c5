"""Handlers the end-to-end and differential tests run, under slipstream and awslambdaric alike."""

import asyncio
import decimal
import logging
import os
import sys

logger = logging.getLogger("basic")


def echo(event, context):
    return event


def context_fields(event, context):
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "tenant_id": getattr(context, "tenant_id", None),
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "client_context": repr(context.client_context),
        "remaining_positive": context.get_remaining_time_in_millis() > 0,
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "event_type": type(event).__name__,
    }


def raises(event, context):
    def inner():
        raise ValueError("bad input: ünïcode")

    inner()


def unserialisable(event, context):
    return {"when": {1, 2}}


def returns_bytes(event, context):
    return b"\x00\x01raw"


def returns_decimal(event, context):
    return {"d": decimal.Decimal("1.10"), "nan": float("nan"), "big": 2**70, "t": (1, 2), "u": "é✓"}


def returns_none(event, context):
    return None


def big_response(event, context):
    return "x" * (int(event["size"]) if isinstance(event, dict) else 7 * 1024 * 1024)


def logs_things(event, context):
    print("printed line")
    logger.warning("warned %s", "arg")
    logging.getLogger().error("root error", extra={"custom": 1})
    context.log("context log\n")
    sys.stderr.write("to stderr\n")
    return "logged"


async def async_echo(event, context):
    await asyncio.sleep(0.01)
    return {"async": event}


def exits(event, context):
    sys.exit(3)
