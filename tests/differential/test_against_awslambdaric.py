"""slipstream against awslambdaric 4.2.2: the same handlers, each runtime on its own emulator, compared at the wire.

What each runtime posted (kind, body, content type, X-Ray cause, invocation-id echo, init error type) and what it
logged (stdout, stderr, telemetry frames) must be equal byte for byte once what differs by nature is normalised:

- timestamps in log records and frame headers (frame timestamps are checked against the run's wall clock instead);
- the order of the X-Ray cause's `paths`, which awslambdaric builds from a set;
- the headers only the HTTP client decides: `Host` (each emulator has its port), `User-Agent`, `Accept` (rows
  below say how exactly they differ).

Request ids are the same on both sides (the tests choose them), so bodies need no substitution. One runtime
process per (runtime, handler, environment) serves a whole table of cases; tests that read a process's whole
output or kill it start their own.

Every intended difference is a row of INTENDED, with its reason, and the test marked with the row asserts that the
difference is exactly that. Differences that are not intended and cannot be fixed in this file's reach are rows of
KNOWN, and the cases showing them are strict xfails naming the row.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import awslambdaric
import pytest

from slipstream.emulator import Emulator, Fault, Result
from tests.conftest import HANDLERS, RUNTIMES
from tests.handlers import differential

INTENDED = {
    "user-agent": "slipstream names itself in User-Agent (`aws-lambda-python/<python>-slipstream/<version>`); "
    "awslambdaric sends `aws-lambda-python/<python>-4.2.2`. The Runtime API only records it.",
    "accept-header": "awslambdaric's libcurl adds `Accept: */*` to /next and every reply; slipstream sends no Accept "
    "header, which means the same to the Runtime API.",
    "http-client-calls": "awslambdaric makes its init and SnapStart calls (/init/error, /restore/next, "
    "/restore/error) through http.client (`Accept-Encoding: identity`, no Content-Type, no User-Agent); slipstream "
    "makes them like every other call, with its User-Agent and, on a POST, `Content-Type: application/json`.",
    "oversized-response": "A 413 for a response over 6 MiB becomes a `Function.ResponseSizeTooLarge` error for that "
    "invocation and the runtime keeps serving; awslambdaric raises out of its loop and exits 1.",
    "late-response": "A 410 for a response that came after the timeout is logged and the loop goes on; awslambdaric "
    "exits 1.",
    "reply-500": "A reply the Runtime API answers 500 is sent again; awslambdaric exits 1 and Lambda has to start "
    "a new environment.",
    "next-without-content-type": "A /next answer without Content-Type is taken as JSON; awslambdaric dies of "
    "SIGSEGV (its C++ client builds a string from a null pointer).",
    "next-without-request-id": "A /next answer without a request id is reported on stderr and skipped; awslambdaric "
    "exits 1.",
    "sigterm-while-waiting": "SIGTERM while waiting for /next ends the runtime at once, after the user's own SIGTERM "
    "handler, exit 0. awslambdaric is killed by the signal when the user has no handler; with one, it never runs "
    "it while blocked in its native /next, or (thread polling, managed 3.12+ runtimes only: its issue #105) runs "
    "it and goes on waiting.",
    "async-handlers": "`async def` handlers are awaited; awslambdaric posts `Runtime.MarshalError` for the "
    "coroutine and warns that it was never awaited.",
    "generators-stream": "A generator or iterator result is streamed; awslambdaric posts `Runtime.MarshalError`.",
    "sys-exit": "A handler calling sys.exit() gets its invocation answered with the SystemExit error before the "
    "process exits with that code; awslambdaric exits without answering.",
    "runtime-frames": "An error raised in or through the runtime's own code (a client context or identity that is "
    "not an object, a handler that cannot be called with (event, context), a failing SnapStart hook) carries "
    "awslambdaric's frames in its stackTrace, X-Ray stack and logs; slipstream leaves its own frames out of every "
    "trace. With awslambdaric's frames taken out, the two are the same byte for byte.",
    "managed-instances-init-once": "Under Managed Instances (AWS_LAMBDA_MAX_CONCURRENCY) the handler is imported once "
    "and the workers are forked from that process; awslambdaric's workers each import it themselves.",
    "managed-instances-crashed-worker": "Under Managed Instances a worker that dies is replaced and its invocation "
    "answered `Runtime.ExitError`; awslambdaric leaves the invocation unanswered, and once its last worker is "
    "gone its main process exits 0.",
    "relative-deadline": "A `Lambda-Runtime-Deadline-Ms` below 100,000,000,000 (1973) is read as milliseconds from "
    "now, as cargo-lambda's emulator sends it; awslambdaric reads it as an epoch time long past, so no time is "
    "left. Lambda itself always sends an epoch time.",
    "stdout-buffer-writes": "Bytes written to `sys.stdout.buffer` reach fd 1 at once, as under `python -u`; "
    "awslambdaric only flushes its text stream, so they wait in the buffer for the next text write.",
    "invalid-telemetry-fd": "A `_LAMBDA_TELEMETRY_LOG_FD` that is not an open fd is reported in one line on stderr "
    "and logs go to stdout; awslambdaric dies at start-up with a traceback, before it can report anything.",
    "deep-events": "An event nested 1,000 levels deep is decoded (the native decoder goes to 10,000 levels, and its "
    "own message says so past that); awslambdaric's simplejson runs out of Python recursion near 1,000 levels and "
    "answers `Runtime.UnmarshalError: ... maximum recursion depth exceeded`, a limit of the interpreter rather than "
    "of Lambda, whose 6 MB payloads allow such documents.",
    "unencodable-result": "With AWS_EXECUTION_ENV naming python3.12+, a result holding a lone surrogate makes "
    "awslambdaric's `.encode('utf-8')` raise outside its error handling: the process dies. slipstream answers "
    "`Runtime.MarshalError` with the codec's message.",
}

KNOWN: dict[str, str] = {}

XRAY = "lambda-runtime-function-xray-error-cause"
ERROR_TYPE = "lambda-runtime-function-error-type"
# Headers only the HTTP client decides, left out of the comparison of what was posted (see "user-agent" and
# "accept-header", asserted by `test_client_headers`).
CLIENT_HEADERS = frozenset({"host", "user-agent", "accept"})
# Names of the headers each side sends on a POST it makes outside the invocation loop (see "http-client-calls").
INIT_POST_HEADERS = {
    "slipstream": {"host", "content-length", "content-type", ERROR_TYPE, "user-agent"},
    "awslambdaric": {"host", "content-length", ERROR_TYPE, "accept-encoding"},
}
REPO = Path(__file__).resolve().parents[2]
RIC_PACKAGE = str(Path(awslambdaric.__file__ or "").parent)
# Environment both runtimes get on top of the emulator's: the handlers import helpers from `tests.differential`, and
# a developer's PYTHONUNBUFFERED (empty is unset) would hide buffering that Lambda's environment does not turn off.
BASE_ENV = {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": ""}
UTF8_OUTPUT = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}
# One of awslambdaric's own frames: in a JSON stackTrace (error documents, JSON logs), and in a text log (lines
# indented with no-break spaces, joined by \r on stdout or \n in a frame).
RIC_FRAME_JSON = re.compile(rb'"  File \\"' + re.escape(RIC_PACKAGE.encode()) + rb'/(?:[^"\\]|\\.)*"(?:, )?')
RIC_FRAME_TEXT = re.compile(
    rb'[\r\n](?:\xc2\xa0){2}File "'
    + re.escape(RIC_PACKAGE.encode())
    + rb'/[^"]*", line \d+, in [^\r\n]*(?:[\r\n](?:\xc2\xa0){4}[^\r\n]*)?'
)
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3})?Z")
# Bounds every wait on a runtime: a crash or hang on one side must fail or end a test, never stall it.
TIMEOUT = 10.0

_request_ids = itertools.count()


def intended(*rows: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Marks a test as one asserting these rows of INTENDED."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        test.intended_rows = rows  # type: ignore[attr-defined]
        return test

    return mark


def known(row: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"KNOWN[{row!r}]: {KNOWN[row]}")


class Side:
    """One runtime on its own emulator, optionally with a telemetry fd it inherits."""

    def __init__(
        self, runtime: str, handler: str, env: dict[str, str], telemetry: bool, scratch: Path, **emulator: Any
    ) -> None:
        self.runtime = runtime
        self.emulator = Emulator(**emulator)
        env = {**BASE_ENV, **env}
        self.frames_path: Path | None = None
        fds: tuple[int, ...] = ()
        if telemetry:
            self.frames_path = scratch / f"{runtime}.frames"
            fd = os.open(self.frames_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            env["_LAMBDA_TELEMETRY_LOG_FD"] = str(fd)
            fds = (fd,)
        try:
            self.emulator.start_runtime([*RUNTIMES[runtime], handler], env=env, cwd=str(HANDLERS), pass_fds=fds)
        finally:
            # The runtime holds its own copy; the file is read back by path.
            for fd in fds:
                os.close(fd)

    @property
    def pid(self) -> int:
        return self.emulator.runtime_pid

    def returncode(self, timeout: float = 0.0) -> int | None:
        """The exit code, waiting up to `timeout` seconds for the runtime to end; None if it is still running."""
        until = time.monotonic() + timeout
        while True:
            code = self.emulator.runtime_returncode()
            if code is not None or time.monotonic() >= until:
                return code
            time.sleep(0.01)

    def output(self) -> tuple[bytes, bytes]:
        paths = self.emulator.runtime_output
        assert paths is not None
        return Path(paths[0]).read_bytes(), Path(paths[1]).read_bytes()

    def frames(self) -> list[tuple[str, int, bytes]]:
        """The telemetry frames written so far: (type in hex, timestamp in microseconds, payload)."""
        assert self.frames_path is not None
        data = self.frames_path.read_bytes()
        frames = []
        while data:
            assert len(data) >= 16, f"a truncated frame header: {data!r}"
            length = int.from_bytes(data[4:8], "big")
            frames.append((data[:4].hex(), int.from_bytes(data[8:16], "big"), data[16 : 16 + length]))
            assert len(data) >= 16 + length, "a truncated frame payload"
            data = data[16 + length :]
        return frames

    def close(self) -> None:
        self.emulator.close()


class Pair:
    """The same handler and environment under both runtimes; `invoke` sends one event to each."""

    def __init__(
        self, handler: str, env: dict[str, str] | None = None, telemetry: bool = False, **emulator: Any
    ) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="slipstream-differential-"))
        self.started_us = time.time_ns() // 1000
        self.sides: dict[str, Side] = {}
        try:
            for runtime in RUNTIMES:
                self.sides[runtime] = Side(runtime, handler, dict(env or {}), telemetry, self.scratch, **emulator)
        except BaseException:
            self.close()
            raise

    @property
    def ours(self) -> Side:
        return self.sides["slipstream"]

    @property
    def theirs(self) -> Side:
        return self.sides["awslambdaric"]

    def enqueue(self, payload: object = None, **options: Any) -> str:
        """Queues the same event, under the same request id, on both sides; returns that id.

        Each event gets an invocation id unless `invocation_id` is given, so that its echo is compared too.
        """
        body = payload if isinstance(payload, bytes) else json.dumps(payload if payload is not None else {}).encode()
        request_id = f"req-{next(_request_ids)}"
        options.setdefault("invocation_id", f"inv-{request_id}")
        for side in self.sides.values():
            side.emulator.enqueue(body, request_id=request_id, **options)
        return request_id

    def results(self, request_id: str, timeout: float = TIMEOUT) -> dict[str, Result]:
        return {name: side.emulator.result(request_id, timeout) for name, side in self.sides.items()}

    def invoke(self, payload: object = None, **options: Any) -> dict[str, Result]:
        return self.results(self.enqueue(payload, **options))

    def wait_exits(self) -> dict[str, int | None]:
        return {name: side.returncode(TIMEOUT) for name, side in self.sides.items()}

    def close(self) -> None:
        for side in self.sides.values():
            side.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


@pytest.fixture(scope="module")
def pair() -> Iterator[Callable[..., Pair]]:
    """`pair(handler, env=None)`: a running pair, shared by every test of the module that asks for the same."""
    pairs: dict[tuple[str, tuple[tuple[str, str], ...]], Pair] = {}

    def get(handler: str, env: dict[str, str] | None = None) -> Pair:
        key = (handler, tuple(sorted((env or {}).items())))
        if key not in pairs:
            pairs[key] = Pair(handler, env)
        return pairs[key]

    try:
        yield get
    finally:
        for started in pairs.values():
            started.close()


@pytest.fixture
def fresh_pair() -> Iterator[Callable[..., Pair]]:
    """`fresh_pair(handler, env=None, telemetry=False, **emulator_options)`: a pair of this test's own."""
    started: list[Pair] = []

    def start(handler: str, env: dict[str, str] | None = None, telemetry: bool = False, **emulator: Any) -> Pair:
        started.append(Pair(handler, env, telemetry, **emulator))
        return started[-1]

    try:
        yield start
    finally:
        for each in started:
            each.close()


# Normalisation


def sorted_paths(cause: str) -> str:
    """The X-Ray cause with its `paths` (last key) sorted: awslambdaric lists them in a set's order."""
    head, found, tail = cause.rpartition('"paths": ')
    if not found:
        return cause
    assert tail.endswith("}"), cause
    return head + found + json.dumps(sorted(json.loads(tail[:-1]))) + "}"


def posted(result: Result) -> dict[str, Any]:
    """What one side posted for an invocation, in the terms compared: kind, body and headers but the client's."""
    headers = [(name, sorted_paths(value) if name == XRAY else value) for name, value in result.headers]
    return {
        "kind": result.kind,
        "body": result.body,
        "headers": sorted((name, value) for name, value in headers if name not in CLIENT_HEADERS),
        "streamed": result.streamed,
    }


def assert_same_post(results: dict[str, Result]) -> None:
    ours, theirs = posted(results["slipstream"]), posted(results["awslambdaric"])
    assert ours == theirs


def without_ric_frames(result: Result) -> dict[str, Any]:
    """`posted(result)` with awslambdaric's own frames taken out of the body and the X-Ray cause (and the content
    length, which they change): see "runtime-frames"."""
    document = posted(result)
    document["body"] = RIC_FRAME_JSON.sub(b"", result.body)
    headers = []
    for name, value in document["headers"]:
        if name == XRAY:
            cause = json.loads(value)
            for exception in cause["exceptions"]:
                exception["stack"] = [frame for frame in exception["stack"] if not is_ric_path(frame["path"])]
            cause["paths"] = sorted(path for path in cause["paths"] if not is_ric_path(path))
            value = json.dumps(cause)
        if name != "content-length":
            headers.append((name, value))
    document["headers"] = headers
    return document


def is_ric_path(path: str) -> bool:
    return path.startswith(RIC_PACKAGE + os.sep)


def without_ric_log_frames(log: bytes) -> bytes:
    return RIC_FRAME_TEXT.sub(b"", RIC_FRAME_JSON.sub(b"", log))


def assert_same_but_ric_frames(results: dict[str, Result]) -> None:
    ours, theirs = results["slipstream"], results["awslambdaric"]
    expected = without_ric_frames(theirs)
    assert expected["body"] != theirs.body, "awslambdaric showed none of its own frames: no longer a difference"
    actual = posted(ours)
    actual["headers"] = [header for header in actual["headers"] if header[0] != "content-length"]
    assert actual == expected


def masked(log: bytes) -> bytes:
    return TIMESTAMP.sub(b"<timestamp>", log)


def assert_same_output(pair: Pair, without_ric: bool = False) -> None:
    """stdout and stderr of both sides equal once timestamps are masked, and their telemetry frames if any.

    `without_ric` takes awslambdaric's own frames out of its side first (see "runtime-frames").
    """

    def theirs(log: bytes) -> bytes:
        return without_ric_log_frames(log) if without_ric else log

    ours_out, theirs_out = pair.ours.output(), pair.theirs.output()
    for our_log, their_log in zip(ours_out, theirs_out, strict=True):
        assert masked(our_log).decode(errors="replace") == masked(theirs(their_log)).decode(errors="replace")
    if pair.ours.frames_path is None:
        return

    now_us = time.time_ns() // 1000
    frames = {}
    for name, side in pair.sides.items():
        frames[name] = [(kind, masked(payload)) for kind, _, payload in side.frames()]
        assert all(pair.started_us <= stamp <= now_us for _, stamp, _ in side.frames()), name
    assert frames["slipstream"] == [(kind, masked(theirs(payload))) for kind, payload in frames["awslambdaric"]]


def ric_in_output(side: Side) -> bool:
    logs = [*side.output(), *(payload for _, _, payload in (side.frames() if side.frames_path else []))]
    return any(RIC_PACKAGE.encode() in log for log in logs)


# Results


RESULT_CASES = sorted(differential.RESULTS)


@pytest.mark.parametrize("case", RESULT_CASES)
def test_results_escaped(pair: Callable[..., Pair], case: str) -> None:
    assert_same_post(pair("differential.returns").invoke({"case": case}))


@pytest.mark.parametrize("case", [c for c in RESULT_CASES if c != "lone_surrogate"])
def test_results_utf8(pair: Callable[..., Pair], case: str) -> None:
    assert_same_post(pair("differential.returns", UTF8_OUTPUT).invoke({"case": case}))


@intended("unencodable-result")
def test_lone_surrogate_in_utf8_output(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.returns", UTF8_OUTPUT)
    results = both.invoke({"case": "lone_surrogate"})

    ours = results["slipstream"]
    assert ours.kind == "error"
    assert ours.json()["errorType"] == "Runtime.MarshalError"
    assert ours.json()["errorMessage"] == (
        "Unable to marshal response: 'utf-8' codec can't encode character '\\udcff' in position 1: "
        "surrogates not allowed"
    )
    assert both.invoke({"case": "none"})["slipstream"].body == b"null"

    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.returncode(TIMEOUT) == 1
    assert both.theirs.output()[1].endswith(b"surrogates not allowed\n")
    assert both.theirs.emulator.records("response") == both.theirs.emulator.records("error") == []


@pytest.mark.parametrize("handler", ["differential.echo", "differential.event_type"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"a": [1, 2.5, "\\u00e9", null, true, false], "b": {"c": {}}, "": ""}',
        '{"é": "日本 ✓ 😀"}'.encode(),
        b'"\\ud83d\\ude00 \\u0000 \\n \\/ \\" \\ud800"',
        b"[123456789012345678901234567890, -1, 0, -0]",
        b"[1.0, 1e5, 1E-5, -0.0, 0.1, 1.7976931348623157e308, 5e-324, 1e400, -1e400, 12345678901234567890.5]",
        b'"just a string"',
        b"42",
        b"null",
        b"true",
        b"[]",
        b' \n\t {"a" : 1 } \r\n',
        b'{"a": 1, "a": 2}',
        b"[" * 500 + b"]" * 500,
        b'\xef\xbb\xbf{"bom": 1}',
        b"1e99999",
        # Refused by both: simplejson 3.19+ no longer takes NaN or Infinity in events.
        b"NaN",
        b"[Infinity, -Infinity]",
        b'{"x": NaN}',
        # Invalid JSON: the same Runtime.UnmarshalError, message for message.
        b"{not json",
        b"",
        b'{"a": 1} x',
        b"[1, 2,]",
        b"{'a': 1}",
        b'"abc',
        b'"\\x"',
        b'"a\x01b"',
        b'"\xff"',
        b"01",
        b"-",
        b"0x10",
        b'{"a": [1, 2, {"b": }]}',
        '{"a":1}'.encode("utf-16"),
    ],
)
def test_json_events(pair: Callable[..., Pair], handler: str, body: bytes) -> None:
    assert_same_post(pair(handler).invoke(body))


@intended("deep-events")
def test_deeply_nested_events(pair: Callable[..., Pair]) -> None:
    both = pair("differential.depth")
    results = both.invoke(b"[" * 1000 + b"]" * 1000)
    theirs = results["awslambdaric"].json()
    assert theirs["errorType"] == "Runtime.UnmarshalError"
    assert "maximum recursion depth exceeded" in theirs["errorMessage"]
    assert results["slipstream"].json() == 1000

    # Past the decoder's own limit both refuse the event, each in its own words.
    results = both.invoke(b"[" * 20000 + b"]" * 20000)
    ours, theirs = results["slipstream"].json(), results["awslambdaric"].json()
    assert ours["errorType"] == theirs["errorType"] == "Runtime.UnmarshalError"
    assert "too deep" in ours["errorMessage"]


@pytest.mark.parametrize("handler", ["differential.echo", "differential.event_type"])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/octet-stream", "application/json; charset=utf-8", "APPLICATION/JSON", "image/png"],
)
def test_other_content_types_give_bytes(pair: Callable[..., Pair], handler: str, content_type: str) -> None:
    # Bytes in, bytes out: the echo comes back raw as application/unknown.
    for body in (b'{"a": 1}', b"\x00\x01\xff raw", b""):
        assert_same_post(pair(handler).invoke(body, content_type=content_type))


# Handler exceptions


# Their X-Ray cause is 1 MiB or more, so it is left out. One error document is over 6 MiB: the emulator holds only
# responses to that limit, and both runtimes send it as it is.
HUGE_MESSAGES = {"huge_message", "oversized_message"}
HANDLER_EXCEPTION_CASES = [
    pytest.param(env, case, id=f"{case}-{name}")
    for name, env in [("escaped", {}), ("utf8", UTF8_OUTPUT)]
    for case in sorted(differential.RAISES)
    # With UTF-8 output this one kills both runtimes: test_failures_both_die_of.
    if not (env and case == "lone_surrogate")
]


@pytest.mark.parametrize(("env", "case"), HANDLER_EXCEPTION_CASES)
def test_handler_exceptions(pair: Callable[..., Pair], env: dict[str, str], case: str) -> None:
    assert_same_post(pair("differential.raises", env).invoke({"case": case}))


def test_handler_exception_logs(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.raises")
    for case in sorted(differential.RAISES):
        if case not in HUGE_MESSAGES:
            both.invoke({"case": case})
    assert_same_output(both)


@pytest.mark.parametrize("env", [{}, {"AWS_LAMBDA_LOG_FORMAT": "JSON"}], ids=["text", "json"])
def test_unhandled_errors_and_faults_are_logged_alike(fresh_pair: Callable[..., Pair], env: dict[str, str]) -> None:
    both = fresh_pair("differential.returns", env)
    for case in ("set", "datetime", "circular", "string"):
        assert_same_post(both.invoke({"case": case}))
    assert_same_post(both.invoke(b"{not json"))
    assert_same_post(both.invoke({"case": "none"}, client_context="{bad"))
    assert_same_output(both)


@pytest.mark.parametrize(
    ("handler", "env", "event", "code", "last_words"),
    [
        ("differential.interrupted", {}, {}, -signal.SIGINT, b"KeyboardInterrupt"),
        # str(exception) raises: both fail inside their error handling.
        ("differential.bad_message", {}, {}, 1, b"RuntimeError: no message for you"),
        # The error document cannot be UTF-8: both fail to send it (each from its own encoder, at its own offset).
        ("differential.raises", UTF8_OUTPUT, {"case": "lone_surrogate"}, 1, b"surrogates not allowed"),
    ],
    ids=["keyboard-interrupt", "str-raises", "unencodable-error"],
)
def test_failures_both_die_of(
    fresh_pair: Callable[..., Pair], handler: str, env: dict[str, str], event: object, code: int, last_words: bytes
) -> None:
    both = fresh_pair(handler, env)
    results = both.invoke(event)
    assert {name: result.kind for name, result in results.items()} == {"slipstream": "exit", "awslambdaric": "exit"}
    assert both.wait_exits() == {"slipstream": code, "awslambdaric": code}
    for side in both.sides.values():
        assert side.emulator.records("response") == side.emulator.records("error") == []
    # Python's traceback on the way out names each runtime's own frames: only how it ends is compared.
    for side in both.sides.values():
        assert side.output()[1].splitlines()[-1].endswith(last_words), side.runtime


# Context


CONTEXT_CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "everything": {
        "tenant_id": "tenant-1",
        "trace_id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "cognito_identity": {"cognitoIdentityId": "cid", "cognitoIdentityPoolId": "pid"},
        "client_context": {
            "client": {
                "installation_id": "inst",
                "app_title": "title",
                "app_version_name": "1.0",
                "app_version_code": "2",
                "app_package_name": "pkg",
                "unknown": 1,
            },
            "custom": {"k": "v"},
            "env": {"locale": "fr"},
            "w3c": {"traceparent": "00-abc-def-01", "tracestate": 5, "baggage": "b=1", "other": "x"},
        },
    },
    "no_invocation_id": {"invocation_id": None},
    "empty_client_context": {"client_context": {}},
    "client_context_without_client": {"client_context": {"custom": 1}},
    "w3c_not_an_object": {"client_context": {"w3c": "x"}},
    "client_context_null": {"client_context": "null"},
    "client_context_unicode": {"client_context": {"custom": {"k": "é✓"}}},
    "client_context_nan": {"client_context": '{"custom": NaN, "env": -Infinity}'},
    "client_context_empty_header": {"headers": {"Lambda-Runtime-Client-Context": ""}},
    "identity_empty": {"cognito_identity": {}},
    "identity_null": {"cognito_identity": "null"},
    "identity_nan": {"cognito_identity": '{"cognitoIdentityId": NaN}'},
    "tenant_empty": {"tenant_id": ""},
    "no_deadline": {"fault": Fault(omit_headers=["lambda-runtime-deadline-ms"])},
    "deadline_not_a_number": {"headers": {"Lambda-Runtime-Deadline-Ms": "soon"}},
    "no_function_arn": {"fault": Fault(omit_headers=["lambda-runtime-invoked-function-arn"])},
    "no_trace_id": {"fault": Fault(omit_headers=["lambda-runtime-trace-id"])},
    # Headers that are not JSON: Runtime.LambdaContextUnmarshalError, worded as the standard library's json words it.
    "client_context_invalid": {"client_context": "{bad"},
    "client_context_extra_data": {"client_context": "{} x"},
    "client_context_trailing_comma": {"client_context": "[1,]"},
    "client_context_too_deep": {"client_context": "[" * 3000 + "]" * 3000},
    "identity_invalid": {"cognito_identity": "[1,"},
    "identity_missing_colon": {"cognito_identity": '{"a" 1}'},
}


@pytest.mark.parametrize("case", sorted(CONTEXT_CASES))
def test_context(pair: Callable[..., Pair], case: str) -> None:
    assert_same_post(pair("differential.context_fields").invoke({"k": 1}, **CONTEXT_CASES[case]))


@intended("runtime-frames")
@pytest.mark.parametrize(
    "options",
    [
        {"client_context": [1, 2]},
        {"client_context": '"a string"'},
        {"client_context": '"w3c"'},
        {"client_context": '["w3c"]'},
        {"client_context": {"client": "not an object"}},
        {"cognito_identity": [1]},
    ],
)
def test_context_headers_that_are_not_objects(pair: Callable[..., Pair], options: dict[str, Any]) -> None:
    assert_same_but_ric_frames(pair("differential.context_fields").invoke({}, **options))


@intended("runtime-frames")
@pytest.mark.parametrize("handler", ["differential.one_argument", "differential.NOT_CALLABLE"])
def test_handlers_that_cannot_be_called(fresh_pair: Callable[..., Pair], handler: str) -> None:
    both = fresh_pair(handler)
    assert_same_but_ric_frames(both.invoke({}))
    assert ric_in_output(both.theirs)
    assert_same_output(both, without_ric=True)


def test_library_function_as_handler(pair: Callable[..., Pair]) -> None:
    # os.path.join(event, context) fails inside the standard library: those frames are the user's, in both.
    assert_same_post(pair("os.path.join").invoke({}))


@intended("relative-deadline")
def test_relative_deadline(pair: Callable[..., Pair]) -> None:
    results = pair("differential.context_fields").invoke({}, deadline_ms=60_000)
    ours, theirs = results["slipstream"].json(), results["awslambdaric"].json()
    assert (ours["remaining_positive"], ours["remaining_zero"]) == (True, False)
    assert (theirs["remaining_positive"], theirs["remaining_zero"]) == (False, True)
    assert {**ours, "remaining_positive": False, "remaining_zero": True} == theirs


def test_trace_id_is_set_and_cleared_per_invocation(pair: Callable[..., Pair]) -> None:
    both = pair("differential.context_fields")
    for trace_id in ("Root=1-00000000-000000000000000000000001", "", "Root=2", "", ""):
        results = both.invoke({}, trace_id=trace_id)
        assert_same_post(results)
        assert results["slipstream"].json()["trace_env"] == (trace_id or None)


# Init errors


INIT_ERROR_HANDLERS = [
    "nodot",
    "sys.handler",
    "nosuchmodule.handler",
    "tests.nosuchmodule.handler",
    "differential.nosuchfunction",
    "init_errors.syntax_error.handler",
    "init_errors.raises_at_import.handler",
    "init_errors/raises_at_import.handler",
    # Handler strings the loader takes apart in unusual ways.
    ".echo",
    "/differential.echo",
    "differential.",
    "differential.echo.extra",
    "differential/.echo",
    "sys/x.handler",
    "json.decoder.nosuchfunction",
]
# The same failures again under other log settings: one that fails before user code imported logging, one after,
# one with a traceback.
LOGGED_INIT_ERROR_HANDLERS = ["nodot", "differential.nosuchfunction", "init_errors.raises_at_import.handler"]
INIT_FAILURES = "tests.differential.init_failures.handler"
INIT_ERROR_CASES = [
    *[(handler, {}, False) for handler in INIT_ERROR_HANDLERS],
    *[
        (INIT_FAILURES, {"INIT_FAILURE": how, **env}, telemetry)
        for how in ("after_logging", "quiet_root", "import_error")
        for env, telemetry in [({}, False), ({"AWS_LAMBDA_LOG_FORMAT": "JSON"}, True)]
    ],
    *[
        (handler, env, telemetry)
        for handler in LOGGED_INIT_ERROR_HANDLERS
        for env, telemetry in [
            ({"AWS_LAMBDA_LOG_FORMAT": "JSON"}, False),
            ({"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, False),
            ({}, True),
            ({"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "DEBUG"}, True),
        ]
    ],
]


@pytest.mark.parametrize(
    ("handler", "env", "telemetry"),
    INIT_ERROR_CASES,
    ids=[
        f"{h.removeprefix('tests.differential.')}-{'-'.join(env.values()) or 'default'}{'-fd' * t}"
        for h, env, t in INIT_ERROR_CASES
    ],
)
def test_init_errors(fresh_pair: Callable[..., Pair], handler: str, env: dict[str, str], telemetry: bool) -> None:
    both = fresh_pair(handler, env, telemetry)
    assert both.wait_exits() == {"slipstream": 1, "awslambdaric": 1}

    records = {name: side.emulator.records() for name, side in both.sides.items()}
    assert [r.kind for r in records["slipstream"]] == [r.kind for r in records["awslambdaric"]] == ["init_error"]
    ours, theirs = records["slipstream"][0], records["awslambdaric"][0]
    assert ours.body == theirs.body
    assert ours.header(ERROR_TYPE) == theirs.header(ERROR_TYPE)
    assert ours.header("content-length") == theirs.header("content-length")
    assert_same_output(both)


@pytest.mark.parametrize("env", [{}, {"AWS_LAMBDA_LOG_FORMAT": "JSON"}], ids=["text", "json"])
def test_sys_exit_during_init(fresh_pair: Callable[..., Pair], env: dict[str, str]) -> None:
    both = fresh_pair(INIT_FAILURES, {"INIT_FAILURE": "exit", **env})
    assert both.wait_exits() == {"slipstream": 4, "awslambdaric": 4}
    for side in both.sides.values():
        assert [record.kind for record in side.emulator.records()] == []
    assert_same_output(both)


@intended("http-client-calls")
def test_calls_outside_the_invocation_loop(fresh_pair: Callable[..., Pair]) -> None:
    failed_init = fresh_pair("nosuchmodule.handler")
    restored = fresh_pair("snapstart.handler", snap_start=True)
    failed_restore = fresh_pair("snapstart_fails_after.handler", snap_start=True)
    assert failed_init.wait_exits() == {"slipstream": 1, "awslambdaric": 1}
    assert failed_restore.wait_exits() == {"slipstream": 65, "awslambdaric": 65}
    assert restored.invoke({})["slipstream"].kind == "response"

    records = {
        name: [failed_init.sides[name].emulator.init_errors()[0], failed_restore.sides[name].emulator.records()[-1]]
        for name in RUNTIMES
    }
    for ours, theirs in zip(records["slipstream"], records["awslambdaric"], strict=True):
        assert {"slipstream": set(dict(ours.headers)), "awslambdaric": set(dict(theirs.headers))} == INIT_POST_HEADERS
        assert ours.header("content-type") == "application/json"
        assert theirs.header("accept-encoding") == "identity"
        assert ours.header(ERROR_TYPE) == theirs.header(ERROR_TYPE)

    restore_next = {
        name: dict(side.emulator.records("restore_next")[0].headers) for name, side in restored.sides.items()
    }
    assert set(restore_next["slipstream"]) == {"host", "user-agent"}
    assert restore_next["awslambdaric"] == {"host": restore_next["awslambdaric"]["host"], "accept-encoding": "identity"}


# SnapStart


@pytest.mark.parametrize("env", [{}, {"AWS_LAMBDA_LOG_FORMAT": "JSON"}], ids=["text", "json"])
def test_snapstart_hooks(fresh_pair: Callable[..., Pair], env: dict[str, str]) -> None:
    both = fresh_pair("snapstart.handler", env, snap_start=True)
    assert_same_post(both.invoke({}))
    for side in both.sides.values():
        assert side.emulator.wait_records("next", 2, TIMEOUT)
    kinds = {name: [record.kind for record in side.emulator.records()] for name, side in both.sides.items()}
    assert kinds["slipstream"] == kinds["awslambdaric"]
    assert_same_output(both)


@intended("runtime-frames")
@pytest.mark.parametrize("telemetry", [False, True], ids=["stdout", "fd"])
@pytest.mark.parametrize("env", [{}, {"AWS_LAMBDA_LOG_FORMAT": "JSON"}], ids=["text", "json"])
@pytest.mark.parametrize(
    ("handler", "code", "kind"),
    [("snapstart_fails_before.handler", 64, "init_error"), ("snapstart_fails_after.handler", 65, "restore_error")],
    ids=["before-snapshot", "after-restore"],
)
def test_snapstart_hook_failures(
    fresh_pair: Callable[..., Pair], handler: str, code: int, kind: str, env: dict[str, str], telemetry: bool
) -> None:
    both = fresh_pair(handler, env, telemetry, snap_start=True)
    assert both.wait_exits() == {"slipstream": code, "awslambdaric": code}

    records = {name: side.emulator.records() for name, side in both.sides.items()}
    assert [r.kind for r in records["slipstream"]] == [r.kind for r in records["awslambdaric"]]
    ours, theirs = records["slipstream"][-1], records["awslambdaric"][-1]
    assert ours.kind == kind
    assert ours.header(ERROR_TYPE) == theirs.header(ERROR_TYPE)
    # awslambdaric's hook runner is in its stack; the rest is the same.
    assert ours.body != theirs.body
    assert ours.body == RIC_FRAME_JSON.sub(b"", theirs.body)
    assert ric_in_output(both.theirs)
    assert_same_output(both, without_ric=True)


# Logs


LOG_SETTINGS = [
    {},
    {"AWS_LAMBDA_LOG_LEVEL": "DEBUG"},
    {"AWS_LAMBDA_LOG_LEVEL": "error"},
    {"AWS_LAMBDA_LOG_LEVEL": "TRACE"},
    {"AWS_LAMBDA_LOG_LEVEL": "trace"},
    {"AWS_LAMBDA_LOG_LEVEL": "BOGUS"},
    {"AWS_LAMBDA_LOG_FORMAT": "JSON"},
    {"AWS_LAMBDA_LOG_FORMAT": "json", "AWS_LAMBDA_LOG_LEVEL": "DEBUG"},
    {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"},
    {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "CRITICAL"},
    {"AWS_LAMBDA_LOG_FORMAT": "TEXT", "AWS_LAMBDA_LOG_LEVEL": "INFO"},
]


def _log_settings_id(env: dict[str, str]) -> str:
    return "-".join(f"{k.rsplit('_', 1)[1].lower()}={v}" for k, v in env.items()) or "default"


@pytest.mark.parametrize("telemetry", [False, True], ids=["stdout", "fd"])
@pytest.mark.parametrize("env", LOG_SETTINGS, ids=[_log_settings_id(env) for env in LOG_SETTINGS])
def test_logs(fresh_pair: Callable[..., Pair], env: dict[str, str], telemetry: bool) -> None:
    both = fresh_pair("differential.logs", env, telemetry)
    assert_same_post(both.invoke({}, tenant_id="tenant-1"))
    assert_same_post(both.invoke({"raise": True}))
    assert_same_post(both.invoke({"raise": True}, tenant_id="tenant-2"))
    assert_same_post(both.invoke({}))
    assert_same_output(both)
    # A frame per record: stdout carries only print() and stderr only what the handler wrote there.
    if telemetry:
        assert both.ours.output()[0].startswith(b"printed line\n")
        assert len(both.ours.frames()) > 4


@pytest.mark.parametrize("telemetry", [False, True], ids=["stdout", "fd"])
@pytest.mark.parametrize(
    "env",
    [{}, {"AWS_LAMBDA_LOG_FORMAT": "JSON"}, {"AWS_LAMBDA_LOG_LEVEL": "INFO"}],
    ids=["default", "json", "level=INFO"],
)
def test_logging_imported_by_the_handler(fresh_pair: Callable[..., Pair], env: dict[str, str], telemetry: bool) -> None:
    # Nothing imports logging before the first invocation: slipstream sets it up when the handler imports it.
    both = fresh_pair("tests.differential.lazy_logging.handler", env, telemetry)
    assert_same_post(both.invoke({}))
    assert_same_post(both.invoke({"raise": True}))
    assert_same_output(both)


PREVIEW = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.15"}
PREVIEW_SETTINGS = [
    PREVIEW,
    {**PREVIEW, "AWS_REGION": "cn-north-1", "AWS_LAMBDA_LOG_FORMAT": "JSON"},
    {**PREVIEW, "AWS_LAMBDA_LOG_LEVEL": "ERROR"},
    {**PREVIEW, "LAMBDA_DISABLE_PREVIEW_WARN": "1"},
]


@pytest.mark.parametrize(
    "handler", ["differential.echo", "tests.differential.lazy_logging.handler", "init_errors.raises_at_import.handler"]
)
@pytest.mark.parametrize(
    "env", PREVIEW_SETTINGS, ids=["preview", "preview-china-json", "preview-level=ERROR", "preview-disabled"]
)
def test_preview_runtime_warning(fresh_pair: Callable[..., Pair], handler: str, env: dict[str, str]) -> None:
    both = fresh_pair(handler, env)
    if handler.startswith("init_errors"):
        assert both.wait_exits() == {"slipstream": 1, "awslambdaric": 1}
    else:
        assert_same_post(both.invoke({"é": "✓"}))
    assert_same_output(both)


# Intended differences


@intended("user-agent", "accept-header")
def test_client_headers(pair: Callable[..., Pair]) -> None:
    # The emulator keeps no headers of `/next` requests: replies show what each client adds.
    replies = [pair("differential.echo").invoke({}), pair("differential.raises").invoke({"case": "custom"})]
    python = "{}.{}.{}".format(*sys.version_info[:3])
    for reply in replies:
        ours, theirs = dict(reply["slipstream"].headers), dict(reply["awslambdaric"].headers)
        assert set(theirs) - set(ours) == {"accept"}
        assert set(ours) - set(theirs) == set()
        assert theirs["accept"] == "*/*"
        assert re.fullmatch(rf"aws-lambda-python/{re.escape(python)}-slipstream/\S+", ours["user-agent"])
        assert theirs["user-agent"] == f"aws-lambda-python/{python}-4.2.2"


@intended("stdout-buffer-writes")
def test_stdout_buffer_writes(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.stdout_buffer")
    assert_same_post(both.invoke({}))
    assert both.ours.output()[0] == b"raw bytes\n"
    assert both.theirs.output()[0] == b""

    # A text write flushes awslambdaric's buffer: from there on the two are the same.
    assert_same_post(both.invoke({"text": "printed"}))
    assert_same_output(both)


@intended("invalid-telemetry-fd")
@pytest.mark.parametrize("fd", ["99", "not a number"])
def test_invalid_telemetry_fd(fresh_pair: Callable[..., Pair], fd: str) -> None:
    both = fresh_pair("differential.logs", {"_LAMBDA_TELEMETRY_LOG_FD": fd})

    assert both.theirs.returncode(TIMEOUT) == 1
    assert both.theirs.emulator.records() == []
    assert both.theirs.output()[0] == b""
    last_words = (
        "OSError: [Errno 9] Bad file descriptor" if fd == "99" else f"invalid literal for int() with base 10: {fd!r}"
    )
    assert both.theirs.output()[1].endswith(f"{last_words}\n".encode())

    assert both.ours.emulator.invoke(b"{}", timeout=TIMEOUT).json() == {"telemetry_fd_env": None}
    stdout, stderr = both.ours.output()
    assert stderr.startswith(f"slipstream: cannot use _LAMBDA_TELEMETRY_LOG_FD={fd!r} (".encode())
    assert stderr.splitlines()[0].endswith(b"); logging to stdout")
    assert b"printed line\n" in stdout and b"context log\n" in stdout


@intended("oversized-response")
def test_oversized_response(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.big_response")
    request_id = both.enqueue({"size": 7 * 1024 * 1024})
    results = both.results(request_id)

    ours = results["slipstream"]
    assert ours.kind == "error"
    assert ours.json() == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
        "requestId": request_id,
        "stackTrace": [],
    }
    diagnostic = f"slipstream: [{request_id}] response too large for the Runtime API (413), reporting "
    assert both.ours.output()[1] == f"{diagnostic}Function.ResponseSizeTooLarge\n".encode()
    assert both.invoke({"size": 3})["slipstream"].body == b'"xxx"'

    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.returncode(TIMEOUT) == 1
    stdout, stderr = both.theirs.output()
    assert b"LAMBDA_RUNTIME Failed to post handler success response. Http response code: 413." in stdout
    assert stderr.endswith(b"RuntimeError: Failed to post invocation response\n")


@intended("late-response")
def test_late_response(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.echo")
    request_id = both.enqueue({}, fault=Fault(reply_status=410))
    results = both.results(request_id)
    assert {name: result.status for name, result in results.items()} == {"slipstream": 410, "awslambdaric": 410}

    # The diagnostic follows the 410: the next invocation is answered after it.
    assert both.invoke({"after": 1})["slipstream"].json() == {"after": 1}
    diagnostic = f"slipstream: [{request_id}] response arrived after the invocation timed out (410); continuing\n"
    assert both.ours.output()[1] == diagnostic.encode()

    assert both.theirs.returncode(TIMEOUT) == 1
    assert both.theirs.output()[1].endswith(b"RuntimeError: Failed to post invocation response\n")


@intended("reply-500")
def test_reply_answered_500(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.echo")
    results = both.invoke({"k": 1}, fault=Fault(reply_status=500))

    assert results["slipstream"].kind == "response"
    assert [r.status for r in both.ours.emulator.records("response")] == [500, 202]
    assert both.invoke({"after": 1})["slipstream"].json() == {"after": 1}

    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.returncode(TIMEOUT) == 1
    assert [r.status for r in both.theirs.emulator.records("response")] == [500]


@intended("next-without-content-type")
def test_next_without_content_type(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.event_type")
    results = both.invoke({"k": 1}, fault=Fault(omit_headers=["content-type"]))

    assert results["slipstream"].json() == {"type": "dict", "value": {"k": 1}}
    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.returncode(TIMEOUT) == -signal.SIGSEGV


@intended("next-without-request-id")
def test_next_without_request_id(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.echo")
    both.enqueue({"first": 1}, fault=Fault(omit_headers=["lambda-runtime-aws-request-id"]))
    request_id = both.enqueue({"second": 2})

    assert both.ours.emulator.result(request_id, TIMEOUT).json() == {"second": 2}
    assert both.ours.output()[1] == (
        b"slipstream: skipped a /next answer: the `/next` answer has no `Lambda-Runtime-Aws-Request-Id` header\n"
    )

    assert both.theirs.returncode(TIMEOUT) == 1
    assert b"LAMBDA_RUNTIME Failed to find header lambda-runtime-aws-request-id" in both.theirs.output()[0]
    assert both.theirs.output()[1].endswith(b"RuntimeError: Failed to get next\n")


@intended("sigterm-while-waiting")
def test_sigterm_while_waiting(fresh_pair: Callable[..., Pair]) -> None:
    with_handler, plain = fresh_pair("signals.handler"), fresh_pair("differential.echo")
    # On the managed 3.12+ runtimes awslambdaric waits for /next in a thread, so Python signal handlers can run.
    managed = fresh_pair("signals.handler", UTF8_OUTPUT)
    pairs = (with_handler, plain, managed)
    for both in pairs:
        both.invoke({})
        for side in both.sides.values():
            assert side.emulator.wait_records("next", 2, TIMEOUT)
    # All are inside /next now, or about to be: the signal has to reach a runtime that is waiting.
    time.sleep(0.1)
    for both in pairs:
        for side in both.sides.values():
            os.kill(side.pid, signal.SIGTERM)

    for both in pairs:
        assert both.ours.returncode(TIMEOUT) == 0
        assert both.ours.output()[1] == b"slipstream: SIGTERM received, exiting\n"
    assert with_handler.ours.output()[0] == managed.ours.output()[0] == b"user SIGTERM handler ran\n"

    assert plain.theirs.returncode(TIMEOUT) == -signal.SIGTERM
    # Blocked in its native /next, awslambdaric never gets to run the user's handler; with thread polling it runs
    # it, and goes on waiting.
    time.sleep(0.5)
    assert with_handler.theirs.returncode() is None
    assert with_handler.theirs.output() == (b"", b"")
    assert managed.theirs.returncode() is None
    assert managed.theirs.output() == (b"user SIGTERM handler ran\n", b"")
    # Both would ignore the fixture's SIGTERM too, for the fixture's whole grace period.
    for side in (with_handler.theirs, managed.theirs):
        os.kill(side.pid, signal.SIGKILL)
        assert side.returncode(TIMEOUT) == -signal.SIGKILL


@intended("async-handlers")
def test_async_handler(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.async_echo")
    request_id = both.enqueue({"x": 1})
    results = both.results(request_id)

    assert results["slipstream"].json() == {"async": {"x": 1}}
    assert results["awslambdaric"].json() == {
        "errorMessage": "Unable to marshal response: Object of type coroutine is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": request_id,
        "stackTrace": [],
    }
    # The warning comes when the coroutine is collected, after the reply went out.
    warning = b"RuntimeWarning: coroutine 'async_echo' was never awaited"
    until = time.monotonic() + TIMEOUT
    while warning not in both.theirs.output()[1] and time.monotonic() < until:
        time.sleep(0.01)
    assert warning in both.theirs.output()[1]
    assert both.ours.output() == (b"", b"")


@intended("generators-stream")
@pytest.mark.parametrize(("handler", "kind"), [("generator", "generator"), ("iterator", "map")])
def test_generator_result(pair: Callable[..., Pair], handler: str, kind: str) -> None:
    both = pair(f"differential.{handler}")
    request_id = both.enqueue({})
    results = both.results(request_id)

    assert results["slipstream"].streamed
    assert results["slipstream"].body == b"streamed chunks"
    assert results["awslambdaric"].json() == {
        "errorMessage": f"Unable to marshal response: Object of type {kind} is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": request_id,
        "stackTrace": [],
    }


@intended("sys-exit")
def test_sys_exit(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.exits")
    results = both.invoke({"code": 3})
    assert both.wait_exits() == {"slipstream": 3, "awslambdaric": 3}

    error = results["slipstream"].json()
    assert (error["errorType"], error["errorMessage"]) == ("SystemExit", "3")
    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.emulator.records("error") == both.theirs.emulator.records("response") == []


@intended("managed-instances-init-once")
def test_managed_instances_import_once(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.imported_here", max_concurrency=2)
    request_ids = [both.enqueue({}) for _ in range(6)]
    for request_id in request_ids:
        results = both.results(request_id)
        assert results["slipstream"].json() == {"imported_here": False}
        assert results["awslambdaric"].json() == {"imported_here": True}


@intended("managed-instances-crashed-worker")
def test_managed_instances_crashed_worker(fresh_pair: Callable[..., Pair]) -> None:
    both = fresh_pair("differential.crashes", max_concurrency=1)
    request_id = both.enqueue({"crash": True})
    results = both.results(request_id)

    assert results["slipstream"].json() == {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status 2",
        "errorType": "Runtime.ExitError",
        "requestId": request_id,
        "stackTrace": [],
    }
    assert both.ours.emulator.invoke(b"{}", timeout=TIMEOUT).body == b'"alive"'

    assert results["awslambdaric"].kind == "exit"
    assert both.theirs.returncode(TIMEOUT) == 0
    assert both.theirs.emulator.records("error") == []


def test_every_intended_difference_has_its_test() -> None:
    marked = {row for test in globals().values() for row in getattr(test, "intended_rows", ())}
    assert marked == set(INTENDED)
