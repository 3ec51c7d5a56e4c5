"""slipstream as a real process against the emulator: every behaviour of the foundation, checked at the wire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slipstream.emulator import Fault
from tests.conftest import HANDLERS

REPO = Path(__file__).resolve().parent.parent.parent
LAUNCHER = REPO / "python" / "slipstream.data" / "scripts" / "slipstream-runtime"


def test_json_event_round_trip_with_invocation_id_echo(start_function: Any) -> None:
    function = start_function("basic.echo")
    result = function.invoke({"a": [1, 2.5, "é"], "b": None}, invocation_id="inv-42")
    assert result.kind == "response"
    assert result.content_type == "application/json"
    assert json.loads(result.body) == {"a": [1, 2.5, "é"], "b": None}
    assert result.header("lambda-runtime-invocation-id") == "inv-42"
    assert result.header("user-agent").startswith("aws-lambda-python/")


def test_no_invocation_id_echo_when_none_was_sent(start_function: Any) -> None:
    function = start_function("basic.echo")
    result = function.invoke({}, invocation_id=None)
    assert result.header("lambda-runtime-invocation-id") is None


def test_non_json_event_reaches_the_handler_as_bytes_and_bytes_go_back_raw(start_function: Any) -> None:
    function = start_function("basic.echo")
    result = function.invoke(b"plain \x00 text", content_type="text/plain")
    assert result.kind == "response"
    assert result.body == b"plain \x00 text"
    assert result.content_type == "application/unknown"


def test_context_and_trace_id_per_invocation(start_function: Any) -> None:
    function = start_function("basic.context_fields")
    result = function.invoke(
        {},
        tenant_id="tenant-1",
        trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        cognito_identity={"cognitoIdentityId": "cid", "cognitoIdentityPoolId": "pid"},
        client_context={"client": {"installation_id": "inst"}, "custom": {"k": "v"}, "env": {"e": 1}},
    )
    fields = json.loads(result.body)
    assert fields["function_name"] == "function"
    assert fields["memory_limit_in_mb"] == "128"
    assert fields["function_version"] == "$LATEST"
    assert fields["invoked_function_arn"] == function.emulator.function_arn
    assert fields["tenant_id"] == "tenant-1"
    assert fields["identity"] == ["cid", "pid"]
    assert "installation_id=inst" in fields["client_context"]
    assert fields["remaining_positive"] is True
    assert fields["trace_env"] == "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"

    # Without the header the variable is removed, not left over from the last invocation.
    second = json.loads(function.invoke({}, trace_id="").body)
    assert second["trace_env"] is None or second["trace_env"] != fields["trace_env"]


def test_handler_exception_gives_the_error_document_and_xray_cause(start_function: Any) -> None:
    function = start_function("basic.raises")
    result = function.invoke({})
    assert result.kind == "error"
    error = json.loads(result.body)
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input: ünïcode"
    assert error["requestId"] == result.request_id
    assert len(error["stackTrace"]) == 2
    assert error["stackTrace"][0].startswith(f'  File "{HANDLERS / "basic.py"}", line ')
    assert all("slipstream" not in frame for frame in error["stackTrace"])
    cause = json.loads(result.xray_cause)
    assert cause["exceptions"][0]["type"] == "ValueError"
    assert [frame["label"] for frame in cause["exceptions"][0]["stack"]] == ["raises", "inner"]
    assert cause["working_directory"] == str(HANDLERS)
    # The handler error is logged, and the runtime goes on.
    assert function.invoke({}).kind == "error"
    assert "[ERROR] ValueError: bad input" in function.stdout()


@pytest.mark.parametrize(
    ("handler", "options", "error_type", "message"),
    [
        ("basic.echo", {"payload": b"{not json"}, "Runtime.UnmarshalError", "Unable to unmarshal input: "),
        (
            "basic.unserialisable",
            {},
            "Runtime.MarshalError",
            "Unable to marshal response: Object of type set is not JSON serializable",
        ),
        (
            "basic.echo",
            {"client_context": "{bad"},
            "Runtime.LambdaContextUnmarshalError",
            "Unable to parse Client Context JSON: ",
        ),
        (
            "basic.echo",
            {"cognito_identity": "[1,"},
            "Runtime.LambdaContextUnmarshalError",
            "Unable to parse Cognito Identity JSON: ",
        ),
    ],
)
def test_runtime_faults(
    start_function: Any, handler: str, options: dict[str, Any], error_type: str, message: str
) -> None:
    function = start_function(handler)
    payload = options.pop("payload", b"{}")
    result = function.emulator.invoke(payload, timeout=20, **options)
    error = json.loads(result.body)
    assert error["errorType"] == error_type
    assert error["errorMessage"].startswith(message)
    assert error["stackTrace"] == []
    assert json.loads(result.xray_cause)["exceptions"][0]["type"] == "LambdaValidationError"
    assert function.invoke({}).kind in {"response", "error"}  # still serving


def test_results_are_marshalled_as_awslambdaric_does(start_function: Any) -> None:
    function = start_function("basic.returns_decimal")
    result = function.invoke({})
    assert result.body == b'{"d": 1.10, "nan": NaN, "big": 1180591620717411303424, "t": [1, 2], "u": "\\u00e9\\u2713"}'
    assert start_function("basic.returns_none").invoke({}).body == b"null"


def test_async_handler_is_awaited(start_function: Any) -> None:
    function = start_function("basic.async_echo")
    assert json.loads(function.invoke({"x": 1}).body) == {"async": {"x": 1}}
    assert json.loads(function.invoke({"x": 2}).body) == {"async": {"x": 2}}


@pytest.mark.parametrize(
    ("handler", "error_type"),
    [
        ("nodot", "Runtime.MalformedHandlerName"),
        ("sys.handler", "Runtime.BuiltInModuleConflict"),
        ("nosuchmodule.handler", "Runtime.ImportModuleError"),
        ("basic.nosuchfunction", "Runtime.HandlerNotFound"),
        ("init_errors.syntax_error.handler", "Runtime.UserCodeSyntaxError"),
        ("init_errors.raises_at_import.handler", "RuntimeError"),
    ],
)
def test_init_errors_are_posted_then_exit_1(start_function: Any, handler: str, error_type: str) -> None:
    function = start_function(handler, cwd=HANDLERS)
    assert function.exit_code() == 1
    [record] = function.emulator.init_errors()
    assert record.header("lambda-runtime-function-error-type") == error_type
    error = json.loads(record.body)
    assert error["errorType"] == error_type
    assert error["requestId"] == ""
    assert "LAMBDA_WARNING: Unhandled exception." in function.stdout()


def test_oversized_response_becomes_an_error_and_the_runtime_goes_on(start_function: Any) -> None:
    function = start_function("basic.big_response")
    result = function.invoke({"size": 7 * 1024 * 1024})
    assert result.kind == "error"
    assert json.loads(result.body)["errorType"] == "Function.ResponseSizeTooLarge"
    assert function.invoke({"size": 10}).body == b'"xxxxxxxxxx"'


def test_late_response_410_is_logged_and_the_runtime_goes_on(start_function: Any) -> None:
    function = start_function("basic.echo")
    function.invoke({}, fault=Fault(reply_status=410))
    assert function.invoke({"after": 1}).kind == "response"
    assert "410" in function.stderr()


@pytest.mark.parametrize(
    "fault",
    [
        Fault(next_status=500, next_body=b'{"errorType":"InternalServerError"}', next_content_type="application/json"),
        Fault(next_status=500),  # no content type: awslambdaric segfaults here
        Fault(next_close=True),
        Fault(omit_headers=["lambda-runtime-aws-request-id"]),
        Fault(reply_close=True),
        Fault(reply_status=500),
    ],
    ids=["next-500", "next-500-bare", "next-dropped", "next-no-request-id", "reply-dropped", "reply-500"],
)
def test_transient_runtime_api_failures_are_survived(start_function: Any, fault: Fault) -> None:
    function = start_function("basic.echo")
    function.emulator.enqueue(b'{"first": 1}', fault=fault)
    result = function.invoke({"second": 2})
    assert result.kind == "response"
    assert json.loads(result.body) == {"second": 2}
    assert function.emulator.runtime_returncode() is None


def test_missing_content_type_is_taken_as_json(start_function: Any) -> None:
    function = start_function("basic.echo")
    result = function.invoke({"k": 1}, fault=Fault(omit_headers=["content-type"]))
    assert json.loads(result.body) == {"k": 1}


def test_chunked_event_body_is_accepted(start_function: Any) -> None:
    function = start_function("basic.echo")
    assert json.loads(function.invoke({"chunked": True}, fault=Fault(chunked=True)).body) == {"chunked": True}


def test_runtime_api_gone_for_good_exits_non_zero_with_a_message(start_function: Any) -> None:
    function = start_function("basic.echo")
    function.wait_ready()
    for _ in range(8):
        function.emulator.enqueue(b"{}", fault=Fault(next_status=500))
    assert function.exit_code() == 1
    assert "cannot continue" in function.stderr() and "500" in function.stderr()


def test_sigterm_while_waiting_runs_the_user_handler_then_exits_0(start_function: Any) -> None:
    function = start_function("signals.handler")
    assert function.invoke({}).kind == "response"
    function.wait_ready()
    time.sleep(0.1)
    started = time.monotonic()
    os.kill(function.emulator.runtime_pid, signal.SIGTERM)
    assert function.exit_code(timeout=5) == 0
    assert time.monotonic() - started < 1.0
    assert "user SIGTERM handler ran" in function.stdout()


def test_sigterm_without_a_user_handler_exits_0(start_function: Any) -> None:
    function = start_function("basic.echo")
    function.wait_ready()
    os.kill(function.emulator.runtime_pid, signal.SIGTERM)
    assert function.exit_code(timeout=5) == 0


def test_sys_exit_in_the_handler_answers_then_exits(start_function: Any) -> None:
    function = start_function("basic.exits")
    result = function.invoke({})
    assert result.kind == "error"
    assert json.loads(result.body)["errorType"] == "SystemExit"
    assert function.exit_code() == 3


def test_snapstart_hooks_run_in_awslambdaric_order(start_function: Any) -> None:
    function = start_function("snapstart.handler", snap_start=True)
    result = function.invoke({})
    assert json.loads(result.body) == ["before-2", "before-1", "after-1", "after-2"]
    kinds = [r.kind for r in function.emulator.records()]
    assert kinds.index("restore_next") < kinds.index("next")


@pytest.mark.parametrize(
    ("handler", "code", "kind", "error_type"),
    [
        ("snapstart_fails_before.handler", 64, "init_error", "Runtime.BeforeSnapshotError"),
        ("snapstart_fails_after.handler", 65, "restore_error", "Runtime.AfterRestoreError"),
    ],
)
def test_snapstart_hook_failures(start_function: Any, handler: str, code: int, kind: str, error_type: str) -> None:
    function = start_function(handler, snap_start=True)
    assert function.exit_code() == code
    [record] = function.emulator.records(kind)
    assert record.header("lambda-runtime-function-error-type") == error_type
    assert json.loads(record.body)["errorType"] == "RuntimeError"


def test_bootstrap_script_starts_the_handler_like_a_custom_runtime() -> None:
    from slipstream.emulator import Emulator

    with Emulator() as emulator:
        emulator.start_runtime(
            [str(REPO / "bootstrap")],
            env={"SLIPSTREAM_PYTHON": sys.executable, "PYTHONPATH": ""},
            cwd=str(HANDLERS),
            handler="basic.echo",
        )
        assert json.loads(emulator.invoke(b'{"via": "bootstrap"}', timeout=20).body) == {"via": "bootstrap"}


def test_bootstrap_honours_the_exec_wrapper(tmp_path: Path) -> None:
    from slipstream.emulator import Emulator

    wrapper = tmp_path / "wrapper"
    marker = tmp_path / "wrapped"
    wrapper.write_text(f'#!/bin/sh\necho "$@" > {marker}\nexec "$@"\n')
    wrapper.chmod(0o755)
    with Emulator() as emulator:
        emulator.start_runtime(
            [str(REPO / "bootstrap")],
            cwd=str(HANDLERS),
            handler="basic.echo",
            env={"SLIPSTREAM_PYTHON": sys.executable, "AWS_LAMBDA_EXEC_WRAPPER": str(wrapper)},
        )
        assert json.loads(emulator.invoke(b"[1]", timeout=20).body) == [1]
    # The wrapper echoed its arguments space-joined: the interpreter, `-c`, the start code, the handler.
    python, flag, start = marker.read_text().strip().split(" ", 2)
    start, handler = start.rsplit(" ", 1)
    assert (python, flag, handler) == (sys.executable, "-c", "basic.echo")
    assert "from slipstream.__main__ import _run" in start


def test_launcher_script_runs_the_handler_from_the_working_directory(tmp_path: Path) -> None:
    from slipstream.emulator import Emulator

    # The handler module is found in the working directory, as with `python -m`, not beside the script.
    (tmp_path / "launched.py").write_text("import sys\n\ndef handler(event, context):\n    return sys.path[0]\n")
    with Emulator() as emulator:
        emulator.start_runtime([sys.executable, str(LAUNCHER), "launched.handler"], cwd=str(tmp_path))
        result = emulator.invoke(b"{}", timeout=20)
        assert (result.kind, json.loads(result.body)) == ("response", str(tmp_path)), emulator.output()


def test_the_launcher_is_installed_beside_the_interpreter() -> None:
    installed = Path(sys.executable).parent / "slipstream-runtime"
    assert os.access(installed, os.X_OK)
    # pip rewrote the `#!python` line to this environment's interpreter; the rest is the script as shipped.
    first, rest = installed.read_text().split("\n", 1)
    assert first.startswith("#!") and "python" in first
    assert rest == LAUNCHER.read_text().split("\n", 1)[1]


@pytest.mark.parametrize(("mode", "code"), [(0o644, 126), (None, 127)])
def test_bootstrap_rejects_a_bad_exec_wrapper(tmp_path: Path, mode: int | None, code: int) -> None:
    wrapper = tmp_path / "wrapper"
    if mode is not None:
        wrapper.write_text("#!/bin/sh\n")
        wrapper.chmod(mode)
    env = dict(os.environ, AWS_LAMBDA_EXEC_WRAPPER=str(wrapper), _HANDLER="basic.echo", LAMBDA_TASK_ROOT=str(HANDLERS))
    result = subprocess.run([str(REPO / "bootstrap")], env=env, capture_output=True, text=True, timeout=20)
    assert result.returncode == code
    assert "AWS_LAMBDA_EXEC_WRAPPER" in result.stderr


def test_missing_runtime_api_and_handler_are_clear_errors(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
    no_api = subprocess.run(
        [sys.executable, "-m", "slipstream", "basic.echo"],
        env=env,
        cwd=HANDLERS,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert no_api.returncode == 1 and "AWS_LAMBDA_RUNTIME_API" in no_api.stderr
    no_handler = subprocess.run(
        [sys.executable, "-m", "slipstream"], env=env, capture_output=True, text=True, timeout=20
    )
    assert no_handler.returncode == 2 and "handler" in no_handler.stderr
