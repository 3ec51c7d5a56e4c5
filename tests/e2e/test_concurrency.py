"""Lambda Managed Instances (`AWS_LAMBDA_MAX_CONCURRENCY`): slipstream against the emulator, checked at the wire.

Overlap is judged from the timestamps the handlers return, never from how long the test took.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from slipstream.emulator import Fault

TRACE = "Root=1-5759e988-bd862e3fe1be46a9942727{:02d};Parent=53995c3f42cd8ad8;Sampled=1"


def start(start_function: Any, handler: str, slots: int, env: dict[str, str] | None = None, **options: Any) -> Any:
    """A Managed Instances function with `slots` slots, once every slot polls `/next`."""
    function = start_function(f"managed.{handler}", env=env, max_concurrency=slots, **options)
    wait_idle(function, slots, delivered=0)
    return function


def wait_idle(function: Any, slots: int, delivered: int) -> None:
    """Waits until `slots` `/next` calls are pending: every call the emulator saw either took one of the
    `delivered` events or is still waiting. HTTP/1.1 carries one request at a time, so each is a connection."""
    assert function.emulator.wait_records("next", delivered + slots, 20.0), function.output()


def invoke_all(function: Any, events: list[dict[str, Any]], **options: Any) -> list[Any]:
    """Queues every event at once (each with its own tenant, trace id and deadline), then collects the results."""
    now_ms = int(time.time() * 1000)
    ids = [
        function.emulator.enqueue(
            json.dumps(event).encode(),
            tenant_id=f"tenant-{i}",
            trace_id=TRACE.format(i),
            deadline_ms=now_ms + 60_000 + 1_000 * i,
            **options,
        )
        for i, event in enumerate(events)
    ]
    return [function.emulator.result(request_id, timeout=30.0) for request_id in ids]


def check_own_context(results: list[Any], first_deadline_ms: int | None = None) -> list[dict[str, Any]]:
    """Each invocation saw its own request id, tenant id, deadline and trace id, before and after it waited."""
    bodies = []
    deadlines = []
    for i, result in enumerate(results):
        assert result.kind == "response", result.body
        body = result.json()
        for seen in (body["before"], body["after"]):
            assert seen["request_id"] == result.request_id
            assert seen["tenant_id"] == f"tenant-{i}"
            assert seen["trace_env"] == TRACE.format(i)
            assert seen["trace_in_env"] is True
            assert seen["trace_current"] == TRACE.format(i)
        deadlines.append(body["before"]["deadline_ms"])
        bodies.append(body)
    # One second apart as queued: another invocation's deadline would be off by a multiple of 1000 ms.
    steps = [later - earlier for earlier, later in itertools.pairwise(deadlines)]
    assert all(abs(step - 1_000) < 200 for step in steps), deadlines
    return bodies


def assert_overlapped(bodies: list[dict[str, Any]]) -> None:
    """All of them were running at one moment: the last to start started before the first to end ended."""
    assert max(b["started"] for b in bodies) < min(b["ended"] for b in bodies), bodies


def json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def check_log_lines(records: list[dict[str, Any]], results: list[Any]) -> None:
    """Each invocation's `start`/`end` records carry its request id."""
    by_tag = {f"{edge} {i}": result.request_id for i, result in enumerate(results) for edge in ("start", "end")}
    logged = {r["message"]: r["requestId"] for r in records if r.get("logger") == "concurrent"}
    assert logged == by_tag


@pytest.mark.parametrize("slots", [4, 8])
def test_plain_handler_runs_one_invocation_per_worker_with_no_cross_talk(start_function: Any, slots: int) -> None:
    function = start(start_function, "work", slots)
    results = invoke_all(function, [{"sleep": 0.5, "tag": i} for i in range(slots)])

    bodies = check_own_context(results)
    assert_overlapped(bodies)
    # One invocation per process at a time: each ran in a worker of its own, none in the main process.
    pids = {b["pid"] for b in bodies}
    assert len(pids) == slots
    assert function.emulator.runtime_pid not in pids
    check_log_lines(json_lines(function.stdout()), results)


def test_async_handler_shares_one_loop_with_no_cross_talk(start_function: Any) -> None:
    function = start(start_function, "async_work", 8)
    results = invoke_all(function, [{"sleep": 0.3, "tag": i} for i in range(8)])

    bodies = check_own_context(results)
    assert_overlapped(bodies)
    assert len({b["pid"] for b in bodies}) == 1
    # Synchronous code handed to the loop's executor runs in its invocation's context.
    for i, body in enumerate(bodies):
        assert body["in_thread"]["trace_env"] == TRACE.format(i)
        assert body["in_thread"]["trace_current"] == TRACE.format(i)
    check_log_lines(json_lines(function.stdout()), results)


def test_async_handler_with_64_slots(start_function: Any) -> None:
    function = start(start_function, "async_work", 64)
    results = invoke_all(function, [{"sleep": 0.2, "tag": i} for i in range(64)])

    bodies = check_own_context(results)
    assert_overlapped(bodies)
    assert len({b["pid"] for b in bodies}) == 1
    # uvloop's loop when it is installed, asyncio's otherwise.
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio.unix_events"
    assert {b["loop"] for b in bodies} == {expected}


def test_async_slots_spread_over_processes(start_function: Any) -> None:
    function = start(start_function, "async_work", 6, env={"SLIPSTREAM_ASYNC_PROCESSES": "2"})
    results = invoke_all(function, [{"sleep": 0.4, "tag": i} for i in range(6)])

    bodies = check_own_context(results)
    assert_overlapped(bodies)
    # Six slots over two processes: three invocations in each.
    pids = [b["pid"] for b in bodies]
    assert sorted(pids.count(pid) for pid in set(pids)) == [3, 3]


def test_async_handler_with_the_opt_out_runs_one_slot_per_process(start_function: Any) -> None:
    # The main process does not import the handler, so it cannot know it is `async def`: one slot per worker.
    function = start(start_function, "async_work", 3, env={"SLIPSTREAM_FORK_AFTER_INIT": "0"})
    results = invoke_all(function, [{"sleep": 0.3, "tag": i} for i in range(3)])

    bodies = check_own_context(results)
    assert_overlapped(bodies)
    assert len({b["pid"] for b in bodies}) == 3
    check_log_lines(json_lines(function.stdout()), results)


@pytest.mark.parametrize(
    ("crash", "reason"),
    [("exit", "exit status 3"), ("segv", "signal: segmentation fault"), ("kill", "signal: killed")],
)
def test_worker_crash_is_answered_and_the_worker_replaced(start_function: Any, crash: str, reason: str) -> None:
    slots = 4
    function = start(start_function, "work", slots)
    results = invoke_all(function, [{"sleep": 0.6, "tag": 0}, {"delay": 0.2, "crash": crash, "tag": 1}])

    # The invocation in the other worker is untouched; the crashed one gets Lambda's error, not silence.
    assert results[0].kind == "response"
    lost = results[1]
    assert lost.kind == "error"
    assert lost.error_type == "Runtime.ExitError"
    error = lost.json()
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].startswith(f"RequestId: {lost.request_id} Error: Runtime exited with error: {reason}")
    assert error["requestId"] == lost.request_id
    logged = [r for r in json_lines(function.stdout()) if r.get("errorType") == "Runtime.ExitError"]
    assert [r["requestId"] for r in logged] == [lost.request_id]
    assert "starting a replacement" in function.stderr()

    # Capacity is back: every slot polls again, and as many invocations as slots run at once.
    wait_idle(function, slots, delivered=2)
    bodies = check_own_context(invoke_all(function, [{"sleep": 0.5, "tag": i} for i in range(slots)]))
    assert_overlapped(bodies)
    assert len({b["pid"] for b in bodies}) == slots
    assert function.emulator.runtime_returncode() is None


def test_async_worker_crash_answers_every_invocation_it_had(start_function: Any) -> None:
    slots = 4
    function = start(start_function, "async_work", slots)
    events = [{"sleep": 1.0, "tag": i} for i in range(slots - 1)] + [{"delay": 0.2, "crash": "exit", "tag": 9}]
    results = invoke_all(function, events)

    # All four were in the process that died: each is answered, none left waiting.
    assert [r.kind for r in results] == ["error"] * slots
    assert {r.error_type for r in results} == {"Runtime.ExitError"}

    wait_idle(function, slots, delivered=slots)
    bodies = check_own_context(invoke_all(function, [{"sleep": 0.3, "tag": i} for i in range(slots)]))
    assert_overlapped(bodies)


def test_handler_that_is_not_fork_safe_fails_when_forked(start_function: Any) -> None:
    # The thread the module started at import exists only in the main process, never in a forked worker.
    function = start(start_function, "uses_import_thread", 2, env={"CONCURRENT_IMPORT_THREAD": "1"})
    [result] = invoke_all(function, [{}])
    assert result.kind == "error"
    assert "the thread started at import is not running" in result.json()["errorMessage"]


def test_handler_that_is_not_fork_safe_works_with_the_opt_out(start_function: Any) -> None:
    env = {"CONCURRENT_IMPORT_THREAD": "1", "SLIPSTREAM_FORK_AFTER_INIT": "0", "AWS_LAMBDA_LOG_LEVEL": "DEBUG"}
    function = start(start_function, "uses_import_thread", 2, env=env)
    results = invoke_all(function, [{}, {}])
    assert [r.kind for r in results] == ["response", "response"]
    for result in results:
        assert "import-time-helper" in result.json()["threads"]
    # The main process never imported the handler (nor `logging`), and still logs the pool's start.
    [pool] = [r for r in json_lines(function.stdout()) if isinstance(r.get("message"), dict)]
    assert pool["message"]["workerCount"] == 2


@pytest.mark.parametrize("handler", ["work", "async_work"])
def test_sigterm_drains_the_invocation_in_flight_then_exits_0(start_function: Any, handler: str) -> None:
    function = start(start_function, handler, 2)
    request_id = function.emulator.enqueue(json.dumps({"sleep": 0.8, "tag": 0}).encode())
    until = time.monotonic() + 10
    while function.emulator.core.pending() != (0, 1):
        assert time.monotonic() < until, function.output()
        time.sleep(0.01)
    time.sleep(0.2)  # inside the handler's sleep

    assert function.stop() == 0, function.output()
    result = function.emulator.result(request_id, timeout=1.0)
    assert result.kind == "response", function.output()
    assert "workers drained" in function.stderr()


def test_init_error_under_concurrency_is_posted_once_and_exit_is_not_zero(start_function: Any) -> None:
    function = start_function("init_errors.raises_at_import.handler", max_concurrency=4)
    assert function.exit_code() == 1
    [record] = function.emulator.init_errors()
    assert record.status == 202
    assert json.loads(record.body)["errorType"] == "RuntimeError"
    # Init happened once, in the main process, and no worker was started to poll.
    assert function.emulator.records("next") == []


def test_init_error_in_every_worker_with_the_opt_out(start_function: Any, tmp_path: Path) -> None:
    slots = 3
    env = {"SLIPSTREAM_FORK_AFTER_INIT": "0", "CONCURRENT_INIT_BARRIER": f"{tmp_path}:{slots}"}
    function = start_function("managed.work", env=env, max_concurrency=slots)
    assert function.exit_code() == 1
    # Each worker ran its own init; the Runtime API takes the first report and answers the others 403, which is
    # expected there and not complained about.
    assert len(list(tmp_path.iterdir())) == slots
    statuses = [r.status for r in function.emulator.init_errors()]
    assert statuses[:1] == [202]
    assert set(statuses[1:]) <= {403}
    assert "rejected" not in function.stderr()


def test_log_socket_receives_each_workers_lines(start_function: Any) -> None:
    slots = 2
    function = start(start_function, "work", slots, env={"AWS_LAMBDA_LOG_LEVEL": "DEBUG"}, log_socket=True)
    results = invoke_all(function, [{"sleep": 0.3, "tag": i} for i in range(slots)])
    assert [r.kind for r in results] == ["response"] * slots

    socket = function.emulator.log_socket

    # Every worker connected twice (stdout, stderr); its records went there, as one JSON document per line. They
    # were written before the replies, but the emulator accepts and reads in a thread of its own: wait for them.
    def arrived() -> bool:
        ends = [line for line in socket.lines() if '"end ' in line]
        return len(ends) == slots and len(socket.connections()) == 2 * slots

    until = time.monotonic() + 10
    while not arrived() and time.monotonic() < until:
        time.sleep(0.01)
    assert len(socket.connections()) == 2 * slots
    check_log_lines([json.loads(line) for line in socket.lines() if line.startswith("{")], results)
    # The main process keeps the streams Lambda gave it: the pool's start is logged there, as awslambdaric does.
    stdout = json_lines(function.stdout())
    assert not [r for r in stdout if r.get("logger") == "concurrent"]
    [pool] = [r for r in stdout if isinstance(r.get("message"), dict)]
    assert pool["level"] == "DEBUG"
    assert pool["message"] == {
        "event": "runtime_worker_pool_initializing",
        "workerCount": slots,
        "executionEnvironmentMaxConcurrency": slots,
    }


@pytest.mark.parametrize("handler", ["work", "async_work"])
def test_next_errors_and_late_responses_leave_the_slots_serving(start_function: Any, handler: str) -> None:
    slots = 2
    function = start(start_function, handler, slots)
    failed_next = function.emulator.enqueue(b"{}", fault=Fault(next_status=500))
    late = function.emulator.enqueue(b"{}", fault=Fault(reply_status=410))
    assert function.emulator.result(failed_next).kind == "dropped"
    assert function.emulator.result(late).status == 410

    wait_idle(function, slots, delivered=2)
    bodies = check_own_context(invoke_all(function, [{"sleep": 0.3, "tag": i} for i in range(slots)]))
    assert_overlapped(bodies)
    assert "(410); continuing" in function.stderr()
    assert function.emulator.runtime_returncode() is None


def test_main_process_exits_non_zero_when_the_runtime_api_is_gone(start_function: Any) -> None:
    function = start(start_function, "work", 2)
    function.emulator.core.close()
    code = function.exit_code(timeout=30.0)
    assert code not in (0, None), function.output()


TRACE_ENVIRON_PROBE = """
import asyncio, json, os, sys
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "function"
os.environ["_X_AMZN_TRACE_ID"] = "Root=left-over-from-init"
from slipstream import concurrency
try:
    from botocore.handlers import add_recursion_detection_header
except ImportError:
    add_recursion_detection_header = None

def consumers():
    headers = {}
    if add_recursion_detection_header is not None:
        add_recursion_detection_header({"headers": headers})
    return {
        "get": os.environ.get("_X_AMZN_TRACE_ID"),
        "in": "_X_AMZN_TRACE_ID" in os.environ,
        "current": concurrency.current_trace_id(),
        "botocore": headers.get("X-Amzn-Trace-Id", "absent" if add_recursion_detection_header else None),
    }

async def invocation(trace, delay):
    concurrency._trace_id_var.set(trace)
    first = consumers()
    await asyncio.sleep(delay)
    second = consumers()
    in_thread = await asyncio.to_thread(consumers)
    os.environ["_X_AMZN_TRACE_ID"] = f"{trace};Parent=set-by-user-code"
    await asyncio.sleep(delay)
    after_set = consumers()
    del os.environ["_X_AMZN_TRACE_ID"]
    await asyncio.sleep(delay)
    return [first, second, in_thread, after_set, consumers()]

async def main():
    concurrency.install_trace_environ()
    seen = await asyncio.gather(invocation("Root=a", 0.03), invocation("Root=b", 0.01), invocation(None, 0.02))
    outside = consumers()
    # The rest of the environment is untouched.
    assert os.environ["AWS_LAMBDA_FUNCTION_NAME"] == "function"
    assert "_X_AMZN_TRACE_ID" not in os.environ.copy()
    print(json.dumps({"seen": seen, "outside": outside}))

asyncio.run(main())
"""


def test_trace_id_environment_answers_per_context() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", TRACE_ENVIRON_PROBE], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    # botocore's consumer, when it is installed: the header it adds to an AWS call, else "absent".
    with_botocore = report["outside"]["botocore"] is not None

    def expect(trace: str | None) -> dict[str, Any]:
        botocore = (trace or "absent") if with_botocore else None
        return {"get": trace, "in": trace is not None, "current": trace, "botocore": botocore}

    for trace, seen in zip(["Root=a", "Root=b", None], report["seen"], strict=True):
        first, second, in_thread, after_set, after_del = seen
        assert first == second == in_thread == expect(trace)
        user_set = f"{trace};Parent=set-by-user-code"
        assert after_set == expect(user_set)
        assert after_del == expect(None)
    # Outside every invocation there is no trace id, not init's value nor the latest invocation's.
    assert report["outside"] == expect(None)
