"""The local Runtime API emulator: the server is in the Rust core, this is its Python front.

`Emulator` serves the Runtime API and an RIE-compatible invoke endpoint on a loopback port, starts the runtime
process as Lambda would (environment, working directory, output captured to files), queues events with the
headers and faults a test wants, and hands back what the runtime posted. The runtime never imports this package.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from slipstream import _native

__all__ = ["DEFAULT_ENVIRONMENT", "Emulator", "Fault", "LogSocket", "Record", "Result"]

FUNCTION_NAME = "function"
DEFAULT_ENVIRONMENT = {
    "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]00000000000000000000000000000000",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "emulator-secret",  # a dummy credential, never sent anywhere
    "AWS_SESSION_TOKEN": "emulator-token",
    "TZ": ":UTC",
}


@dataclass(frozen=True)
class Fault:
    """Misbehaviour acted out for one event. `next_*` faults drop the event; reply faults hit the first reply."""

    next_status: int | None = None
    next_body: bytes = b""
    next_content_type: str | None = None
    next_close: bool = False
    omit_headers: list[str] = field(default_factory=list)
    chunked: bool = False
    reply_status: int | None = None
    # A streamed reply is cut off after its first chunk: a connection lost mid-stream.
    reply_close: bool = False


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key == name and value != "":
            return value
    return None


@dataclass(frozen=True)
class Record:
    """One call the runtime made: `next`, `response`, `error`, `init_error`, `restore_next`, `restore_error`."""

    kind: str
    request_id: str | None
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    body_len: int
    trailers: list[tuple[str, str]]
    at_ns: int

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


@dataclass(frozen=True)
class Result:
    """How one invocation ended: `response`, `error`, `dropped` (a faulted `/next`) or `exit` (the runtime died)."""

    request_id: str
    kind: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    body_len: int
    trailers: list[tuple[str, str]]
    streamed: bool
    chunks: int
    delivered_ns: int
    first_byte_ns: int
    done_ns: int

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def trailer(self, name: str) -> str | None:
        return _header(self.trailers, name)

    @property
    def content_type(self) -> str | None:
        return self.header("content-type")

    @property
    def xray_cause(self) -> str | None:
        return self.header("lambda-runtime-function-xray-error-cause")

    @property
    def error_type(self) -> str | None:
        """The error type of an error reply (header or, for a stream, trailer), else None."""
        name = "lambda-runtime-function-error-type"
        found = self.trailer(name) or (self.header(name) if self.kind == "error" else None)
        if found is None and self.kind == "error":
            try:
                found = json.loads(self.body).get("errorType")
            except (ValueError, AttributeError):
                found = None
        return found

    def json(self) -> Any:
        return json.loads(self.body)


@contextlib.contextmanager
def _restore_affinity(cpus: set[int]) -> Iterator[None]:
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def _json_header(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class LogSocket:
    """The Managed Instances log socket, `_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET`: a Unix stream socket that each
    worker connects to twice and puts on its stdout and stderr. Lambda reads it line by line (one line, one
    record); this keeps the bytes of each connection, in the order they were accepted."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="slipstream-logs-")
        self.path = os.path.join(self._directory.name, "logs.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(128)
        self._lock = threading.Lock()
        self._received: list[bytearray] = []
        # Closing a socket another thread waits on is not a reliable wake-up: a byte on this pair is.
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="emulator-log-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_read:
                        for other in list(selector.get_map().values()):
                            if other.data is not None:
                                other.fileobj.close()  # type: ignore[union-attr]
                        return
                    if key.fileobj is self._server:
                        connection, _ = self._server.accept()
                        received = bytearray()
                        with self._lock:
                            self._received.append(received)
                        selector.register(connection, selectors.EVENT_READ, received)
                        continue
                    connection = key.fileobj  # type: ignore[assignment]
                    data = connection.recv(65536)
                    if not data:
                        selector.unregister(connection)
                        connection.close()
                        continue
                    with self._lock:
                        key.data.extend(data)

    def connections(self) -> list[bytes]:
        """What arrived on each connection so far."""
        with self._lock:
            return [bytes(received) for received in self._received]

    def lines(self) -> list[str]:
        """The complete lines that arrived so far, connection after connection."""
        lines: list[str] = []
        for received in self.connections():
            lines.extend(received.decode(errors="replace").split("\n")[:-1])
        return lines

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._wake_write.send(b"x")
        self._thread.join(5)
        for end in (self._server, self._wake_read, self._wake_write):
            end.close()
        self._directory.cleanup()


class Emulator:
    """A Runtime API on `127.0.0.1`, with at most one runtime process started on it at a time."""

    def __init__(
        self,
        *,
        port: int = 0,
        snap_start: bool = False,
        max_concurrency: int = 0,
        timeout: float = 300.0,
        keep_records: bool = True,
        keep_body: int = 64 * 1024 * 1024,
        affinity: set[int] | None = None,
        log_socket: bool = False,
    ) -> None:
        """`affinity` pins the emulator's threads (they inherit it from the thread that creates the server).

        `log_socket` serves a Managed Instances log socket (`LogSocket`) and names it to the runtime.
        """
        self.snap_start = snap_start
        self.max_concurrency = max_concurrency
        self.log_socket = LogSocket() if log_socket else None
        previous = os.sched_getaffinity(0)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        with _restore_affinity(previous):
            self.core = _native.Emulator(
                port=port,
                snap_start=snap_start,
                max_concurrency=max_concurrency,
                timeout=timeout,
                keep_records=keep_records,
                keep_body=keep_body,
            )
        self.address: str = self.core.address
        self.function_arn: str = self.core.function_arn
        self.process: subprocess.Popen[bytes] | None = None
        self.runtime_output: tuple[str, str] | None = None
        self.spawned_ns = 0
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The runtime process

    def runtime_environment(self, handler: str | None, cwd: str | None, env: dict[str, str]) -> dict[str, str]:
        """The environment Lambda gives a runtime, over this process's own, then `env` on top."""
        environment = dict(os.environ)
        environment.update(DEFAULT_ENVIRONMENT)
        environment["AWS_LAMBDA_RUNTIME_API"] = self.address
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start" if self.snap_start else "on-demand"
        environment["LAMBDA_TASK_ROOT"] = cwd or os.getcwd()
        if handler is not None:
            environment["_HANDLER"] = handler
        if self.max_concurrency:
            # As Lambda sets up a Managed Instances environment, where JSON is the only log format.
            environment["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
            environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = "lambda-managed-instances"
            environment["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
        if self.log_socket is not None:
            environment["_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET"] = self.log_socket.path
        environment.update(env)
        return environment

    def start_runtime(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        handler: str | None = None,
        affinity: set[int] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """Starts the runtime in its own process group, its stdout and stderr going to files (`runtime_output`).

        `pass_fds` stay open in the runtime under the same numbers (a telemetry fd, `_LAMBDA_TELEMETRY_LOG_FD`).

        `affinity` pins the runtime to those CPUs. Benchmarks pin it beside the emulator: on a virtual machine a
        wake-up on another CPU can cost more than a whole invocation, and would be what a figure measures.
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("a runtime is already running on this emulator")
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="slipstream-emulator-")
        out = os.path.join(self._tempdir.name, "stdout")
        err = os.path.join(self._tempdir.name, "stderr")
        self.runtime_output = (out, err)
        environment = self.runtime_environment(handler, cwd, env or {})
        # A child inherits the affinity of the thread that forks it: set around the fork, not in a preexec_fn,
        # which is unsafe with the emulator's threads running.
        previous = os.sched_getaffinity(0)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        with open(out, "wb") as stdout, open(err, "wb") as stderr, _restore_affinity(previous):
            self.spawned_ns = time.monotonic_ns()
            self.process = subprocess.Popen(
                argv,
                env=environment,
                cwd=cwd,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        return self.process

    @property
    def runtime_pid(self) -> int:
        if self.process is None:
            raise RuntimeError("no runtime was started")
        return self.process.pid

    def runtime_returncode(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            self.core.fail_inflight()
        return code

    def stop_runtime(self, grace: float = 5.0) -> int | None:
        """SIGTERM to the runtime's process group, then SIGKILL after `grace` seconds; returns its exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            self._signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal_group(process.pid, signal.SIGKILL)
                process.wait(grace)
        # Workers a runtime forked may outlive it in the group.
        self._signal_group(process.pid, signal.SIGKILL)
        self.core.fail_inflight()
        return process.returncode

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def output(self) -> str:
        """The runtime's stdout and stderr so far."""
        if self.runtime_output is None:
            return ""
        text = []
        for path in self.runtime_output:
            with open(path, errors="replace") as f:
                text.append(f.read())
        return "".join(text)

    # Events and results

    def enqueue(
        self,
        body: bytes,
        *,
        content_type: str | None = "application/json",
        request_id: str | None = None,
        invocation_id: str | None = None,
        tenant_id: str | None = None,
        trace_id: str | None = None,
        client_context: object = None,
        cognito_identity: object = None,
        deadline_ms: int | None = None,
        headers: dict[str, str] | None = None,
        fault: Fault | None = None,
    ) -> str:
        """Queues an event for the runtime's next `/next`; returns its request id."""
        extra: list[tuple[str, str]] = []
        for name, value in (
            ("Lambda-Runtime-Invocation-Id", invocation_id),
            ("Lambda-Runtime-Aws-Tenant-Id", tenant_id),
            ("Lambda-Runtime-Trace-Id", trace_id),
        ):
            if value:
                extra.append((name, value))
        if client_context is not None:
            extra.append(("Lambda-Runtime-Client-Context", _json_header(client_context)))
        if cognito_identity is not None:
            extra.append(("Lambda-Runtime-Cognito-Identity", _json_header(cognito_identity)))
        extra.extend((headers or {}).items())
        fault = fault or Fault()
        return str(
            self.core.enqueue(
                body,
                content_type=content_type,
                headers=extra,
                deadline_ms=deadline_ms,
                request_id=request_id,
                next_status=fault.next_status,
                next_body=fault.next_body,
                next_content_type=fault.next_content_type,
                next_close=fault.next_close,
                omit_headers=list(fault.omit_headers),
                chunked=fault.chunked,
                reply_status=fault.reply_status,
                reply_close=fault.reply_close,
            )
        )

    def result(self, request_id: str, timeout: float = 20.0) -> Result:
        """Waits for the invocation to end. Raises TimeoutError, or ends with an `exit` result if the runtime died."""
        until = time.monotonic() + timeout
        while True:
            found = self.core.take_outcome(request_id, min(0.1, max(0.0, until - time.monotonic())))
            if found is not None:
                return Result(**found)
            code = self.runtime_returncode()
            if code is not None:
                found = self.core.take_outcome(request_id, 0.0)
                if found is not None:
                    return Result(**found)
                # The event was still queued: nobody will ever take it.
                now = time.monotonic_ns()
                return Result(request_id, "exit", code, [], b"", 0, [], False, 0, 0, 0, now)
            if time.monotonic() >= until:
                raise TimeoutError(f"invocation {request_id} had no answer within {timeout}s")

    def invoke(self, body: bytes, *, timeout: float = 20.0, **options: Any) -> Result:
        """Queues an event and waits for its result (see `enqueue` for the options)."""
        return self.result(self.enqueue(body, **options), timeout)

    def records(self, kind: str | None = None) -> list[Record]:
        return [Record(**r) for r in self.core.records(kind)]

    def init_errors(self) -> list[Record]:
        return self.records("init_error")

    def wait_records(self, kind: str, count: int, timeout: float = 20.0) -> bool:
        """Waits until the runtime made `count` calls of `kind`; False if it did not in time or exited first."""
        until = time.monotonic() + timeout
        while True:
            if self.core.wait_records(kind, count, min(0.1, max(0.0, until - time.monotonic()))):
                return True
            if time.monotonic() >= until or self.runtime_returncode() is not None:
                return bool(self.core.wait_records(kind, count, 0.0))

    def run_feed(self, body: bytes, expect: bytes, count: int, timeout: float = 60.0) -> dict[str, Any]:
        """Serves `count` copies of `body` as fast as the runtime answers; see `_native.Emulator.run_feed`."""
        return dict(self.core.run_feed(body, expect, count, timeout))

    def close(self) -> None:
        try:
            self.stop_runtime()
        finally:
            self.core.close()
            if self.log_socket is not None:
                self.log_socket.close()
            if self._tempdir is not None:
                self._tempdir.cleanup()
                self._tempdir = None
