"""Response streaming (issue #4), end to end: what the runtime puts on the wire, what the emulator's invoke endpoint
relays to its caller as it arrives, the 200 MiB limit, a slow reader, a lost connection and the memory it all takes.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from slipstream.emulator import DEFAULT_ENVIRONMENT, Fault
from tests.conftest import HANDLERS

MIB = 1024 * 1024
LIMIT = 200 * MIB  # the README's 200 MiB, `_native.STREAM_LIMIT`
DECLARED_TRAILERS = "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
PRELUDE_TYPE = "application/vnd.awslambda.http-integration-response"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
RAW_REQUEST_ID = "7a1c3b2e-0000-4000-8000-00000000cafe"


class Wire:
    """Reads one HTTP/1.1 message off a socket by hand, keeping every byte as it came (`raw`), with the time each
    body chunk arrived: nothing between the test and the wire merges chunks or drops trailers."""

    def __init__(self, sock: socket.socket, buffering: int = -1) -> None:
        self.file: BinaryIO = sock.makefile("rb", buffering=buffering)
        self.raw = bytearray()
        self.start_line = ""
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[tuple[float, bytes]] = []
        self.trailers: list[tuple[str, str]] = []

    def _line(self) -> bytes:
        line = self.file.readline(65536)
        if not line.endswith(b"\r\n"):
            raise ConnectionError(f"the peer closed inside a line: {bytes(self.raw[-200:])!r}")
        self.raw += line
        return line[:-2]

    def _fields(self) -> list[tuple[str, str]]:
        fields = []
        while line := self._line():
            name, _, value = line.decode().partition(":")
            fields.append((name.strip().lower(), value.strip()))
        return fields

    def read_head(self) -> None:
        self.start_line = self._line().decode()
        self.headers = self._fields()

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def status(self) -> int:
        return int(self.start_line.split()[1])

    def next_chunk(self) -> bytes | None:
        """The next body chunk, or None after the last one (its trailers are then in `trailers`)."""
        size = int(self._line().split(b";")[0], 16)
        if size == 0:
            self.trailers = self._fields()
            return None
        data = self.file.read(size + 2)
        self.raw += data
        self.chunks.append((time.monotonic(), data[:-2]))
        return data[:-2]

    def read_body(self) -> bytes:
        while self.next_chunk() is not None:
            pass
        return self.body

    @property
    def body(self) -> bytes:
        return b"".join(data for _, data in self.chunks)


def post_invoke(address: str, payload: object, rcvbuf: int | None = None) -> socket.socket:
    """POSTs an event to the emulator's invoke endpoint and returns the socket the answer arrives on."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:
        # Before connecting, so the window is small from the start: the test then holds back the stream.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    body = json.dumps(payload).encode()
    head = f"POST {INVOKE_PATH} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def invoke_http(address: str, payload: object) -> Wire:
    with post_invoke(address, payload) as sock:
        wire = Wire(sock)
        wire.read_head()
        wire.read_body()
        return wire


class RawRuntimeApi:
    """A Runtime API that serves one event and keeps the runtime's answer byte for byte: the wire, as sent."""

    def __init__(self, event: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(20)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.event = event
        self.request_id = RAW_REQUEST_ID
        self.reply: Wire | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(20)
            with conn:
                request = Wire(conn)
                request.read_head()
                assert request.start_line.startswith("GET /2018-06-01/runtime/invocation/next "), request.start_line
                deadline = int(time.time() * 1000) + 60_000
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %d\r\n"
                    b"Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:f\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (self.request_id.encode(), deadline, len(self.event), self.event)
                )
                reply = Wire(conn)
                reply.read_head()
                reply.read_body()
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
                self.reply = reply
        except BaseException as exc:
            self.error = exc

    def wait_reply(self) -> Wire:
        self.thread.join(20)
        if self.error is not None:
            raise self.error
        assert self.reply is not None, "the runtime sent no reply"
        return self.reply


@pytest.fixture
def raw_reply() -> Iterator[Any]:
    """`raw_reply(handler, event)`: the runtime's reply to one event, as it left the runtime."""
    processes: list[subprocess.Popen[bytes]] = []
    apis: list[RawRuntimeApi] = []

    def run(handler: str, event: object) -> Wire:
        api = RawRuntimeApi(json.dumps(event).encode())
        apis.append(api)
        env = {**os.environ, **DEFAULT_ENVIRONMENT, "AWS_LAMBDA_RUNTIME_API": api.address, "_HANDLER": handler}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "slipstream", handler],
                env=env,
                cwd=HANDLERS,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        return api.wait_reply()

    try:
        yield run
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        for api in apis:
            api.listener.close()


def assert_streaming_head(headers: list[tuple[str, str]]) -> None:
    found = dict(headers)
    assert found["lambda-runtime-function-response-mode"] == "streaming"
    assert found["transfer-encoding"] == "chunked"
    assert found["trailer"] == DECLARED_TRAILERS
    assert "content-length" not in found


def decode_error_body(value: str) -> Any:
    return json.loads(base64.b64decode(value, validate=True))


# What each way of streaming sends


@pytest.mark.parametrize(
    ("handler", "body", "chunks"),
    [
        ("streaming.tokens", b"alpha beta gamma", 3),
        ("streaming.iterator", b"3 2 1 ", 3),
        ("streaming.async_tokens", b"one two three", 3),
    ],
    ids=["generator", "iterator", "async-generator"],
)
def test_returned_chunks_are_streamed_one_chunk_each(
    start_function: Any, handler: str, body: bytes, chunks: int
) -> None:
    function = start_function(handler)
    for _ in range(2):  # the second shows the runtime went on serving after a stream
        result = function.invoke({})
        assert (result.kind, result.streamed, result.chunks, result.body) == ("response", True, chunks, body)
        assert result.content_type == "application/octet-stream"
        assert_streaming_head(result.headers)
        assert result.trailers == []
        assert result.error_type is None


@pytest.mark.parametrize(
    ("handler", "content_type", "body"),
    [
        ("streaming.stream_object", "text/plain", b"written to the stream"),
        ("streaming.stream_object_async", "text/csv", b"a,b\n1,2\n"),
    ],
    ids=["sync", "async"],
)
def test_stream_object_writes_are_streamed(start_function: Any, handler: str, content_type: str, body: bytes) -> None:
    function = start_function(handler)
    for _ in range(2):
        result = function.invoke({})
        assert (result.kind, result.streamed, result.chunks, result.body) == ("response", True, 2, body)
        assert result.content_type == content_type
        assert_streaming_head(result.headers)
        assert result.trailers == []


def test_plain_handler_is_not_streamed(start_function: Any) -> None:
    result = start_function("streaming.plain").invoke({})
    assert (result.kind, result.streamed, result.body) == ("response", False, b'{"streamed": false}')
    assert result.header("content-length") == "19"
    assert result.header("lambda-runtime-function-response-mode") is None
    assert result.header("transfer-encoding") is None


# Function URL responses: the HTTP prelude


def test_http_prelude_at_the_wire(raw_reply: Any) -> None:
    wire = raw_reply("streaming.http_response", {})
    assert wire.start_line == f"POST /2018-06-01/runtime/invocation/{RAW_REQUEST_ID}/response HTTP/1.1"
    assert_streaming_head(wire.headers)
    assert wire.header("content-type") == [PRELUDE_TYPE]

    prelude, delimiter, body = wire.body.partition(b"\0" * 8)
    assert delimiter and body == b"<p>streamed</p>"
    assert json.loads(prelude) == {
        "statusCode": 201,
        "headers": {"content-type": "text/html", "x-custom": "yes"},
        "cookies": ["session=abc; Secure", "theme=dark"],
    }
    # The prelude leaves first, whole, then each body chunk as the handler yields it.
    assert [data for _, data in wire.chunks] == [prelude + b"\0" * 8, b"<p>", b"streamed", b"</p>"]
    assert wire.raw.endswith(b"\r\n4\r\n</p>\r\n0\r\n\r\n")
    assert wire.trailers == []


@pytest.mark.parametrize(
    ("handler", "status", "headers", "cookies", "body"),
    [
        (
            "streaming.http_response",
            201,
            {"content-type": "text/html", "x-custom": "yes"},
            ["session=abc; Secure", "theme=dark"],
            b"<p>streamed</p>",
        ),
        ("streaming.http_stream_object", 404, {"content-type": "text/plain"}, ["gone=1"], b"not here"),
    ],
    ids=["HttpResponse", "start_http"],
)
def test_http_prelude_through_the_invoke_endpoint(
    start_function: Any, handler: str, status: int, headers: dict[str, str], cookies: list[str], body: bytes
) -> None:
    function = start_function(handler)
    wire = invoke_http(function.emulator.address, {})
    assert wire.status == status
    for name, value in headers.items():
        assert wire.header(name) == [value]
    assert wire.header("set-cookie") == cookies
    assert wire.body == body
    assert wire.trailers == []


# Errors before and after the first byte


def test_exception_before_the_first_byte_is_an_ordinary_error(start_function: Any) -> None:
    function = start_function("streaming.fails_before_first_byte")
    result = function.invoke({})
    assert (result.kind, result.streamed, result.trailers) == ("error", False, [])
    error = result.json()
    assert (error["errorType"], error["errorMessage"]) == ("LookupError", "nothing to stream")
    assert json.loads(result.xray_cause)["exceptions"][0]["type"] == "LookupError"
    # The response was never opened: one /error, no /response.
    assert [r.kind for r in function.emulator.records() if r.request_id == result.request_id] == ["error"]


def test_exception_after_the_first_byte_ends_with_error_trailers_at_the_wire(raw_reply: Any) -> None:
    wire = raw_reply("streaming.fails_after_first_byte", {})
    assert wire.start_line == f"POST /2018-06-01/runtime/invocation/{RAW_REQUEST_ID}/response HTTP/1.1"
    assert_streaming_head(wire.headers)

    # The body holds what the handler yielded and nothing of the error; the error is in real trailers.
    assert wire.body == b"partial answer"
    assert [name for name, _ in wire.trailers] == [
        "lambda-runtime-function-error-type",
        "lambda-runtime-function-error-body",
    ]
    trailers = dict(wire.trailers)
    assert trailers["lambda-runtime-function-error-type"] == "Function.KeyError"
    error = decode_error_body(trailers["lambda-runtime-function-error-body"])
    assert (error["errorType"], error["errorMessage"]) == ("KeyError", "'lost the rest'")
    assert error["requestId"] == RAW_REQUEST_ID
    assert error["stackTrace"] and "fails_after_first_byte" in error["stackTrace"][-1]
    tail = b"\r\n6\r\nanswer\r\n0\r\nLambda-Runtime-Function-Error-Type: Function.KeyError\r\n"
    assert tail in wire.raw and wire.raw.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("handler", "body", "error_type", "exception"),
    [
        ("streaming.fails_after_first_byte", b"partial answer", "Function.KeyError", "KeyError"),
        ("streaming.stream_object_fails", b"half", "Function.RuntimeError", "RuntimeError"),
    ],
    ids=["generator", "stream-object"],
)
def test_mid_stream_error_is_reported_by_the_emulator_and_relayed_as_http_trailers(
    start_function: Any, handler: str, body: bytes, error_type: str, exception: str
) -> None:
    function = start_function(handler)
    result = function.invoke({})
    assert (result.kind, result.streamed, result.body) == ("response", True, body)
    assert result.error_type == error_type
    assert decode_error_body(result.trailer("lambda-runtime-function-error-body"))["errorType"] == exception

    wire = invoke_http(function.emulator.address, {})
    assert (wire.status, wire.body) == (200, body)
    assert wire.header("trailer") == [DECLARED_TRAILERS]
    trailers = dict(wire.trailers)
    assert trailers["lambda-runtime-function-error-type"] == error_type
    assert decode_error_body(trailers["lambda-runtime-function-error-body"])["errorType"] == exception
    assert f"[ERROR] {exception}" in function.stdout()


# The 200 MiB limit


def test_200_mib_exactly_is_streamed_whole(start_function: Any) -> None:
    function = start_function("streaming.sized", keep_body=1 << 20)
    result = function.invoke({"bytes": LIMIT}, timeout=60)
    assert (result.kind, result.streamed, result.body_len, result.chunks) == ("response", True, LIMIT, 200)
    assert result.trailers == []
    assert result.error_type is None
    assert result.body == b"\x01" * MIB  # the kept first MiB: the first chunk


def test_over_200_mib_ends_with_a_size_trailer_and_the_runtime_goes_on(start_function: Any) -> None:
    function = start_function("streaming.sized", keep_body=1 << 20)
    result = function.invoke({"bytes": LIMIT + 1}, timeout=60)
    assert (result.kind, result.streamed) == ("response", True)
    # The chunk that would cross the limit is not sent.
    assert result.body_len == LIMIT
    assert result.error_type == "Function.ResponseSizeTooLarge"
    error = decode_error_body(result.trailer("lambda-runtime-function-error-body"))
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert str(LIMIT) in error["errorMessage"]

    after = function.invoke({"bytes": 10})
    assert (after.kind, after.body, after.trailers) == ("response", b"\x01" * 10, [])
    assert result.request_id in function.stderr() and str(LIMIT) in function.stderr()


# Flow control: chunks leave as they are produced, and a slow reader pauses the producer


def test_chunks_reach_the_invoke_caller_as_they_are_produced(start_function: Any) -> None:
    function = start_function("streaming.paced")
    pause = 0.25
    with post_invoke(function.emulator.address, {"tokens": 4, "pause": pause}) as sock:
        wire = Wire(sock)
        wire.read_head()
        # The first token arrives while the handler still has three pauses to sleep through.
        assert wire.next_chunk() == b"token0 "
        wire.read_body()
    assert wire.status == 200
    assert [data for _, data in wire.chunks] == [b"token0 ", b"token1 ", b"token2 ", b"token3 "]
    # Each token arrived on its own, a pause after the one before: a buffered relay would deliver them at once.
    arrivals = [at for at, _ in wire.chunks]
    assert all(later - earlier >= pause / 2 for earlier, later in itertools.pairwise(arrivals))


def read_progress(path: Path) -> tuple[int, int]:
    """(bytes produced, reporter ticks) as the `recorded` handler last wrote them."""
    text = path.read_bytes().split() if path.exists() else []
    return (int(text[0]), int(text[1])) if len(text) == 2 else (0, 0)


def test_slow_reader_pauses_the_producer_with_the_gil_free(start_function: Any, tmp_path: Path) -> None:
    function = start_function("streaming.recorded", keep_body=1 << 20)
    function.wait_ready()
    progress = tmp_path / "progress"
    total = 128 * MIB
    event = {"bytes": total, "chunk": 64 * 1024, "progress": str(progress)}
    with post_invoke(function.emulator.address, event, rcvbuf=16 * 1024) as sock:
        # Read nothing until the producer stops: every buffer between it and this socket is then full. Over a
        # window in which it made no progress, the runtime's own thread went on ticking: the write holding the
        # producer back does not hold the GIL.
        before, until = read_progress(progress), time.monotonic() + 20
        while True:
            time.sleep(0.3)
            after = read_progress(progress)
            if after[0] > 0 and after[0] == before[0] and after[1] > before[1] + 5:
                break
            assert time.monotonic() < until, f"the producer never paused with the GIL free: {before} -> {after}"
            before = after
        assert after[0] < total / 4, f"{after[0]} of {total} bytes produced with nobody reading"

        wire = Wire(sock, buffering=1 << 20)
        wire.read_head()
        received = 0
        while (chunk := wire.next_chunk()) is not None:
            received += len(chunk)
            wire.chunks.clear()  # the test keeps none of the 128 MiB
            wire.raw.clear()
    assert received == total
    assert wire.trailers == []
    assert read_progress(progress)[0] == total


# A connection lost mid-stream


def test_connection_lost_mid_stream_is_reported_and_the_runtime_goes_on(start_function: Any) -> None:
    function = start_function("streaming.sized", keep_body=1 << 20)
    lost = function.emulator.enqueue(json.dumps({"bytes": 64 * MIB}).encode(), fault=Fault(reply_close=True))
    after = function.invoke({"bytes": 5}, timeout=30)
    assert (after.kind, after.body) == ("response", b"\x01" * 5)

    [cut] = [r for r in function.emulator.records("response") if r.request_id == lost]
    assert cut.status == 0 and 0 < cut.body_len < 64 * MIB
    diagnostic = [line for line in function.stderr().splitlines() if lost in line]
    assert diagnostic and "cut off" in diagnostic[0], function.stderr()
    assert function.emulator.runtime_returncode() is None


def test_async_generator_is_closed_as_soon_as_its_stream_is_cut(start_function: Any, tmp_path: Path) -> None:
    function = start_function("streaming.async_sized", keep_body=1 << 20)
    marker = tmp_path / "closed"
    event = {"bytes": 64 * MIB, "marker": str(marker)}
    lost = function.emulator.enqueue(json.dumps(event).encode(), fault=Fault(reply_close=True))
    until = time.monotonic() + 20
    while lost not in function.stderr() and time.monotonic() < until:
        time.sleep(0.05)
    assert "cut off" in function.stderr()
    # Closed within the invocation, not by the garbage collector on the event loop's next turn.
    assert marker.read_text() == "closed"


# Memory


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                fields[name] = int(value.split()[0])
    return fields


def test_memory_stays_flat_while_streaming_200_mib(start_function: Any) -> None:
    function = start_function("streaming.sized", keep_body=1 << 20)
    # A first, small stream loads everything streaming uses, so what follows measures only the stream itself.
    assert function.invoke({"bytes": 8 * MIB}).body_len == 8 * MIB
    pid = function.emulator.runtime_pid
    idle = memory_kib(pid)["VmRSS"]

    result = function.invoke({"bytes": LIMIT}, timeout=60)
    assert (result.body_len, result.trailers) == (LIMIT, [])
    peak = memory_kib(pid)["VmHWM"]
    assert peak - idle < 32 * 1000, f"idle {idle} KiB, peak {peak} KiB while streaming {LIMIT} bytes"
