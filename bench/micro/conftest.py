"""Micro-benchmarks of slipstream's boundary code, run by `make bench-micro`, never by the test suite.

The log benchmarks need slipstream's logging set up as a runtime sets it up: JSON format, records framed onto the
telemetry fd (here /dev/null). `logs.setup()` reads the environment once per process, so it happens here, before
any benchmark runs; run with `-p no:logging` so pytest's own capture handler is not on the root logger too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "handlers"))

_NULL_FD = os.open(os.devnull, os.O_WRONLY)
os.environ["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
os.environ["_LAMBDA_TELEMETRY_LOG_FD"] = str(_NULL_FD)
os.environ.setdefault("AWS_LAMBDA_FUNCTION_NAME", "function")
os.environ.setdefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
os.environ.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
os.environ.setdefault("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/function")
os.environ.setdefault("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]0")

from slipstream import logs  # noqa: E402  (after the environment it reads)

logs.setup()


@pytest.fixture(autouse=True)
def _request() -> None:
    logs.set_request("8476a536-e9f4-11e8-9739-2dfe598c3fcd", None)
