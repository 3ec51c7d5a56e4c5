"""The end-to-end basics once more, against cargo-lambda's emulator: one nobody here wrote, so slipstream's own
emulator cannot drift into agreeing with slipstream's bugs.

Its known quirks: the deadline header is relative, posts answer 200 instead of 202, and `/init/error` blocks (so
init errors are not exercised here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HANDLERS = Path(__file__).parent.parent / "handlers"
CARGO_LAMBDA = Path(sys.executable).parent / "cargo-lambda"

pytestmark = pytest.mark.skipif(not CARGO_LAMBDA.exists(), reason="cargo-lambda is installed by `make install`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


class CargoLambda:
    def __init__(self, port: int) -> None:
        self.port = port

    def invoke(self, payload: object) -> tuple[int, str]:
        result = subprocess.run(
            [
                str(CARGO_LAMBDA),
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                str(self.port),
                "--data-ascii",
                json.dumps(payload),
                "_",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.returncode, result.stdout + result.stderr


@pytest.fixture
def cargo_lambda(tmp_path: Path) -> Iterator[CargoLambda]:
    # cargo-lambda wants a Cargo project with a binary target; with --only-lambda-apis it never builds it.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.rs").write_text("fn main() {}\n")
    (tmp_path / "Cargo.toml").write_text(
        '[package]\nname = "f"\nversion = "0.1.0"\nedition = "2021"\n\n[[bin]]\nname = "f"\npath = "src/main.rs"\n'
    )
    port = free_port()
    server = subprocess.Popen(
        [str(CARGO_LAMBDA), "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield CargoLambda(port)
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def runtime(cargo_lambda: CargoLambda) -> Iterator[Callable[[str], None]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(handler: str) -> None:
        env = dict(
            os.environ,
            AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{cargo_lambda.port}/.rt",
            AWS_LAMBDA_FUNCTION_NAME="_",
            AWS_LAMBDA_FUNCTION_VERSION="1",
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="4096",
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "slipstream", handler],
                cwd=HANDLERS,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def test_echo_and_context_through_cargo_lambda(cargo_lambda: CargoLambda, runtime: Callable[[str], None]) -> None:
    runtime("basic.context_fields")
    code, out = cargo_lambda.invoke({"a": 1})
    assert code == 0, out
    fields = json.loads(out)
    assert fields["function_name"] == "_"
    assert fields["memory_limit_in_mb"] == "4096"
    assert fields["remaining_positive"] is True  # the relative deadline header became an absolute one
    assert fields["trace_env"].startswith("Root=")
    assert fields["event_type"] == "dict"


def test_handler_error_through_cargo_lambda(cargo_lambda: CargoLambda, runtime: Callable[[str], None]) -> None:
    runtime("basic.raises")
    code, out = cargo_lambda.invoke({})
    assert code != 0
    assert "bad input" in out and "ValueError" in out
    # The runtime is still serving after the error.
    code, out = cargo_lambda.invoke({})
    assert "ValueError" in out


def test_async_and_marshalling_through_cargo_lambda(cargo_lambda: CargoLambda, runtime: Callable[[str], None]) -> None:
    runtime("basic.async_echo")
    code, out = cargo_lambda.invoke({"k": [1, 2.5, None, "é"]})
    assert code == 0, out
    assert json.loads(out) == {"async": {"k": [1, 2.5, None, "é"]}}
