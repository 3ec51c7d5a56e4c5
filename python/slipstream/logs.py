"""A function's logs as awslambdaric 4.2.2 writes them: formats, sinks and framing, byte for byte.

Two sinks, as awslambdaric has them: the telemetry fd named by `_LAMBDA_TELEMETRY_LOG_FD`, where
each record is one frame (a 16-byte big-endian header, then the UTF-8 payload), or `sys.stdout`.

Start-up cost decides the shape of this module. Importing `logging` costs 11-14 ms and `json` about
9 ms, more than the whole cold-start budget, so neither is imported here at module level. The root
logger is configured the moment user code first imports `logging` (a one-shot `sys.meta_path`
hook), and `json` is imported when a JSON record is first written. The runtime's own records
(uncaught errors, the init warning, `context.log`) are formatted here, so they never need `logging`.
"""

import io
import os
import sys
import time

# `contextvars` only re-exports this builtin module; importing it directly saves its ~0.15 ms.
from _contextvars import ContextVar

# mypy treats any name TYPE_CHECKING as true; `typing` itself costs milliseconds to import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from importlib.abc import Loader as _LoaderBase
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import TextIO
else:
    _LoaderBase = object

_TEXT_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_TEXT_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# awslambdaric's JSON timestamps have whole seconds only (its issue #156).
_JSON_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# Indexed by `_level_index`: awslambdaric names and frames every level by the standard level at or
# below it.
_LEVEL_NAMES = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_WARNING = 3
_ERROR = 4


def _frame_types(base: int) -> tuple[bytes, ...]:
    # Frame type = 0xA55A0000 | level << 2 | 0b10 | text bit; levels 2..6 are DEBUG..FATAL
    # (runtime-api.md §6.1).
    return tuple((base | level << 2).to_bytes(4, "big") for level in (0, 2, 3, 4, 5, 6))


_TEXT_FRAMES = _frame_types(0xA55A0003)
_JSON_FRAMES = _frame_types(0xA55A0002)
_UNTAGGED = _TEXT_FRAMES[0]

# The level names `AWS_LAMBDA_LOG_LEVEL` may hold: Python's, before user code adds any.
_LEVELS = {
    "CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARN": 30, "WARNING": 30,
    "INFO": 20, "DEBUG": 10, "NOTSET": 0,
}  # fmt: skip

# Record attributes that never become JSON keys. `asctime`, `taskName` and `tenantId` are absent on
# purpose: awslambdaric 4.2.2 copies them when a record carries them.
_RESERVED = frozenset(
    (
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process", "message",
        "aws_request_id", "tenant_id", "_frame_type", "timestamp", "level", "logger",
        "stackTrace", "errorType", "errorMessage", "requestId", "location",
    )
)  # fmt: skip

# awslambdaric's text, trailing carriage return included, logged before each init error report.
_INIT_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function "
    "code. However, in rare cases, a Lambda runtime update can cause unexpected function "
    "behavior. For functions using managed runtimes, runtime updates can be triggered by a "
    "function change, or can be applied automatically. To determine if the runtime has been "
    "updated, check the runtime version in the INIT_START log entry. If this error correlates "
    "with a change in the runtime version, you may be able to mitigate this error by "
    "temporarily rolling back to the previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html\r"
)

# awslambdaric's warning on a preview runtime (its AWS_EXECUTION_ENV values), with the docs host for the region.
_PREVIEW_RUNTIMES = frozenset({"AWS_Lambda_python3.15"})
_PREVIEW_WARNING = (
    "LAMBDA_WARNING: This is a preview runtime version and should not be used for production workloads. "
    "For further information and to provide feedback, see https://%s/lambda/latest/dg/lambda-runtimes.html\r"
)

# Settings read once by `setup`.
_json_format = False
# awslambdaric's rule: frames carry the record's level in JSON, and in text once
# AWS_LAMBDA_LOG_LEVEL is set.
_tagged = False
_root_level: int | None = None
_fd = -1
_ready = False
_hook: "_LoggingHook | None" = None

# (request id, tenant id, name of the asyncio task that started the invocation). A context variable
# keeps concurrent invocations apart; threads user code starts have an empty context and see the
# latest invocation, as they do under awslambdaric's process-wide globals.
_latest: tuple[str, str | None, str | None] = ("", None, None)
_request: ContextVar[tuple[str, str | None, str | None]] = ContextVar("slipstream_request")
# Off when invocations share a process (Managed Instances, `async def`): there the latest invocation
# is often another one, so a thread without a context gets no request id rather than a wrong one.
_share_latest = True
# From 3.12 records carry the running asyncio task's name, and awslambdaric copies it into JSON.
_TASK_NAMES = sys.version_info >= (3, 12)


def setup() -> None:
    """Reads the log settings, opens the telemetry fd, unbuffers stdout/stderr, arranges logging."""
    global _json_format, _tagged, _root_level, _fd, _ready, _hook
    if _ready:
        return
    _ready = True
    environ = os.environ
    _json_format = environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON"
    level = environ.get("AWS_LAMBDA_LOG_LEVEL", "")
    _tagged = _json_format or bool(level)
    # TRACE is matched before upper-casing: awslambdaric ignores `trace`, and so does this.
    _root_level = _LEVELS.get("DEBUG" if level == "TRACE" else level.upper())

    # Removed, as awslambdaric does, so that processes user code starts write no frames.
    fd = environ.pop("_LAMBDA_TELEMETRY_LOG_FD", None)
    if fd is not None:
        try:
            number = int(fd)
            os.fstat(number)
            _fd = number
        except (ValueError, OSError) as exc:
            # awslambdaric dies with a traceback here; logging to stdout keeps the function's logs.
            diag(f"cannot use _LAMBDA_TELEMETRY_LOG_FD={fd!r} ({exc}); logging to stdout")

    sys.stdout = _unbuffered(sys.stdout)
    sys.stderr = _unbuffered(sys.stderr)

    if "logging" in sys.modules:
        _configure_logging()
    else:
        _hook = _LoggingHook()
        sys.meta_path.insert(0, _hook)

    _preview_warning(environ)


def set_request(request_id: str, tenant_id: str | None) -> None:
    """Makes an invocation current for this context's records, and for threads without a context.

    Call it from inside the invocation's asyncio task, if it has one: on Python 3.12+ that task's
    name is then kept out of JSON records, as no task runs user code under awslambdaric.
    """
    global _latest
    current = (request_id, tenant_id, _current_task_name() if _TASK_NAMES else None)
    if _share_latest:
        _latest = current
    _request.set(current)
    if _hook is not None and "logging" in sys.modules:
        # Something imported logging without the hook seeing it (a finder ahead of it on
        # sys.meta_path).
        _configure_logging()


def log_uncaught_error(error: dict[str, object]) -> None:
    """Writes the record awslambdaric writes before it reports an error to the Runtime API."""
    if _json_format:
        timestamp = time.strftime(_JSON_DATE_FORMAT, time.gmtime())
        document = {"timestamp": timestamp, "level": "ERROR", **error}
        # Unlike log records this is ASCII-escaped, and a frame of it carries no newline.
        payload = _json().dumps(document)
        _write(payload if _fd >= 0 else payload + "\n", _JSON_FRAMES[_ERROR])
        return

    parts = (error.get("errorType"), error.get("errorMessage"))
    summary = ": ".join(str(part) for part in parts if part)
    lines = ["[ERROR] " + summary if summary else "[ERROR]"]
    stack = error.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for frame in stack if isinstance(stack, list) else ():
            for line in str(frame).splitlines():
                # No-break spaces keep the indentation, which CloudWatch would otherwise trim.
                code = line.lstrip(" ")
                lines.append("\u00a0" * (len(line) - len(code)) + code)
    if _fd >= 0:
        _write("\n".join(lines), _TEXT_FRAMES[_ERROR])
    else:
        # CloudWatch splits stdout at newlines; carriage returns keep the error in one event.
        sys.stdout.write("\r".join(lines) + "\n")


def log_init_warning() -> None:
    """Logs the `LAMBDA_WARNING` hint before an init error, as awslambdaric's `logging.warning`."""
    _root_warning(_INIT_WARNING)


def _preview_warning(environ: "os._Environ[str]") -> None:
    """awslambdaric's warning on a preview runtime, logged once logging is set up and before the handler loads."""
    if environ.get("AWS_EXECUTION_ENV") not in _PREVIEW_RUNTIMES or environ.get("LAMBDA_DISABLE_PREVIEW_WARN"):
        return
    china = environ.get("AWS_REGION", "").startswith("cn-")
    _root_warning(_PREVIEW_WARNING % ("docs.amazonaws.cn" if china else "docs.aws.amazon.com"))


def _root_warning(message: str) -> None:
    """`logging.warning(message)` on the root logger as awslambdaric sets it up, without importing logging."""
    if "logging" in sys.modules:
        # User code may have changed levels, handlers or formats: honour them, as awslambdaric does.
        if _hook is not None:
            _configure_logging()
        import logging

        logging.warning(message)
        return
    # Without user code touching logging the root logger is exactly as setup left it.
    if _root_level is not None and _root_level > 30:
        return
    created = time.time()
    request_id, tenant_id, _ = _current()
    if _json_format:
        timestamp = time.strftime(_JSON_DATE_FORMAT, time.gmtime(created))
        payload = _json_record(timestamp, _WARNING, message, "root", request_id, tenant_id)
        _write(payload, _JSON_FRAMES[_WARNING])
        return
    fields = {
        "levelname": "WARNING",
        "asctime": time.strftime(_TEXT_DATE_FORMAT, time.gmtime(created)),
        "msecs": int((created - int(created)) * 1000),
        "aws_request_id": request_id,
        "message": message,
    }
    _write(_TEXT_FORMAT % fields, _TEXT_FRAMES[_WARNING] if _tagged else _UNTAGGED)


def isolate_requests() -> None:
    """From now on several invocations run at once in this process: see `_share_latest`."""
    global _share_latest, _latest
    _share_latest = False
    _latest = ("", None, None)


def log_debug(message: object) -> None:
    """`logging.getLogger().debug(message)`, without importing `logging` when user code has not."""
    if "logging" in sys.modules:
        if _hook is not None:
            _configure_logging()
        import logging

        logging.getLogger().debug(message)
        return
    # Python's root logger starts at WARNING: only AWS_LAMBDA_LOG_LEVEL lets a DEBUG record through.
    if _root_level is None or _root_level > 10:
        return
    created = time.time()
    request_id, tenant_id, _ = _current()
    if _json_format:
        timestamp = time.strftime(_JSON_DATE_FORMAT, time.gmtime(created))
        payload = _json_record(timestamp, 1, message, "root", request_id, tenant_id)
        _write(payload, _JSON_FRAMES[1])
        return
    fields = {
        "levelname": "DEBUG",
        "asctime": time.strftime(_TEXT_DATE_FORMAT, time.gmtime(created)),
        "msecs": int((created - int(created)) * 1000),
        "aws_request_id": request_id,
        "message": message,
    }
    _write(_TEXT_FORMAT % fields, _TEXT_FRAMES[1] if _tagged else _UNTAGGED)


def context_log(message: str) -> None:
    """What `LambdaContext.log` writes: the message as it is, untagged text even in JSON mode."""
    _write(message, _UNTAGGED)


def diag(message: str, request_id: str | None = None) -> None:
    """The runtime's own one-line diagnostics, written to fd 2 past any redirected `sys.stderr`."""
    prefix = "slipstream: " if request_id is None else f"slipstream: [{request_id}] "
    line = prefix + " ".join(message.splitlines()) + "\n"
    try:
        _write_all(2, line.encode("utf-8", "backslashreplace"))
    except OSError:
        pass  # with fd 2 closed there is nowhere to say it; a diagnostic must not stop the runtime


def _current() -> tuple[str, str | None, str | None]:
    return _request.get(_latest)


def _current_task_name() -> str | None:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return None
    name: str = task.get_name()
    return name


def _level_index(levelno: int) -> int:
    return 0 if levelno < 10 else min(levelno // 10, 5)


def _write(payload: str, frame_type: bytes) -> None:
    if _fd < 0:
        # Looked up on each write: awslambdaric's stdout sink follows `redirect_stdout` too.
        sys.stdout.write(payload)
        return
    data = payload.encode("utf-8")
    header = frame_type + len(data).to_bytes(4, "big") + (time.time_ns() // 1000).to_bytes(8, "big")
    _write_all(_fd, header + data)


def _write_all(fd: int, data: bytes) -> None:
    # One write(2) per frame keeps frames whole; the loop only matters if a signal interrupts a
    # large write.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unbuffered(stream: "TextIO | None") -> "TextIO | None":
    """A stream on the same fd whose every write is one write(2), as awslambdaric's wrapper does.

    It is built the way `python -u` builds sys.stdout: write-through text over an unbuffered FileIO,
    so writes to `sys.stdout.buffer` reach the fd at once too.
    """
    if stream is None:
        return None
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    raw = io.FileIO(fd, "w", closefd=False)
    raw.name = stream.name
    encoding, errors = stream.encoding, stream.errors
    text = io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="\n", write_through=True)
    # Read-only in the stub; CPython sets it on its own stdio streams the same way.
    text.mode = "w"  # type: ignore[misc]
    return text


def _json() -> "ModuleType":
    import json

    return json


def _json_record(
    timestamp: str,
    level: int,
    message: object,
    logger: str,
    request_id: object,
    tenant_id: object,
    exception: "tuple[list[str], str, str] | None" = None,
    location: str | None = None,
    extras: "Iterable[tuple[str, object]]" = (),
) -> str:
    """One JSON record in awslambdaric's key order, with None-valued keys left out."""
    document: dict[str, object] = {
        "timestamp": timestamp,
        "level": _LEVEL_NAMES[level],
        "message": message,
        "logger": logger,
    }
    if exception is not None:
        document["stackTrace"], document["errorType"], document["errorMessage"] = exception
    if request_id is not None:
        document["requestId"] = request_id
    if location is not None:
        document["location"] = location
    if tenant_id is not None:
        document["tenantId"] = tenant_id
    for key, value in extras:
        if value is not None and key not in document:
            document[key] = value
    return str(_json().dumps(document, ensure_ascii=False, default=str)) + "\n"


class _LoggingHook:
    """A one-shot `sys.meta_path` finder: configures `logging` right after its body has run."""

    def __init__(self) -> None:
        self.searching = False

    def find_spec(
        self, fullname: str, path: "Sequence[str] | None", target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        if fullname != "logging" or self.searching:
            return None
        # The finders after this one find the module exactly as the import system would have.
        self.searching = True
        spec = None
        try:
            for finder in sys.meta_path:
                find_spec = None if finder is self else getattr(finder, "find_spec", None)
                spec = None if find_spec is None else find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self.searching = False
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ConfiguringLoader(spec.loader)
        return spec


class _ConfiguringLoader(_LoaderBase):
    """Wraps the loader that `logging` was found with, until that loader has run the module."""

    def __init__(self, loader: "_LoaderBase") -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> object:
        # Code inspecting the spec before the import (get_source, resources) sees the real loader.
        if name == "loader":
            raise AttributeError(name)  # not set yet, as in a copy: no endless recursion
        return getattr(self.loader, name)

    def create_module(self, spec: "ModuleSpec") -> "ModuleType | None":
        create_module = getattr(self.loader, "create_module", None)
        return None if create_module is None else create_module(spec)

    def exec_module(self, module: "ModuleType") -> None:
        # The module keeps the real loader (get_source, reloads): this one is only a trigger.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        if _hook is None:
            return  # configured already, through a path that did not need this hook
        try:
            _configure_logging()
        except Exception as exc:
            # A failure here must not fail the user's `import logging`.
            diag(f"cannot configure logging: {type(exc).__name__}: {exc}")


def _configure_logging() -> None:
    """Gives the root logger awslambdaric's handler, filter, formatter and level; UTC everywhere."""
    global _hook
    if _hook is not None:
        if _hook in sys.meta_path:
            sys.meta_path.remove(_hook)
        _hook = None
    import logging

    # Class names are awslambdaric's: libraries such as Datadog's find the runtime's handler by its
    # class name.
    class LambdaLoggerFilter(logging.Filter):
        __qualname__ = "LambdaLoggerFilter"

        def filter(self, record: logging.LogRecord) -> bool:
            request_id, tenant_id, _ = _current()
            record.__dict__.update(aws_request_id=request_id, tenant_id=tenant_id)
            return True

    class LambdaLoggerHandler(logging.Handler):
        __qualname__ = "LambdaLoggerHandler"

        # NOTE: neither handler calls handleError: awslambdaric lets a failing record raise.
        def emit(self, record: logging.LogRecord) -> None:
            _write(self.format(record), _UNTAGGED)

    class LambdaLoggerHandlerWithFrameType(logging.Handler):
        __qualname__ = "LambdaLoggerHandlerWithFrameType"

        def emit(self, record: logging.LogRecord) -> None:
            payload = self.format(record)
            # The JSON formatter leaves its frame type on the record; any other formatter gets the
            # text type.
            frame_type = record.__dict__.get("_frame_type")
            _write(payload, frame_type or _TEXT_FRAMES[_level_index(record.levelno)])

    class JsonFormatter(logging.Formatter):
        __qualname__ = "JsonFormatter"

        def __init__(self) -> None:
            super().__init__(datefmt=_JSON_DATE_FORMAT)

        def format(self, record: logging.LogRecord) -> str:
            level = _level_index(record.levelno)
            record.__dict__["_frame_type"] = _JSON_FRAMES[level]
            # A dict logged without arguments stays a JSON object (awslambdaric 4.2).
            message = record.msg
            if not isinstance(message, dict) or record.args:
                message = record.getMessage()
            exception = location = None
            if record.exc_info:
                import traceback

                error_type, error, tb = record.exc_info
                stack = traceback.format_tb(tb)
                # exc_info=True outside an except clause raises AttributeError, as in awslambdaric.
                exception = (stack, error_type.__name__, str(error))  # type: ignore[union-attr]
                location = f"{record.pathname}:{record.funcName}:{record.lineno}"
            invocation_task = _current()[2]
            return _json_record(
                self.formatTime(record, self.datefmt),
                level,
                message,
                record.name,
                getattr(record, "aws_request_id", None),
                getattr(record, "tenant_id", None),
                exception,
                location,
                (
                    (key, value)
                    for key, value in record.__dict__.items()
                    if key not in _RESERVED and (key != "taskName" or value != invocation_task)
                ),
            )

    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandlerWithFrameType() if _tagged else LambdaLoggerHandler()
    if _json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT, _TEXT_DATE_FORMAT))
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    if _root_level is not None:
        root.setLevel(_root_level)
