"""slipstream's boundary code beside what awslambdaric does at the same points, where that can be called alone:
event decoding and result encoding (awslambdaric: simplejson through its marshaller), context construction, log
records and error documents."""

from __future__ import annotations

import logging
import time
from typing import Any

import payloads
import pytest
from awslambdaric import lambda_context as ric_context
from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller

from slipstream import _native, errors, logs
from slipstream.context import LambdaContext

SMALL = {"message": "hello", "id": 42, "flags": [True, False, None], "nested": {"a": 1.5, "b": "x" * 40}}
LARGE = payloads.document(1 << 20)
EVENTS = {"small": payloads.encode(SMALL), "1mb": payloads.encode(LARGE)}
VALUES = {"small": SMALL, "1mb": LARGE}
MARSHALLER = LambdaMarshaller()
REQUEST_ID = "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:function"
CLIENT_CONTEXT = {"client": {"installation_id": "i", "app_title": "t"}, "custom": {"k": "v"}, "env": {"e": "1"}}
IDENTITY = {"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}


@pytest.mark.parametrize("size", ["small", "1mb"])
@pytest.mark.parametrize("implementation", ["slipstream", "awslambdaric"])
def test_decode_event(benchmark: Any, implementation: str, size: str) -> None:
    benchmark.group = f"decode event ({size})"
    decode = _native.loads if implementation == "slipstream" else MARSHALLER.unmarshal_request
    assert benchmark(decode, EVENTS[size]) == VALUES[size]


@pytest.mark.parametrize("size", ["small", "1mb"])
@pytest.mark.parametrize("implementation", ["slipstream", "awslambdaric"])
def test_encode_result(benchmark: Any, implementation: str, size: str) -> None:
    benchmark.group = f"encode result ({size})"
    if implementation == "slipstream":
        encoded = benchmark(_native.dumps, VALUES[size], True)
    else:
        encoded = benchmark(lambda value: MARSHALLER.marshal_response(value)[0], VALUES[size]).encode()
    assert encoded == EVENTS[size]


@pytest.mark.parametrize("implementation", ["slipstream", "awslambdaric"])
def test_build_context(benchmark: Any, implementation: str) -> None:
    benchmark.group = "build context"
    build = LambdaContext if implementation == "slipstream" else ric_context.LambdaContext
    deadline = int(time.time() * 1000) + 60_000
    context = benchmark(build, REQUEST_ID, CLIENT_CONTEXT, IDENTITY, deadline, ARN, None)
    assert context.client_context.client.installation_id == "i"


def test_log_record_json(benchmark: Any) -> None:
    """A `logger.info` with an argument, formatted as awslambdaric's JSON record and framed onto the fd."""
    benchmark.group = "log record"
    handlers = [type(handler).__name__ for handler in logging.getLogger().handlers]
    assert handlers == ["LambdaLoggerHandlerWithFrameType"], handlers
    logger = logging.getLogger("bench")
    logger.setLevel(logging.INFO)
    benchmark(logger.info, "processed %s records", 42)


def test_log_uncaught_error(benchmark: Any) -> None:
    benchmark.group = "log record"
    error = errors.make_error("bad input", "ValueError", ['  File "app.py", line 3, in handler\n'], REQUEST_ID)
    benchmark(logs.log_uncaught_error, error)


def _raise() -> None:
    raise ValueError("bad input: ünïcode")


def test_error_document(benchmark: Any) -> None:
    """The error document and X-Ray cause for a handler exception, encoded as they are posted."""
    benchmark.group = "error document"
    try:
        _raise()
    except ValueError as exc:
        raised = exc

    def build() -> tuple[bytes, str]:
        error, cause = errors.error_from_exception(raised, REQUEST_ID)
        return errors.encode(error), errors.encode_xray_cause(cause)

    document, cause = benchmark(build)
    assert b'"errorType": "ValueError"' in document and cause
