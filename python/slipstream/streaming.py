"""Response streaming: what handlers return or write to, and how the runtime sends it.

Three ways to stream, all sent as they are produced, with memory bounded whatever the size:

- return a generator, an iterator or an async generator of `bytes`/`str` chunks;
- return `HttpResponse(body, status_code=..., headers=..., cookies=...)` to set a Function URL's status, headers and
  cookies before the body (the body being any of the above, or `bytes`/`str`);
- decorate the handler with `@stream_response` and write to the `ResponseStream` it receives as its second argument.

An exception before the first byte is reported as an ordinary invocation error; after it, as the
`Lambda-Runtime-Function-Error-Type`/`-Body` HTTP trailers that end the stream.
"""

from __future__ import annotations

from slipstream import _native, logs

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable
    from typing import Any, TypeVar

    Chunk = bytes | bytearray | str
    Body = Chunk | Iterable[Chunk] | AsyncIterable[Chunk]
    F = TypeVar("F", bound=Callable[..., Any])

HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Between a Function URL response's JSON prelude and its body.
_PRELUDE_DELIMITER = b"\0" * 8
# Marks a handler decorated with `stream_response`.
STREAMING_ATTRIBUTE = "__slipstream_stream_response__"


def stream_response(handler: F) -> F:
    """Marks `handler(event, response_stream, context)` as writing its response to a `ResponseStream`."""
    setattr(handler, STREAMING_ATTRIBUTE, True)
    return handler


class HttpResponse:
    """A Function URL / API Gateway streaming response: status code, headers and cookies, then the body."""

    __slots__ = ("body", "cookies", "headers", "status_code")

    def __init__(
        self,
        body: Body = b"",
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        cookies: list[str] | None = None,
    ) -> None:
        self.body = body
        self.status_code = status_code
        self.headers = headers or {}
        self.cookies = cookies or []


class ResponseStream:
    """The response of a `@stream_response` handler. The HTTP request starts with the first write, so the content
    type (or the HTTP prelude) can be set until then; an exception before any write is an ordinary error."""

    def __init__(self, client: _native.RuntimeClient, request_id: str, invocation_id: str | None) -> None:
        self._client = client
        self._request_id = request_id
        self._invocation_id = invocation_id
        self._content_type = DEFAULT_CONTENT_TYPE
        self._prelude: bytes | None = None
        self._native: _native.ResponseStream | None = None
        self._ended = False

    @property
    def request_id(self) -> str:
        return self._request_id

    @property
    def started(self) -> bool:
        """Whether any byte has been sent (after which errors travel as trailers)."""
        return self._native is not None

    @property
    def written(self) -> int:
        """Body bytes sent so far."""
        return 0 if self._native is None else self._native.written

    def set_content_type(self, content_type: str) -> None:
        """The `Content-Type` the caller sees; only before the first write."""
        self._check_not_started()
        self._content_type = content_type

    def start_http(
        self, status_code: int = 200, headers: dict[str, str] | None = None, cookies: list[str] | None = None
    ) -> None:
        """Gives a Function URL response its status code, headers and cookies; only before the first write."""
        self._check_not_started()
        self._content_type = HTTP_INTEGRATION_CONTENT_TYPE
        prelude = {"statusCode": status_code, "headers": headers or {}, "cookies": cookies or []}
        self._prelude = _native.dumps(prelude, False) + _PRELUDE_DELIMITER

    def write(self, chunk: Chunk) -> None:
        """Sends one chunk; blocks while the reader is slow, which keeps memory bounded."""
        stream = self._native
        if stream is None:
            stream = self._open()
        stream.write(chunk)

    async def awrite(self, chunk: Chunk) -> None:
        """`write` for `async def` handlers."""
        # TODO(#5): run writes off the event loop when several invocations share it, so one slow reader does not
        # stall the others; with one invocation per loop, as now, blocking here costs nothing.
        self.write(chunk)

    def close(self) -> None:
        """Ends the response. Returning from the handler does the same."""
        if self._ended:
            return
        if self._native is None:
            self._open()
        self._ended = True
        stream = self._native
        if stream is not None and not stream.closed:
            status, body = stream.finish()
            _check_reply(status, body, self._request_id)

    def fail(self, exc: BaseException) -> None:
        """Ends a started response with the error trailers for `exc` (and logs it, as every invocation error is)."""
        from slipstream import errors

        self._ended = True
        error, _ = errors.error_from_exception(exc, self._request_id)
        logs.log_uncaught_error(error)
        stream = self._native
        if stream is not None and not stream.closed:
            status, body = stream.fail(trailer_error_type(exc, error["errorType"]), errors.encode(error))
            _check_reply(status, body, self._request_id)

    def _check_not_started(self) -> None:
        if self._native is not None:
            raise RuntimeError("the response has started: content type and HTTP prelude must come first")

    def _open(self) -> _native.ResponseStream:
        if self._ended:
            raise _native.StreamClosed("the response stream was already ended")
        self._native = self._client.open_stream(self._request_id, self._invocation_id, self._content_type)
        if self._prelude is not None:
            self._native.write(self._prelude)
        return self._native


def trailer_error_type(exc: BaseException, error_type: str) -> str:
    """The trailer's `<Category.Reason>`: the runtime's own `Runtime.*`/`Function.*` types as they are, a user
    exception as `Function.<ClassName>` (RAPID records anything else as `Runtime.Unknown`)."""
    if error_type.startswith(("Runtime.", "Function.")):
        return error_type
    name = type(exc).__name__
    return f"Function.{name}" if name.isascii() and name.isalpha() and name[0].isupper() else "Function.Unknown"


def _check_reply(status: int, body: str, request_id: str) -> None:
    if status >= 300:
        logs.diag(f"Runtime API rejected the streamed response ({status}): {body}", request_id)


def is_streamed_result(result: object) -> bool:
    """Whether a handler's return value is to be streamed rather than encoded as one document."""
    kind = type(result)
    if kind is HttpResponse:
        return True
    if kind in (str, bytes, bytearray, dict, list, tuple):
        return False
    return hasattr(kind, "__next__") or hasattr(kind, "__anext__")


def send(stream: ResponseStream, result: Any, run_async: Callable[[Any], Any]) -> None:
    """Streams a handler's return value; exceptions while producing it end the stream as `run` decides."""
    body = result
    if type(result) is HttpResponse:
        stream.start_http(result.status_code, result.headers, result.cookies)
        body = result.body
    if isinstance(body, (bytes, bytearray, str)):
        stream.write(body)
    elif hasattr(type(body), "__anext__") or hasattr(type(body), "__aiter__"):
        run_async(send_async(stream, body))
    else:
        for chunk in body:
            stream.write(chunk)
    stream.close()


async def send_async(stream: ResponseStream, body: AsyncIterable[Chunk]) -> None:
    try:
        async for chunk in body:
            await stream.awrite(chunk)
    finally:
        # A write that failed (lost connection, size limit) leaves the generator suspended; left to the garbage
        # collector, its `finally` blocks would only run on the loop's next turn, during another invocation.
        close = getattr(body, "aclose", None)
        if close is not None:
            await close()


def run(stream: ResponseStream, produce: Callable[[], None], report_error: Callable[[BaseException], None]) -> None:
    """Runs `produce` (which writes to `stream`) and ends the invocation whatever happens: an error before the
    first byte goes to `/error`, after it into the trailers; a lost connection or the size limit ends only this
    invocation."""
    try:
        produce()
        stream.close()
    except Exception as exc:
        _end_failed(stream, exc, report_error)


async def run_async(stream: ResponseStream, produce: Any, report_error: Callable[[BaseException], None]) -> None:
    """`run` for a slot of a shared event loop: `produce` is the awaitable that writes to `stream`."""
    try:
        await produce
        stream.close()
    except Exception as exc:
        _end_failed(stream, exc, report_error)


def _end_failed(stream: ResponseStream, exc: Exception, report_error: Callable[[BaseException], None]) -> None:
    """Ends a stream whose producer failed. The size limit (the core already ended the stream with its trailer) and a
    lost connection are only logged; a handler error goes to `/error` before the first byte, into the trailers
    after it."""
    if isinstance(exc, _native.ResponseTooLarge):
        logs.diag(str(exc), stream.request_id)
    elif isinstance(exc, _native.RuntimeApiError):
        logs.diag(f"the streamed response was cut off: {exc}", stream.request_id)
    elif stream.started:
        stream.fail(exc)
    else:
        report_error(exc)
