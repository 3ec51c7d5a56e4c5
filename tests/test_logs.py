"""`slipstream.logs` against awslambdaric 4.2.2, black-box: one handler runs under both.

awslambdaric runs through its real `bootstrap.run` with a stand-in Runtime API client; slipstream
through a driver that calls `slipstream.logs` in the order the runtime does (setup, import the
handler, per invocation `set_request`, then `log_uncaught_error` on failure; `log_init_warning`
before an init error). stdout, stderr and the decoded telemetry frames must be equal once
timestamps are masked.

Intended differences, each kept out of the comparisons where it shows and asserted on its own
where it can be:

1. Writes to `sys.stdout.buffer` reach fd 1 at once. awslambdaric leaves them in the
   BufferedWriter until the next text write (unless PYTHONUNBUFFERED is set), because it only
   flushes the text stream; slipstream builds stdout the way `python -u` does.
   (`test_buffer_writes_reach_the_fd_at_once`)
2. `sys.stdout` is an `io.TextIOWrapper`, not awslambdaric's `Unbuffered` proxy: the cheapest
   stream with the same one-write-per-call behaviour.
3. The handler, filter and formatter classes carry awslambdaric's names (libraries look them up
   by name) but live in `slipstream.logs`, and handlers have no `log_sink` attribute.
   `record.relativeCreated` counts from the (lazy) import of `logging`, not from runtime
   start-up; thread ids differ. All are left out of the comparisons.
4. An invalid `_LAMBDA_TELEMETRY_LOG_FD` is reported in one diagnostic line and logs go to
   stdout; awslambdaric dies at start-up with a traceback.
   (`test_invalid_telemetry_fd_falls_back_to_stdout`)
5. Stack text that shows the runtime's own frames differs: `stack_info=True` stacks (the masking
   cuts the runtime's frames) and errors raised inside the log handler (compared by type and
   message only).
6. On Python 3.12+, JSON records leave out the `taskName` of the asyncio task that runs the
   invocation: under awslambdaric no task runs user code, so no such key appears.
   (`test_invocation_task_name_stays_out_of_json`)
7. Frame-header and record timestamps differ by nature: masked, and frame timestamps checked
   against the run's wall-clock window instead.
"""

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RIC_DRIVER = """
import sys
import time

from awslambdaric import bootstrap
from awslambdaric.lambda_runtime_marshaller import LambdaMarshaller


class Invocation:
    def __init__(self, request_id, tenant_id):
        self.invoke_id = request_id
        self.tenant_id = tenant_id
        self.invocation_id = None
        self.x_amzn_trace_id = None
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:fn"
        self.deadline_time_in_ms = int(time.time() * 1000) + 60_000
        self.client_context = None
        self.cognito_identity = None
        self.content_type = "application/json"
        self.event_body = b"{}"


class Client:
    marshaller = LambdaMarshaller()

    def __init__(self, pending):
        self.pending = pending

    def wait_next_invocation(self):
        if not self.pending:
            sys.exit(0)
        return Invocation(*self.pending.pop(0))

    def post_invocation_result(self, *args, **kwargs):
        pass

    def post_invocation_error(self, *args, **kwargs):
        pass

    def post_init_error(self, *args, **kwargs):
        pass


pending = [(p.partition(":")[0], p.partition(":")[2] or None) for p in sys.argv[2].split(",") if p]
bootstrap.run(sys.argv[1], Client(pending))
"""

# The runtime's side of logging, reduced to the calls it makes; error dicts are built as
# awslambdaric builds them.
SLIPSTREAM_DRIVER = """
import atexit
import importlib
import os
import sys

if os.environ.pop("TEST_IMPORT_LOGGING_FIRST", None):
    import logging
if os.environ.get("TEST_REPORT_MODULES"):
    atexit.register(lambda: print("modules:", [m for m in ("logging", "json") if m in sys.modules], file=sys.stderr))

from slipstream import logs


class Context:
    def __init__(self, request_id, tenant_id):
        self.aws_request_id = request_id
        self.tenant_id = tenant_id

    def log(self, message):
        logs.context_log(message)


def error(exc, request_id):
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    stack = traceback.format_list([(f.filename, f.lineno, f.name, f.line) for f in frames])
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": request_id, "stackTrace": stack}


logs.setup()
module_name, _, function_name = sys.argv[1].rpartition(".")
try:
    handler = getattr(importlib.import_module(module_name), function_name)
except ImportError as exc:
    logs.log_init_warning()
    message = f"Unable to import module '{module_name}': {exc}"
    logs.log_uncaught_error(
        {"errorMessage": message, "errorType": "Runtime.ImportModuleError", "requestId": "", "stackTrace": []}
    )
    sys.exit(1)
except Exception as exc:
    logs.log_init_warning()
    logs.log_uncaught_error(error(exc, ""))
    sys.exit(1)
for part in filter(None, sys.argv[2].split(",")):
    request_id, _, tenant_id = part.partition(":")
    logs.set_request(request_id, tenant_id or None)
    try:
        handler({}, Context(request_id, tenant_id or None))
    except Exception as exc:
        logs.log_uncaught_error(error(exc, request_id))
"""

# Each handler module is written as fn.py next to both drivers, so tracebacks name the same paths.
KITCHEN_SINK = """
import collections
import contextlib
import decimal
import io
import logging
import os
import sys
import threading

log = logging.getLogger("app.module")
own = logging.getLogger("app.own")
own_handler = logging.StreamHandler(sys.stderr)
own_handler.setFormatter(logging.Formatter("own %(levelname)s %(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
own.addHandler(own_handler)
print("module body printed")


def fail():
    raise ValueError("bad\\nvalue é")


def handler(event, context):
    print("fd variable visible:", "_LAMBDA_TELEMETRY_LOG_FD" in os.environ, file=sys.stderr)
    log.debug("debug %s", "arg")
    log.info("info")
    logging.info("root info")
    log.warning("warning %s %d", "x", 3)
    log.error("error")
    log.critical("critical")
    for level in (5, 15, 25, 35, 45, 55, 100):
        log.log(level, "custom level %d", level)
    log.warning("multi\\nline\\nmessage")
    log.error("non-ASCII héllo ✓ 日本 \\u2028 🎉")
    try:
        fail()
    except ValueError:
        log.exception("caught %s", 1)
    try:
        try:
            fail()
        except ValueError as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as exc:
        log.error("chained", exc_info=exc)
    log.error("no traceback", exc_info=(KeyError, KeyError("k"), None))
    log.warning(
        "with extra",
        extra={"user": "u1", "n": 3, "none": None, "nested": {"a": None, "b": [1, 2]}, "dec": decimal.Decimal("1.50"),
               "raw": b"x", "set": {1}, "float": float("inf"), "tuple": (1, "t"), "uni": "ü"},
    )
    log.warning({"event": "dict message", "v": None, "n": [1]})
    log.warning({})
    log.warning(collections.OrderedDict(a=1))
    log.warning({"a": 1}, {"b": 2})
    log.warning(42)
    log.warning(None)
    log.warning([1, "x"])
    own.warning("own handler %s", "too")
    thread = threading.Thread(target=lambda: log.warning("from a thread"))
    thread.start()
    thread.join()
    print("printed", 1, sep="|")
    print("multi\\nline print")
    print("to stderr", file=sys.stderr)
    sys.stdout.write("no newline")
    sys.stdout.writelines(["a", "b\\n"])
    context.log("context log\\nline 2")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        log.warning("redirected")
        context.log("context redirected")
    print("captured:", repr(buffer.getvalue()), file=sys.stderr)
    try:
        log.warning("%d", "not a number")
    except TypeError as exc:
        print("raised into the caller:", exc, file=sys.stderr)
"""

# What user code can see of the logging set-up.
INTROSPECTION = """
import logging
import sys
import time

root = logging.getLogger()


def describe(when):
    handlers = [
        (type(h).__name__, [c.__name__ for c in type(h).__mro__[1:]], h.level, repr(h), type(h.formatter).__name__,
         [c.__name__ for c in type(h.formatter).__mro__[1:]], h.formatter._fmt, h.formatter.datefmt,
         [(type(f).__name__, [c.__name__ for c in type(f).__mro__[1:]], f.name) for f in h.filters])
        for h in root.handlers
    ]
    print(when, handlers, root.level, logging.Formatter.converter is time.gmtime, file=sys.stderr)


describe("import")
logging.basicConfig(level=logging.DEBUG, format="%(message)s")
describe("after basicConfig")

SKIP = {"created", "msecs", "relativeCreated", "thread", "process", "asctime"}


class Spy(logging.Handler):
    def emit(self, record):
        print("record", sorted((k, repr(v)) for k, v in vars(record).items() if k not in SKIP), file=sys.stderr)


def handler(event, context):
    describe("invoke")
    root.addHandler(Spy())
    root.warning("spied %s", "on")
    try:
        raise KeyError("k")
    except KeyError:
        root.exception("spied exception")
    root.removeHandler(root.handlers[-1])
"""

# Users replace the runtime's formatter and level; records must still be framed and stamped the same
# way.
USER_CONFIGURED = """
import logging

root = logging.getLogger()
root.setLevel(logging.INFO)
root.handlers[0].setFormatter(
    logging.Formatter("%(levelname)s|%(aws_request_id)s|%(tenant_id)s|%(asctime)s|%(message)s", "%Y-%m-%dT%H:%M:%S")
)


def handler(event, context):
    root.info("custom format")
    root.error("custom format error")
    logging.getLogger("x").debug("filtered out")
"""

# logging first imported from inside the handler: the lazy configuration must already look eager.
LATE_LOGGING = """
import sys


def handler(event, context):
    import logging

    print(len(logging.getLogger().handlers), type(logging.getLogger().handlers[0]).__name__, file=sys.stderr)
    logging.getLogger("late").warning("late import")
    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("late").info("still filtered by the runtime's level")
"""

UNCAUGHT = """
class CustomError(Exception):
    pass


def inner(n):
    if n == 0:
        raise CustomError("boom é\\nsecond line")
    inner(n - 1)


def handler(event, context):
    print("before the error")
    if context.aws_request_id == "r2":
        raise KeyError()
    inner(2)
"""

INIT_RAISES = 'print("init")\nraise RuntimeError("init boom ✓")\n'
INIT_IMPORT_ERROR = "import not_a_module_anywhere\n"
# Init errors after user code changed logging: the warning must go through the user's configuration.
INIT_QUIET_LOGGING = 'import logging\nlogging.getLogger().setLevel(logging.ERROR)\nraise RuntimeError("quiet")\n'
INIT_NO_HANDLERS = 'import logging\nlogging.getLogger().handlers.clear()\nraise RuntimeError("bare")\n'

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
STACK_INFO = re.compile(r"Stack \(most recent call last\):\n.*?(?=  File \"[^\"]*/fn\.py\")", re.S)


@dataclass
class Frame:
    type: int
    payload: str


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    frames: list[Frame] | None


def mask(text: str) -> str:
    """Timestamps and addresses become placeholders; runtime frames of stack_info stacks go."""
    text = re.sub(r" at 0x[0-9a-f]+", " at <address>", text)
    text = STACK_INFO.sub("Stack (most recent call last):\n<runtime frames>", text)
    return re.sub(r"<time>\.\d{3}Z", "<time>.<ms>Z", TIMESTAMP.sub("<time>", text))


def decode_frames(data: bytes, window: tuple[int, int]) -> list[Frame]:
    frames = []
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 16]
        assert len(header) == 16, f"truncated frame header at {offset}"
        length = int.from_bytes(header[4:8], "big")
        payload = data[offset + 16 : offset + 16 + length]
        assert len(payload) == length, f"truncated frame payload at {offset}"
        # Microseconds since the epoch, taken while the process ran.
        assert window[0] <= int.from_bytes(header[8:16], "big") <= window[1]
        frames.append(Frame(int.from_bytes(header[:4], "big"), mask(payload.decode("utf-8"))))
        offset += 16 + length
    return frames


def run(
    tmp_path: Path,
    script: str,
    args: list[str],
    env: dict[str, str] | None = None,
    sink: str = "stdout",
    merge_stderr: bool = False,
    python: str = sys.executable,
) -> Run:
    """Runs `script` in `tmp_path`, the telemetry fd on a file or a pipe, or none (`stdout`)."""
    path = tmp_path / f"script_{abs(hash(script))}.py"
    path.write_text(script, encoding="utf-8")
    # A clean environment: the developer's PYTHONUNBUFFERED would hide the buffering the tests look
    # at.
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONPATH": str(REPO / "python")}
    full_env |= {"PYTHONDONTWRITEBYTECODE": "1", **(env or {})}

    read_fd = write_fd = -1
    log_file = None
    if sink == "file":
        log_file = tempfile.TemporaryFile(dir=tmp_path)
        write_fd = log_file.fileno()
    elif sink == "pipe":
        read_fd, write_fd = os.pipe()
    if write_fd >= 0:
        full_env["_LAMBDA_TELEMETRY_LOG_FD"] = str(write_fd)

    start = time.time_ns() // 1000
    process = subprocess.Popen(
        [python, str(path), *args],
        cwd=tmp_path,
        env=full_env,
        pass_fds=(write_fd,) if write_fd >= 0 else (),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
    )
    chunks: list[bytes] = []
    reader = None
    if sink == "pipe":
        os.close(write_fd)
        reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b"")))
        reader.start()
    stdout, stderr = process.communicate(timeout=60)
    end = time.time_ns() // 1000

    frames = None
    if reader is not None:
        reader.join()
        os.close(read_fd)
        frames = decode_frames(b"".join(chunks), (start, end))
    elif log_file is not None:
        log_file.seek(0)
        frames = decode_frames(log_file.read(), (start, end))
        log_file.close()
    return Run(process.returncode, mask(stdout.decode("utf-8")), mask((stderr or b"").decode("utf-8")), frames)


def run_handler(
    runtime: str,
    tmp_path: Path,
    source: str,
    env: dict[str, str] | None = None,
    sink: str = "stdout",
    invocations: str = "r1:tenant-1,r2",
    merge_stderr: bool = False,
    python: str = sys.executable,
) -> Run:
    """Runs `source` as the handler module fn.py under `runtime`: "ric" or "slipstream"."""
    (tmp_path / "fn.py").write_text(textwrap.dedent(source), encoding="utf-8")
    driver = RIC_DRIVER if runtime == "ric" else SLIPSTREAM_DRIVER
    return run(tmp_path, driver, ["fn.handler", invocations], env, sink, merge_stderr, python)


def assert_same(
    tmp_path: Path,
    source: str,
    env: dict[str, str] | None = None,
    sink: str = "stdout",
    invocations: str = "r1:tenant-1,r2",
    merge_stderr: bool = False,
) -> Run:
    """Runs both runtimes on one handler and asserts that all the user would see is equal."""
    expected = run_handler("ric", tmp_path, source, env, sink, invocations, merge_stderr)
    actual = run_handler("slipstream", tmp_path, source, env, sink, invocations, merge_stderr)
    assert actual.stdout == expected.stdout
    assert actual.stderr == expected.stderr
    assert actual.frames == expected.frames
    assert actual.returncode == expected.returncode
    return actual


TEXT = {"AWS_LAMBDA_LOG_FORMAT": "Text"}
JSON = {"AWS_LAMBDA_LOG_FORMAT": "JSON"}
CONFIGS = [
    pytest.param({}, "stdout", id="default-stdout"),
    pytest.param({}, "file", id="default-fd"),
    pytest.param(TEXT | {"AWS_LAMBDA_LOG_LEVEL": "DEBUG"}, "file", id="text-debug-fd"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "TRACE"}, "file", id="text-trace-fd"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "trace"}, "file", id="text-lowercase-trace-is-ignored-fd"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "bogus"}, "file", id="text-unknown-level-fd"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, "stdout", id="text-error-stdout"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "warn"}, "stdout", id="text-warn-stdout"),
    pytest.param(JSON, "stdout", id="json-stdout"),
    pytest.param(JSON, "file", id="json-fd"),
    pytest.param({"AWS_LAMBDA_LOG_FORMAT": "json", "AWS_LAMBDA_LOG_LEVEL": "INFO"}, "file", id="json-info-fd"),
    pytest.param(JSON | {"AWS_LAMBDA_LOG_LEVEL": "NOTSET"}, "stdout", id="json-notset-stdout"),
    pytest.param(JSON | {"AWS_LAMBDA_LOG_LEVEL": "FATAL"}, "file", id="json-fatal-fd"),
]
FORMATS_AND_SINKS = [
    pytest.param({}, "stdout", id="text-stdout"),
    pytest.param({}, "file", id="text-fd"),
    pytest.param({"AWS_LAMBDA_LOG_LEVEL": "INFO"}, "file", id="text-info-fd"),
    pytest.param(JSON, "stdout", id="json-stdout"),
    pytest.param(JSON, "file", id="json-fd"),
    pytest.param(JSON | {"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, "file", id="json-error-fd"),
]


@pytest.mark.parametrize(("env", "sink"), CONFIGS)
def test_user_logging_matches(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    result = assert_same(tmp_path, KITCHEN_SINK, env, sink=sink)
    assert "module body printed" in result.stdout


def test_user_logging_matches_through_a_pipe(tmp_path: Path) -> None:
    result = assert_same(tmp_path, KITCHEN_SINK, JSON | {"AWS_LAMBDA_LOG_LEVEL": "DEBUG"}, sink="pipe")
    assert result.frames


def test_logging_imported_before_setup_is_configured_at_once(tmp_path: Path) -> None:
    assert_same(tmp_path, KITCHEN_SINK, {"TEST_IMPORT_LOGGING_FIRST": "1", "AWS_LAMBDA_LOG_LEVEL": "INFO"}, sink="file")
    assert_same(tmp_path, INTROSPECTION, JSON | {"TEST_IMPORT_LOGGING_FIRST": "1"})


@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_logging_setup_looks_the_same(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    result = assert_same(tmp_path, INTROSPECTION, env, sink=sink)
    assert "LambdaLoggerHandler" in result.stderr


@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_user_formatter_and_level_override(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    assert_same(tmp_path, USER_CONFIGURED, env | {"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, sink=sink)


@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_logging_imported_late_is_configured_on_import(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    result = assert_same(tmp_path, LATE_LOGGING, env, sink=sink)
    assert "1 LambdaLoggerHandler" in result.stderr


@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_uncaught_errors_match(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    result = assert_same(tmp_path, UNCAUGHT, env, sink=sink)
    logged = result.stdout if sink == "stdout" else "".join(frame.payload for frame in result.frames or [])
    assert "CustomError" in logged
    assert "KeyError" in logged


@pytest.mark.parametrize("source", [INIT_RAISES, INIT_IMPORT_ERROR, INIT_QUIET_LOGGING, INIT_NO_HANDLERS])
@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_init_errors_match(tmp_path: Path, env: dict[str, str], sink: str, source: str) -> None:
    result = assert_same(tmp_path, source, env, sink=sink)
    assert result.returncode == 1


# Error dicts with the edges of the text rendering: empty parts, no trace, odd line breaks and
# indentation.
ERROR_CASES = """
CASES = [
    {"errorMessage": "m", "errorType": "T", "requestId": "r", "stackTrace": []},
    {"errorMessage": "multi\\nline\\r\\nmsg é", "errorType": "T", "requestId": "", "stackTrace": [
        "  File \\"x\\", line 1, in f\\n    code\\n", "  no newline", "\\n\\n  after blank\\n",
        "\\tTab\\n  \\t mixed\\n", "trailing spaces  \\n", "   a\\n   b\\n\\n", "a\\rb\\n",
        "c\\u2028d\\x0be", "    ", " \\u00a0 x", "x\\r\\ny",
    ]},
    {"errorType": "T", "errorMessage": "reordered", "stackTrace": ["  x\\n"], "requestId": "r", "extra": "é"},
    {"errorMessage": "", "errorType": "", "requestId": "", "stackTrace": [" x"]},
    {"errorMessage": "", "errorType": "T", "requestId": "", "stackTrace": []},
    {"errorMessage": "only message", "errorType": "", "requestId": "", "stackTrace": []},
    {"errorMessage": None, "errorType": None, "requestId": "", "stackTrace": []},
    {"errorMessage": "no trace", "errorType": "T", "requestId": "", "stackTrace": None},
]
"""
RIC_ERRORS = """
from awslambdaric import bootstrap
from cases import CASES

with bootstrap.create_log_sink() as sink:
    for case in CASES:
        bootstrap.log_error(case, sink)
"""
SLIPSTREAM_ERRORS = """
from cases import CASES
from slipstream import logs

logs.setup()
for case in CASES:
    logs.log_uncaught_error(case)
"""


@pytest.mark.parametrize(("env", "sink"), FORMATS_AND_SINKS)
def test_uncaught_error_rendering_edges(tmp_path: Path, env: dict[str, str], sink: str) -> None:
    (tmp_path / "cases.py").write_text(ERROR_CASES, encoding="utf-8")
    expected = run(tmp_path, RIC_ERRORS, [], env, sink)
    assert run(tmp_path, SLIPSTREAM_ERRORS, [], env, sink) == expected
    assert expected.stdout or expected.frames


def test_print_and_stderr_keep_their_order(tmp_path: Path) -> None:
    source = """
    import logging
    import sys

    def handler(event, context):
        for n in range(3):
            print("out", n, end=" ")
            sys.stderr.write(f"err {n}\\n")
            logging.getLogger().warning("record %d", n)
            sys.stdout.write("tail\\n")
            print("err print", file=sys.stderr)
    """
    for env in ({}, JSON):
        result = assert_same(tmp_path, source, env, merge_stderr=True)
        assert result.stdout.index("err 0") < result.stdout.index("tail")


BUFFER_WRITES = """
import sys

def handler(event, context):
    sys.stdout.buffer.write(b"buffer write\\n")
    sys.stderr.write("stderr write\\n")
    sys.stdout.write("text write\\n")
"""


def test_buffer_writes_reach_the_fd_at_once(tmp_path: Path) -> None:
    # Intended difference 1: awslambdaric holds buffer writes back unless PYTHONUNBUFFERED is set;
    # slipstream matches that unbuffered behaviour in every case.
    result = run_handler("slipstream", tmp_path, BUFFER_WRITES, invocations="r1", merge_stderr=True)
    assert result.stdout == "buffer write\nstderr write\ntext write\n"
    assert_same(tmp_path, BUFFER_WRITES, {"PYTHONUNBUFFERED": "1"}, merge_stderr=True, invocations="r1")


def test_uncaught_error_and_init_warning_need_no_logging(tmp_path: Path) -> None:
    env = {"TEST_REPORT_MODULES": "1"}
    result = run_handler("slipstream", tmp_path, UNCAUGHT, env, "file")
    assert "modules: []" in result.stderr
    result = run_handler("slipstream", tmp_path, INIT_RAISES, env, "file")
    assert "modules: []" in result.stderr
    assert result.frames is not None
    assert [frame.type for frame in result.frames] == [0xA55A0003, 0xA55A0017]
    assert "LAMBDA_WARNING: Unhandled exception." in result.frames[0].payload
    # JSON records need json, never logging.
    result = run_handler("slipstream", tmp_path, INIT_RAISES, env | JSON)
    assert "modules: ['json']" in result.stderr


def test_import_and_setup_stay_light(tmp_path: Path) -> None:
    script = """
import sys

import slipstream  # the package's own imports are not this module's to answer for

before = set(sys.modules)
import slipstream.logs

slipstream.logs.setup()
slipstream.logs.set_request("r1", None)
slipstream.logs.context_log("x")
print((sorted(set(sys.modules) - before), [type(f).__name__ for f in sys.meta_path][:1]), file=sys.stderr)
"""
    for env in ({}, JSON | {"AWS_LAMBDA_LOG_LEVEL": "DEBUG"}):
        process = subprocess.run(
            [sys.executable, "-c", script],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "python")} | env,
            capture_output=True,
            text=True,
            check=True,
        )
        loaded = ast.literal_eval(process.stderr)
        assert set(loaded[0]) <= {"slipstream.logs", "_contextvars"}, loaded
        assert loaded[1] == ["_LoggingHook"]


def test_invalid_telemetry_fd_falls_back_to_stdout(tmp_path: Path) -> None:
    # Intended difference 4: awslambdaric dies at start-up on such a value.
    result = run_handler("slipstream", tmp_path, KITCHEN_SINK, {"_LAMBDA_TELEMETRY_LOG_FD": "not-a-number"})
    assert result.stderr.startswith("slipstream: cannot use _LAMBDA_TELEMETRY_LOG_FD='not-a-number' (")
    assert result.stderr.count("slipstream:") == 1
    assert "[WARNING]\t<time>.<ms>Z\tr1\twarning x 3\n" in result.stdout
    assert "fd variable visible: False" in result.stderr


def test_diag_is_one_line_on_fd_2(tmp_path: Path) -> None:
    script = """
import contextlib, io
from slipstream import logs

logs.setup()
with contextlib.redirect_stderr(io.StringIO()):
    logs.diag("first\\nsecond", "req-1")
    logs.diag("no request é")
"""
    process = subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "python")},
        capture_output=True,
        check=True,
    )
    assert process.stderr == "slipstream: [req-1] first second\nslipstream: no request é\n".encode()
    assert process.stdout == b""


CONCURRENT = """
import asyncio
import logging
import threading

from slipstream import logs

logs.setup()
log = logging.getLogger("concurrent")


async def invocation(request_id, delay):
    logs.set_request(request_id, None)
    await asyncio.sleep(delay)
    log.warning("after sleeping")
    await asyncio.create_task(user_task())


async def user_task():
    log.warning("in a user task")


async def main():
    logs.set_request("outer", "t")
    await asyncio.gather(invocation("a", 0.02), invocation("b", 0.01))
    thread = threading.Thread(target=lambda: log.warning("from a thread"))
    thread.start()
    thread.join()


asyncio.run(main())
"""


def test_concurrent_invocations_keep_their_request_ids(tmp_path: Path) -> None:
    (tmp_path / "concurrent_invocations.py").write_text(CONCURRENT, encoding="utf-8")
    process = subprocess.run(
        [sys.executable, "concurrent_invocations.py"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "python")},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = mask(process.stdout).splitlines()
    assert lines == [
        "[WARNING]\t<time>.<ms>Z\tb\tafter sleeping",
        "[WARNING]\t<time>.<ms>Z\tb\tin a user task",
        "[WARNING]\t<time>.<ms>Z\ta\tafter sleeping",
        "[WARNING]\t<time>.<ms>Z\ta\tin a user task",
        # A thread starts with an empty context: it sees the latest invocation, as under
        # awslambdaric.
        "[WARNING]\t<time>.<ms>Z\tb\tfrom a thread",
    ]


def find_python(minimum: tuple[int, int]) -> str | None:
    """A working interpreter of at least `minimum`: on PATH, or among pyenv's versions."""
    candidates = [shutil.which(f"python{minimum[0]}.{minor}") for minor in range(minimum[1], minimum[1] + 4)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    check = f"import sys; sys.exit(sys.version_info < {minimum})"
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", check], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


PYTHON_312 = find_python((3, 12))


@pytest.mark.skipif(PYTHON_312 is None, reason="needs a Python 3.12+ interpreter")
def test_invocation_task_name_stays_out_of_json(tmp_path: Path) -> None:
    # Intended difference 6: records carry taskName from 3.12 on, and awslambdaric never runs user
    # code in a task.
    (tmp_path / "concurrent_invocations.py").write_text(CONCURRENT, encoding="utf-8")
    process = subprocess.run(
        [str(PYTHON_312), "concurrent_invocations.py"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "python"), "AWS_LAMBDA_LOG_FORMAT": "JSON"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = process.stdout.splitlines()
    assert len(lines) == 5
    assert '"taskName"' not in lines[0] + lines[2] + lines[4]
    assert '"taskName": "Task-' in lines[1]
    assert '"taskName": "Task-' in lines[3]
