"""The runtimes under test, how each is started, what each can do, and the build of the native floor."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

from harness.model import BENCH

# The script pip installs as `slipstream-runtime`; run from the checkout, as the editable build is.
LAUNCHER = BENCH.parent / "python" / "slipstream.data" / "scripts" / "slipstream-runtime"
FLOOR_MANIFEST = BENCH / "floor" / "Cargo.toml"
FLOOR_TARGET = BENCH / "floor" / "target"
FLOOR_BINARY = FLOOR_TARGET / "release" / "floor"


@dataclass(frozen=True)
class Runtime:
    """A runtime process: `argv`, then the handler string when it takes one, started in the emulator's environment."""

    name: str
    description: str
    argv: tuple[str, ...]
    takes_handler: bool = True
    # Whether it runs the scenario's Python handler (the native floor only echoes, answers a file or streams).
    runs_python: bool = True
    streams: bool = True
    awaits: bool = True
    managed_instances: bool = True
    cold_start_only: bool = False
    # Set when the runtime cannot run at all in this checkout (the floor did not build).
    broken: str | None = None
    broken_log: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def command(self, handler: str) -> list[str]:
        return [*self.argv, handler] if self.takes_handler else list(self.argv)


def builtin_runtimes() -> dict[str, Runtime]:
    python = sys.executable
    return {
        runtime.name: runtime
        for runtime in (
            Runtime(
                "slipstream",
                "slipstream-runtime, the entry point for images (this checkout's build)",
                (python, str(LAUNCHER)),
            ),
            Runtime(
                "slipstream-m",
                "python -m slipstream: the same runtime started through runpy, cold starts only",
                (python, "-m", "slipstream"),
                cold_start_only=True,
            ),
            Runtime(
                "awslambdaric",
                "python -m awslambdaric (AWS's runtime interface client, from PyPI)",
                (python, "-m", "awslambdaric"),
                streams=False,
                awaits=False,
            ),
            Runtime(
                "floor",
                "native Runtime API loop, echo only (bench/floor, Rust std)",
                (str(FLOOR_BINARY),),
                takes_handler=False,
                runs_python=False,
                awaits=False,
                managed_instances=False,
            ),
            Runtime(
                "floor-socket",
                "Python with only the builtin _socket module (bench/floor_socket.py), cold starts only",
                (python, str(BENCH / "floor_socket.py")),
                streams=False,
                awaits=False,
                managed_instances=False,
                cold_start_only=True,
            ),
        )
    }


def extra_runtime(spec: str) -> Runtime:
    """`NAME=COMMAND`: another runtime to measure, started as `COMMAND handler` (split on whitespace)."""
    name, sep, command = spec.partition("=")
    if not sep or not name or not command.split():
        raise ValueError(f"--extra-runtime takes NAME=COMMAND, not {spec!r}")
    return Runtime(name, f"{command} (given on the command line)", tuple(command.split()))


def build_floor() -> tuple[bool, str]:
    """Builds the native floor (cargo is incremental, so this is quick when nothing changed); (ok, log)."""
    command = [
        "cargo",
        "build",
        "--release",
        "--quiet",
        "--manifest-path",
        str(FLOOR_MANIFEST),
        "--target-dir",
        str(FLOOR_TARGET),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{' '.join(command)}: {exc}"
    log = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or not os.access(FLOOR_BINARY, os.X_OK):
        return False, f"{' '.join(command)} exited with {done.returncode}\n{log}"
    return True, log
