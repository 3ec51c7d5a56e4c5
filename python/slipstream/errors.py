"""Error documents posted to the Runtime API, shaped exactly as awslambdaric shapes them.

Only imported when something failed, so nothing here is paid on a cold start that succeeds.
"""

from __future__ import annotations

import linecache
import os

from slipstream import _native

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

# The errorType values the runtime itself reports.
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
MARSHAL_ERROR = "Runtime.MarshalError"
CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"
BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"
RESPONSE_SIZE_TOO_LARGE = "Function.ResponseSizeTooLarge"

# X-Ray's exception type for the runtime's own faults, as awslambdaric reports them.
XRAY_FAULT_TYPE = "LambdaValidationError"
# awslambdaric sends the X-Ray cause header empty from this size on.
XRAY_CAUSE_LIMIT = 1024 * 1024

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

Frame = tuple[str, int, str, str | None]


class FaultException(Exception):
    """A failure the runtime reports under a `Runtime.*` error type rather than an exception's class name."""

    def __init__(self, exception_type: str, msg: str, trace: list[str] | None = None) -> None:
        super().__init__(msg)
        self.exception_type = exception_type
        self.msg = msg
        self.trace = trace


def extract_frames(tb: TracebackType | None) -> list[Frame]:
    """`(path, line, function, source)` per frame, with the runtime's own leading frames dropped."""
    frames: list[Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        path = code.co_filename
        line = tb.tb_lineno
        source = linecache.getline(path, line, tb.tb_frame.f_globals).strip() or None
        frames.append((path, line, code.co_name, source))
        tb = tb.tb_next
    start = 0
    while start < len(frames) and os.path.dirname(os.path.abspath(frames[start][0])) == _PACKAGE_DIR:
        start += 1
    return frames[start:]


def format_frames(frames: list[Frame]) -> list[str]:
    """The stackTrace strings: `traceback.format_list`'s layout, one whole frame per string."""
    lines = []
    for path, line, function, source in frames:
        text = f'  File "{path}", line {line}, in {function}\n'
        if source:
            text += f"    {source}\n"
        lines.append(text)
    return lines


def make_error(message: str, error_type: str, stack_trace: list[str] | None, request_id: str) -> dict[str, Any]:
    return {
        "errorMessage": message if message else "",
        "errorType": error_type if error_type else "",
        "requestId": request_id,
        "stackTrace": stack_trace if stack_trace else [],
    }


def error_from_exception(exc: BaseException, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The error document and X-Ray cause for an exception raised by user code (or a `FaultException`)."""
    if isinstance(exc, FaultException):
        error = make_error(exc.msg, exc.exception_type, exc.trace, request_id)
        return error, make_xray_cause(XRAY_FAULT_TYPE, exc.msg, [])
    frames = extract_frames(exc.__traceback__)
    error = make_error(str(exc), type(exc).__name__, format_frames(frames), request_id)
    return error, make_xray_cause(type(exc).__name__, str(exc), frames)


def make_xray_cause(error_type: str, message: str, frames: list[Frame]) -> dict[str, Any]:
    return {
        "working_directory": os.getcwd(),
        "exceptions": [
            {
                "message": message,
                "type": error_type,
                "stack": [{"label": function, "path": path, "line": line} for path, line, function, _ in frames],
            }
        ],
        "paths": list(dict.fromkeys(path for path, _, _, _ in frames)),
    }


def ensure_ascii() -> bool:
    """awslambdaric writes real UTF-8 only on the managed python3.12+ runtimes; it escapes everywhere else."""
    return os.environ.get("AWS_EXECUTION_ENV") not in {
        "AWS_Lambda_python3.12",
        "AWS_Lambda_python3.13",
        "AWS_Lambda_python3.14",
        "AWS_Lambda_python3.15",
    }


def encode(document: dict[str, Any]) -> bytes:
    return _native.dumps(document, ensure_ascii())


def encode_xray_cause(cause: dict[str, Any]) -> str:
    text = encode(cause).decode()
    return "" if len(text) >= XRAY_CAUSE_LIMIT else text
