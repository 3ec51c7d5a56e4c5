"""Type stub of slipstream's native core. Only modules inside `slipstream` import it."""

from typing import Any, final

__version__: str
build_profile: str

# Errors

class SlipstreamError(Exception):
    """Base class of the errors slipstream's core raises."""

class RuntimeApiError(SlipstreamError):
    """The Runtime API could not be reached or answered in a way the runtime cannot continue from."""

class ConfigurationError(SlipstreamError):
    """The environment does not describe a usable runtime."""

class Interrupted(SlipstreamError):
    """A pending `next()` was ended by `interrupt()`."""

class ResponseTooLarge(SlipstreamError):
    """The streamed response passed Lambda's 200 MiB limit; the stream was ended with an error trailer."""

class StreamClosed(SlipstreamError):
    """The response stream was already ended."""

# The Runtime API client

@final
class Invocation:
    """One invocation from `GET /next`."""

    @property
    def request_id(self) -> str: ...
    @property
    def deadline_ms(self) -> int: ...
    @property
    def invoked_function_arn(self) -> str | None: ...
    @property
    def trace_id(self) -> str | None: ...
    @property
    def client_context(self) -> str | None: ...
    @property
    def cognito_identity(self) -> str | None: ...
    @property
    def tenant_id(self) -> str | None: ...
    @property
    def invocation_id(self) -> str | None: ...
    @property
    def content_type(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    def event(self) -> Any:
        """Decoded JSON when the content type is exactly `application/json`, the raw bytes otherwise."""

@final
class ResponseStream:
    """A streamed response in progress: one chunk on the wire per `write`, error trailers at the end."""

    def write(self, data: bytes | bytearray | str) -> None:
        """Sends one chunk with the GIL released, straight from the object's buffer (`bytearray` is copied first);
        blocks while the reader is slow. Past `STREAM_LIMIT` the stream is ended with a
        `Function.ResponseSizeTooLarge` trailer and `ResponseTooLarge` is raised; a lost connection raises
        `RuntimeApiError`; after the end, `StreamClosed`."""
    def finish(self) -> tuple[int, str]:
        """Ends the response successfully; returns the Runtime API's `(status, body)`."""
    def fail(self, error_type: str, error_body: bytes) -> tuple[int, str]:
        """Ends the response with the error trailers: `error_type` and the error document (JSON, sent base64)."""
    @property
    def written(self) -> int:
        """Body bytes sent so far."""
    @property
    def closed(self) -> bool:
        """Whether the stream was ended (finished, failed, over the limit, or its connection lost)."""

STREAM_LIMIT: int

@final
class RuntimeClient:
    """The Runtime API client: one keep-alive connection; every call releases the GIL."""

    def __init__(self, user_agent: str, address: str | None = None) -> None: ...
    def set_wakeup_fd(self, fd: int) -> None: ...
    def interrupt(self) -> None: ...
    def next(self) -> Invocation: ...
    def post_response(
        self, request_id: str, invocation_id: str | None, result: Any, ensure_ascii: bool = True
    ) -> tuple[int, str]: ...
    def open_stream(self, request_id: str, invocation_id: str | None, content_type: str) -> ResponseStream: ...
    def post_error(
        self, request_id: str, invocation_id: str | None, body: bytes, xray_cause: str
    ) -> tuple[int, str]: ...
    def post_init_error(self, error_type: str, body: bytes) -> tuple[int, str]: ...
    def restore_next(self) -> tuple[int, str]: ...
    def post_restore_error(self, error_type: str, body: bytes) -> tuple[int, str]: ...
    @property
    def authority(self) -> str: ...

# JSON

class JSONDecodeError(ValueError):
    """Invalid JSON, worded as simplejson words it: `Expecting value: line 1 column 2 (char 1)`.

    Invalid UTF-8 carries Python's `UnicodeDecodeError` message, and that error as `__cause__`.
    """

    msg: str
    pos: int
    """Where, in characters of the decoded document."""
    lineno: int
    colno: int

class MarshalError(TypeError):
    """A value awslambdaric's encoder would refuse; the message is the one awslambdaric reports."""

def loads(data: bytes) -> Any:
    """Decodes an `application/json` event as awslambdaric (simplejson) does, strictly: no `NaN`,
    `Infinity`, control characters in strings or nesting deeper than 10,000 levels."""

def dumps(obj: Any, ensure_ascii: bool = True) -> bytes:
    """Encodes a handler result to the UTF-8 bytes awslambdaric's encoder produces."""

# The local Runtime API emulator (wrapped by `slipstream.emulator`)

@final
class Emulator:
    """A Runtime API and an RIE-compatible invoke endpoint on a loopback port, served by threads in the core."""

    def __init__(
        self,
        port: int = 0,
        snap_start: bool = False,
        max_concurrency: int = 0,
        function_arn: str = ...,
        timeout: float = 300.0,
        keep_records: bool = True,
        keep_body: int = ...,
    ) -> None: ...
    @property
    def address(self) -> str: ...
    @property
    def function_arn(self) -> str: ...
    def enqueue(
        self,
        body: bytes,
        content_type: str | None = "application/json",
        headers: list[tuple[str, str]] = ...,
        deadline_ms: int | None = None,
        request_id: str | None = None,
        next_status: int | None = None,
        next_body: bytes = b"",
        next_content_type: str | None = None,
        next_close: bool = False,
        omit_headers: list[str] = ...,
        chunked: bool = False,
        reply_status: int | None = None,
        reply_close: bool = False,
    ) -> str: ...
    def take_outcome(self, request_id: str, timeout: float) -> dict[str, Any] | None: ...
    def records(self, kind: str | None = None) -> list[dict[str, Any]]: ...
    def wait_records(self, kind: str, count: int, timeout: float) -> bool: ...
    def fail_inflight(self) -> int: ...
    def pending(self) -> tuple[int, int]: ...
    def run_feed(
        self, body: bytes, expect: bytes, count: int, timeout: float, content_type: str = "application/json"
    ) -> dict[str, Any]: ...
    def close(self) -> None: ...
