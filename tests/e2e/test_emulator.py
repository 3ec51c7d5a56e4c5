"""The emulator on its own terms: its command line, its invoke endpoint and the Runtime API rules it enforces,
driven over raw HTTP so that nothing of slipstream's client is between the test and the wire."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slipstream.emulator import Emulator
from tests.conftest import HANDLERS

RUNTIME = [sys.executable, "-m", "slipstream", "basic.echo"]


def request(
    address: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_cli_invokes_events_from_files_and_stdin(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"from": "file"}')
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.emulator", "--event", str(event), "--event", "-", "--", *RUNTIME],
        input=b'{"from": "stdin", "n": 1}\n\n{"from": "stdin", "n": 2}\n',
        cwd=HANDLERS,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["response"] * 3
    assert [json.loads(line["body"]) for line in lines] == [
        {"from": "file"},
        {"from": "stdin", "n": 1},
        {"from": "stdin", "n": 2},
    ]
    assert len({line["requestId"] for line in lines}) == 3


def test_cli_exit_code_says_when_invocations_were_not_answered(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text("{}")
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.emulator", "--event", str(event), "--", *RUNTIME[:-1], "nosuchmodule.h"],
        cwd=HANDLERS,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["kind"] == "exit"


def test_cli_reports_an_unreadable_event_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slipstream.emulator", "--event", str(tmp_path / "missing.json")],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"cannot read an event" in result.stderr


def test_invoke_endpoint_answers_like_the_runtime_interface_emulator() -> None:
    with Emulator() as emulator:
        emulator.start_runtime(RUNTIME, cwd=str(HANDLERS))
        path = "/2015-03-31/functions/function/invocations"
        status, headers, body = request(emulator.address, "POST", path, b'{"via": "http"}')
        assert (status, json.loads(body)) == (200, {"via": "http"})
        assert headers["content-type"] == "application/json"
        assert "x-amz-function-error" not in headers

    with Emulator() as emulator:
        emulator.start_runtime([*RUNTIME[:-1], "basic.raises"], cwd=str(HANDLERS))
        status, headers, body = request(emulator.address, "POST", path, b"{}")
        assert status == 200
        assert headers["x-amz-function-error"] == "Unhandled"
        assert json.loads(body)["errorType"] == "ValueError"


def test_invoke_endpoint_refuses_an_oversized_event() -> None:
    with Emulator() as emulator:
        status, _, body = request(
            emulator.address, "POST", "/2015-03-31/functions/function/invocations", b"x" * (6 * 1024 * 1024 + 101)
        )
        assert status == 413
        assert json.loads(body)["errorType"] == "RequestEntityTooLarge"


def test_runtime_api_rules_at_the_wire() -> None:
    with Emulator() as emulator:
        base = "/2018-06-01/runtime"
        # A reply for an invocation that is not in flight.
        status, _, body = request(emulator.address, "POST", f"{base}/invocation/nope/response", b"{}")
        assert (status, json.loads(body)["errorType"]) == (400, "InvalidRequestID")
        # SnapStart routes exist only in a SnapStart environment, as in RAPID.
        assert request(emulator.address, "GET", f"{base}/restore/next")[0] == 404
        assert request(emulator.address, "GET", "/elsewhere")[0] == 404

        # The /next answer carries every header a runtime reads, and the reply is accepted once.
        request_id = emulator.enqueue(
            b'{"k": 1}', invocation_id="inv-1", tenant_id="t-1", trace_id="Root=1-a-b", client_context={"c": 1}
        )
        before_ms = int(time.time() * 1000)
        status, headers, body = request(emulator.address, "GET", f"{base}/invocation/next")
        assert (status, body) == (200, b'{"k": 1}')
        assert headers["lambda-runtime-aws-request-id"] == request_id
        assert headers["lambda-runtime-invocation-id"] == "inv-1"
        assert headers["lambda-runtime-aws-tenant-id"] == "t-1"
        assert headers["lambda-runtime-trace-id"] == "Root=1-a-b"
        assert json.loads(headers["lambda-runtime-client-context"]) == {"c": 1}
        assert headers["lambda-runtime-invoked-function-arn"] == emulator.function_arn
        assert int(headers["lambda-runtime-deadline-ms"]) >= before_ms + 299_000
        status, _, body = request(
            emulator.address, "POST", f"{base}/invocation/{request_id}/response", b'"ok"', {"Content-Type": "x/y"}
        )
        assert (status, json.loads(body)) == (202, {"status": "OK"})
        result = emulator.result(request_id, timeout=5)
        assert (result.kind, result.body, result.content_type) == ("response", b'"ok"', "x/y")
        assert request(emulator.address, "POST", f"{base}/invocation/{request_id}/response", b"1")[0] == 400

        # Init errors: recorded with their headers.
        status, _, _ = request(
            emulator.address,
            "POST",
            f"{base}/init/error",
            b'{"errorType": "E"}',
            {"Lambda-Runtime-Function-Error-Type": "E"},
        )
        assert status == 202
        [record] = emulator.init_errors()
        assert record.header("lambda-runtime-function-error-type") == "E"


def test_buffered_response_over_the_limit_gets_413_and_the_invocation_stays_open() -> None:
    with Emulator() as emulator:
        base = "/2018-06-01/runtime"
        request_id = emulator.enqueue(b"{}")
        request(emulator.address, "GET", f"{base}/invocation/next")
        status, _, body = request(
            emulator.address, "POST", f"{base}/invocation/{request_id}/response", b"x" * 6_291_557
        )
        assert (status, json.loads(body)["errorType"]) == (413, "RequestEntityTooLarge")
        # The error the runtime then posts ends the invocation.
        status, _, _ = request(emulator.address, "POST", f"{base}/invocation/{request_id}/error", b'{"errorType": "F"}')
        assert status == 202
        assert emulator.result(request_id, timeout=5).kind == "error"


def test_several_next_requests_wait_at_once() -> None:
    with Emulator() as emulator:
        base = "/2018-06-01/runtime"
        results: list[tuple[int, dict[str, str], bytes]] = []
        threads = [
            threading.Thread(target=lambda: results.append(request(emulator.address, "GET", f"{base}/invocation/next")))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        assert emulator.wait_records("next", 4, timeout=10)
        ids = [emulator.enqueue(json.dumps({"n": n}).encode()) for n in range(4)]
        for thread in threads:
            thread.join(10)
        assert sorted(json.loads(body)["n"] for _, _, body in results) == [0, 1, 2, 3]
        assert sorted(headers["lambda-runtime-aws-request-id"] for _, headers, _ in results) == sorted(ids)


@pytest.mark.parametrize("count", [1, 500])
def test_feed_serves_and_checks_every_reply(count: int) -> None:
    with Emulator(keep_records=False) as emulator:
        emulator.start_runtime(RUNTIME, cwd=str(HANDLERS))
        stats = emulator.run_feed(b'{"x": 1}', b'{"x": 1}', count, timeout=60)
        assert (stats["completed"], stats["errors"], stats["mismatches"]) == (count, 0, 0)
        assert len(stats["latencies_ns"]) == count and min(stats["latencies_ns"]) > 0
        # A reply that differs from what was expected is counted, never scored.
        wrong = emulator.run_feed(b'{"x": 1}', b'{"x": 2}', 5, timeout=60)
        assert wrong["mismatches"] == 5


def test_affinity_pins_the_runtime_and_leaves_the_caller_as_it_was() -> None:
    before = os.sched_getaffinity(0)
    with Emulator(affinity={0}) as emulator:
        emulator.start_runtime(RUNTIME, cwd=str(HANDLERS), affinity={0})
        assert os.sched_getaffinity(emulator.runtime_pid) == {0}
        assert emulator.invoke(b"[1]", timeout=20).body == b"[1]"
    assert os.sched_getaffinity(0) == before
