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
    """A streamed response in progress."""

    def write(self, data: bytes | bytearray | str) -> None: ...
    def finish(self) -> tuple[int, str]: ...
    def fail(self, error_type: str, error_body: bytes) -> tuple[int, str]: ...
    @property
    def written(self) -> int: ...
    @property
    def closed(self) -> bool: ...

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
    """Invalid JSON."""

class MarshalError(TypeError):
    """A value awslambdaric's encoder would refuse."""

def loads(data: bytes) -> Any: ...
def dumps(obj: Any, ensure_ascii: bool = True) -> bytes: ...
