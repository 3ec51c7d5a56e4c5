"""The runtime: init, then the invocation loop, over the Rust Runtime API client.

Everything on the path of a plain handler is imported at most once and only when needed: a cold start pays for the
interpreter, this module, the native core and the user's code. asyncio is imported only for `async def` handlers,
`errors` only when something failed, `logging` only when user code imports it (see `logs`).
"""

from __future__ import annotations

import os
import sys

from slipstream import _native, logs, preload
from slipstream.context import LambdaContext
from slipstream.handler import is_async, load_handler

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from slipstream.handler import Handler

_TRACE_ENV = "_X_AMZN_TRACE_ID"
# Results that are encoded as one document: checked first so a plain handler never imports `streaming`.
_DOCUMENT_TYPES = frozenset({dict, list, str, bytes, int, float, bool, type(None), tuple})
_EXIT_INIT_ERROR = 1
_EXIT_BEFORE_SNAPSHOT = 64
_EXIT_AFTER_RESTORE = 65


class Shutdown(BaseException):
    """Raised out of a pending `/next` when SIGTERM arrives: a clean exit, after the user's own handler ran."""


def user_agent() -> str:
    return f"aws-lambda-python/{sys.version.split()[0]}-slipstream/{_native.__version__}"


class Runtime:
    """One execution environment's runtime: a client, a handler and the loop between them."""

    # Whether an `async def` handler gets its own event loop (a Managed Instances slot shares one instead).
    creates_loop = True

    def __init__(self, client: _native.RuntimeClient, handler: Handler) -> None:
        self.client = client
        self.handler = handler
        self.ensure_ascii = _ensure_ascii()
        self.in_invocation = False
        self.shutdown_requested = False
        self.streams_to_argument = getattr(handler, "__slipstream_stream_response__", False)
        self._loop: Any = None
        if self.creates_loop and is_async(handler):
            # Created during init, not on the first invocation: importing asyncio alone takes tens of ms.
            self._loop = new_event_loop()

    def run_forever(self) -> NoReturn:
        client = self.client
        while True:
            invocation = client.next()
            self.in_invocation = True
            try:
                self.handle(invocation)
            finally:
                self.in_invocation = False
            if self.shutdown_requested:
                raise Shutdown

    def handle(self, invocation: _native.Invocation) -> None:
        """Runs one invocation to its end: a response, a stream or an error reaches the Runtime API."""
        try:
            event, context = self.begin(invocation)
            if self.streams_to_argument:
                self.stream(invocation, lambda stream: self._await(self.handler(event, stream, context)))
                return
            result = self.handler(event, context)
            if self._loop is not None or _is_awaitable(result):
                result = self._await(result)
            self.complete(invocation, result)
        except Exception as exc:
            self.report_error(invocation, exc)
        except SystemExit as exc:
            # awslambdaric dies here without answering; answer first so the caller sees why, then exit as asked.
            self.report_error(invocation, exc)
            raise

    def begin(self, invocation: _native.Invocation) -> tuple[Any, LambdaContext]:
        """Makes the invocation current (logs, trace id) and builds the handler's arguments."""
        logs.set_request(invocation.request_id, invocation.tenant_id)
        self.set_trace_id(invocation.trace_id)
        context = _make_context(invocation)
        try:
            event = invocation.event()
        except ValueError as exc:
            raise _fault("UNMARSHAL_ERROR", f"Unable to unmarshal input: {exc}") from None
        return event, context

    def set_trace_id(self, trace_id: str | None) -> None:
        if trace_id is None:
            os.environ.pop(_TRACE_ENV, None)
        else:
            os.environ[_TRACE_ENV] = trace_id

    def complete(self, invocation: _native.Invocation, result: Any) -> None:
        """Sends a handler's result: streamed when it is a stream, otherwise encoded as one document."""
        if type(result) not in _DOCUMENT_TYPES:
            from slipstream import streaming

            if streaming.is_streamed_result(result):
                self.stream(invocation, lambda stream: streaming.send(stream, result, self._await))
                return
        try:
            status, body = self.client.post_response(
                invocation.request_id, invocation.invocation_id, result, self.ensure_ascii
            )
        except _native.MarshalError as exc:
            raise _fault("MARSHAL_ERROR", f"Unable to marshal response: {exc}") from None
        if status >= 300:
            self.rejected_response(invocation, status, body)

    def stream(self, invocation: _native.Invocation, produce: Any) -> None:
        from slipstream import streaming

        stream = streaming.ResponseStream(self.client, invocation.request_id, invocation.invocation_id)
        streaming.run(stream, lambda: produce(stream), lambda exc: self.report_error(invocation, exc))

    def report_error(self, invocation: _native.Invocation, exc: BaseException) -> None:
        from slipstream import errors

        error, cause = errors.error_from_exception(exc, invocation.request_id)
        logs.log_uncaught_error(error)
        status, body = self.client.post_error(
            invocation.request_id, invocation.invocation_id, errors.encode(error), errors.encode_xray_cause(cause)
        )
        if status >= 300:
            logs.diag(f"Runtime API rejected the error report ({status}): {body}", invocation.request_id)

    def rejected_response(self, invocation: _native.Invocation, status: int, body: str) -> None:
        request_id = invocation.request_id
        if status == 413:
            # awslambdaric exits on a 413; the invocation gets a clean error instead and the runtime goes on.
            from slipstream import errors

            logs.diag(
                "response too large for the Runtime API (413), reporting Function.ResponseSizeTooLarge", request_id
            )
            message = "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
            self.report_error(invocation, errors.FaultException(errors.RESPONSE_SIZE_TOO_LARGE, message))
        elif status == 410:
            logs.diag("response arrived after the invocation timed out (410); continuing", request_id)
        else:
            logs.diag(f"Runtime API rejected the response ({status}): {body}", request_id)

    def _await(self, result: Any) -> Any:
        if self._loop is None:
            self._loop = new_event_loop()
        if not _is_awaitable(result):
            return result
        return self._loop.run_until_complete(result)


def _is_awaitable(value: object) -> bool:
    return hasattr(type(value), "__await__")


def new_event_loop() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        import asyncio

        return asyncio.new_event_loop()


def _ensure_ascii() -> bool:
    return os.environ.get("AWS_EXECUTION_ENV") not in {
        "AWS_Lambda_python3.12",
        "AWS_Lambda_python3.13",
        "AWS_Lambda_python3.14",
        "AWS_Lambda_python3.15",
    }


def _make_context(invocation: _native.Invocation) -> LambdaContext:
    client_context = _parse_header(invocation.client_context, "Unable to parse Client Context JSON")
    cognito_identity = _parse_header(invocation.cognito_identity, "Unable to parse Cognito Identity JSON")
    return LambdaContext(
        invocation.request_id,
        client_context,
        cognito_identity,
        invocation.deadline_ms,
        # awslambdaric's C++ client gives "" for a missing ARN header (other missing headers are None).
        invocation.invoked_function_arn or "",
        invocation.tenant_id,
    )


def _parse_header(value: str | None, what: str) -> Any:
    if value is None:
        return None
    # awslambdaric reads these headers with the standard library's json, not with the event's simplejson rules: NaN
    # is accepted and errors are worded as json words them. Only invocations that carry such a header import it.
    import json

    try:
        return json.loads(value)
    except Exception as exc:
        raise _fault("CONTEXT_UNMARSHAL_ERROR", f"{what}: {exc}") from None


def _fault(kind: str, message: str) -> Exception:
    from slipstream import errors

    return errors.FaultException(getattr(errors, kind), message)


def _init_error(client: _native.RuntimeClient, exc: BaseException, error_type: str | None = None) -> None:
    """Logs an init failure as awslambdaric does and posts it to `/init/error`.

    A failed before-snapshot hook (`error_type` given) is logged without the `LAMBDA_WARNING` hint, as there.
    """
    from slipstream import errors

    error, _ = errors.error_from_exception(exc, "")
    if error_type is None:
        logs.log_init_warning()
    logs.log_uncaught_error(error)
    status, body = client.post_init_error(error_type or error["errorType"], errors.encode(error))
    if status >= 300 and status != 403:
        logs.diag(f"Runtime API rejected the init error ({status}): {body}")


def _snap_start(client: _native.RuntimeClient) -> int | None:
    """The SnapStart sequence: before-snapshot hooks (last registered first), `/restore/next`, after-restore hooks
    (first registered first). Returns an exit code when it failed."""
    from slipstream import errors

    try:
        before, after = _snapshot_hooks()
        while before:
            function, args, kwargs = before.pop()
            function(*args, **kwargs)
        status, body = client.restore_next()
        if status != 200:
            raise _native.RuntimeApiError(f"restore/next answered HTTP {status}: {body}")
    except Exception as exc:
        _init_error(client, exc, errors.BEFORE_SNAPSHOT_ERROR)
        return _EXIT_BEFORE_SNAPSHOT

    try:
        # Every environment restored from one Lambda snapshot would otherwise draw the same random numbers.
        preload.reseed()
        for function, args, kwargs in after:
            function(*args, **kwargs)
    except Exception as exc:
        error, _ = errors.error_from_exception(exc, "")
        logs.log_uncaught_error(error)
        client.post_restore_error(errors.AFTER_RESTORE_ERROR, errors.encode(error))
        return _EXIT_AFTER_RESTORE
    return None


def _snapshot_hooks() -> tuple[list[Any], list[Any]]:
    try:
        import snapshot_restore_py
    except ImportError:
        # Hooks can only be registered through that package: without it there are none.
        return [], []
    return snapshot_restore_py.get_before_snapshot(), snapshot_restore_py.get_after_restore()


def install_sigterm(runtime: Runtime) -> int:
    """SIGTERM ends a pending `/next` at once (awslambdaric cannot: issue #105 there): the interpreter's C handler
    writes to the wake-up pipe the core polls beside the socket. A handler the user registered runs first."""
    import _signal

    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    _signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = _signal.getsignal(_signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if callable(previous):
            previous(signum, frame)
        if runtime.in_invocation:
            runtime.shutdown_requested = True
        else:
            raise Shutdown

    _signal.signal(_signal.SIGTERM, on_sigterm)
    return read_fd


def main(argv: list[str]) -> int:
    """`python -m slipstream module.handler`: returns the process exit code."""
    if len(argv) < 2 or not argv[1]:
        sys.stderr.write("usage: python -m slipstream <module.function>\n(the handler is not set)\n")
        return 2
    handler_name = argv[1]
    logs.setup()

    max_concurrency = os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY")
    if max_concurrency:
        from slipstream import concurrency

        try:
            count = concurrency.parse_max_concurrency(max_concurrency)
        except ValueError as exc:
            logs.diag(str(exc))
            return 1
        return concurrency.run(handler_name, count)

    try:
        client = _native.RuntimeClient(user_agent())
    except _native.ConfigurationError as exc:
        logs.diag(str(exc))
        return 1

    # Modules come from the function's snapshot, when it has one (`slipstream snapshot`), until init is over.
    preload.install(handler_name)
    try:
        handler = load_handler(handler_name)
    except Exception as exc:
        preload.finish(initialised=False)
        return report_init_failure(client, exc)
    preload.finish()

    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        code = _snap_start(client)
        if code is not None:
            return code

    runtime = Runtime(client, handler)
    client.set_wakeup_fd(install_sigterm(runtime))
    try:
        runtime.run_forever()
    except Shutdown:
        logs.diag("SIGTERM received, exiting")
        return 0
    except _native.RuntimeApiError as exc:
        logs.diag(f"cannot continue: {exc}")
        return 1


def report_init_failure(client: _native.RuntimeClient, exc: Exception) -> int:
    try:
        _init_error(client, exc)
    except _native.RuntimeApiError as api_exc:
        logs.diag(f"cannot report the init error: {api_exc}")
    return _EXIT_INIT_ERROR
