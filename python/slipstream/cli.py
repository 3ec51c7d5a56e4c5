"""The `slipstream` command: `demo`, `emulator`, `bench` and `snapshot`.

Nothing here is on the runtime's path: `python -m slipstream module.handler` never imports this module.
"""

from __future__ import annotations

import os
import sys

USAGE = """usage: slipstream <command> [options]

commands:
  demo       run the example handlers on the built-in emulator and print what they answered
  emulator   run the local Runtime API emulator (see `slipstream emulator --help`)
  bench      run the benchmark harness against awslambdaric (from a source checkout)
  snapshot   snapshot a function's init at build time for faster cold starts (see `slipstream snapshot --help`)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"help", "-h", "--help"}:
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        return demo(rest)
    if command == "emulator":
        from slipstream.emulator.__main__ import main as emulator_main

        return int(emulator_main(rest))
    if command == "bench":
        return bench(rest)
    if command == "snapshot":
        from slipstream.snapshot import main as snapshot_main

        return snapshot_main(rest)
    sys.stderr.write(f"slipstream: unknown command {command!r}\n{USAGE}")
    return 2


def demo(argv: list[str]) -> int:
    """Starts the emulator and slipstream on the example handlers, invokes them and prints the answers."""
    from slipstream.emulator import Emulator

    package = os.path.dirname(os.path.abspath(__file__))
    runs = [
        ("examples.hello.handler", [b'{"name": "Lambda"}', b'{"name": "slipstream"}']),
        ("examples.hello.fails", [b'{"oops": true}']),
        ("examples.hello.tokens", [b"{}"]),
    ]
    failures = 0
    for handler, events in runs:
        print(f"== {handler}")
        with Emulator() as emulator:
            emulator.start_runtime([sys.executable, "-m", "slipstream", handler], cwd=package)
            for event in events:
                result = emulator.invoke(event, timeout=10)
                how = f"{result.kind}, streamed in {result.chunks} chunks" if result.streamed else result.kind
                print(f"  event    {event.decode()}")
                print(f"  {how:<8} {result.body.decode(errors='replace')}")
                failures += result.kind not in {"response", "error"}
            emulator.stop_runtime()
            log = emulator.output().strip()
            if log:
                print("  log      " + log.replace("\n", "\n           "))
    return 1 if failures else 0


def bench(argv: list[str]) -> int:
    """Runs `bench/run.py` from the source checkout this package was installed from (or the current directory)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.getcwd(), os.path.dirname(os.path.dirname(here))):
        script = os.path.join(root, "bench", "run.py")
        if os.path.exists(script):
            os.execv(sys.executable, [sys.executable, script, *argv])
    sys.stderr.write("slipstream bench: the harness lives in the source checkout's bench/; run it from there\n")
    return 2
