"""Fixtures shared by the suites: a function, i.e. an emulator plus a runtime process serving one handler."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HANDLERS = Path(__file__).parent / "handlers"
RUNTIMES = {
    "slipstream": [sys.executable, "-m", "slipstream"],
    "awslambdaric": [sys.executable, "-m", "awslambdaric"],
}


class Function:
    """An emulator with a runtime started on it; `invoke` answers with the emulator's record of the result."""

    def __init__(self, runtime: str, handler: str, env: dict[str, str] | None, cwd: Path, **emulator: Any) -> None:
        from slipstream.emulator import Emulator

        self.emulator = Emulator(**emulator)
        self.runtime = runtime
        self.handler = handler
        self.emulator.start_runtime([*RUNTIMES[runtime], handler], env=env or {}, cwd=str(cwd))

    def invoke(self, payload: object = None, *, timeout: float = 20.0, **options: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload if payload is not None else {}).encode()
        return self.emulator.invoke(body, timeout=timeout, **options)

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.emulator.wait_records("next", 1, timeout), self.output()

    def stop(self) -> Any:
        return self.emulator.stop_runtime()

    def exit_code(self, timeout: float = 20.0) -> int:
        import time

        until = time.monotonic() + timeout
        while time.monotonic() < until:
            code = self.emulator.runtime_returncode()
            if code is not None:
                return code
            time.sleep(0.02)
        raise TimeoutError("the runtime did not exit")

    def output(self) -> str:
        paths = self.emulator.runtime_output
        if paths is None:
            return ""
        return "".join(Path(p).read_text(errors="replace") for p in paths)

    def stdout(self) -> str:
        paths = self.emulator.runtime_output
        return "" if paths is None else Path(paths[0]).read_text(errors="replace")

    def stderr(self) -> str:
        paths = self.emulator.runtime_output
        return "" if paths is None else Path(paths[1]).read_text(errors="replace")

    def close(self) -> None:
        self.emulator.close()


@pytest.fixture
def start_function() -> Iterator[Any]:
    """`start_function(handler, runtime="slipstream", env=None, cwd=HANDLERS, **emulator_options)`."""
    started: list[Function] = []

    def start(
        handler: str,
        runtime: str = "slipstream",
        env: dict[str, str] | None = None,
        cwd: Path = HANDLERS,
        **emulator: Any,
    ) -> Function:
        function = Function(runtime, handler, env, cwd, **emulator)
        started.append(function)
        return function

    try:
        yield start
    finally:
        for function in started:
            function.close()
