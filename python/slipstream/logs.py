"""Interim log sink; replaced by the full awslambdaric-compatible logging layer."""

from __future__ import annotations

import sys

_request_id = ""


def setup() -> None:
    pass


def set_request(request_id: str, tenant_id: str | None) -> None:
    global _request_id
    _request_id = request_id


def log_uncaught_error(error: dict[str, object]) -> None:
    sys.stdout.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")


def log_init_warning() -> None:
    pass


def context_log(message: str) -> None:
    sys.stdout.write(message)


def diag(message: str, request_id: str | None = None) -> None:
    prefix = f"slipstream: [{request_id}] " if request_id else "slipstream: "
    sys.stderr.write(prefix + message + "\n")
