"""`python -m slipstream.emulator` (also `slipstream emulator`): a local Runtime API.

    python -m slipstream.emulator --event event.json -- python -m slipstream app.handler
    echo '{"a": 1}' | python -m slipstream.emulator --event - -- python -m slipstream app.handler
    python -m slipstream.emulator --port 9001 -- python -m slipstream app.handler   # then:
    curl -N -d '{}' http://127.0.0.1:9001/2015-03-31/functions/function/invocations

With events, each is invoked in turn and its result printed as one JSON line; the exit code is 0 when every
invocation got an answer. Without events the emulator serves its invoke endpoint until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from slipstream.emulator import Emulator


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    command: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="slipstream emulator", description="A local AWS Lambda Runtime API.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument(
        "--event", action="append", default=[], help="a file holding one event; `-`: one per line of stdin"
    )
    parser.add_argument("--content-type", default="application/json", help="content type of the events")
    parser.add_argument("--snap-start", action="store_true", help="serve the SnapStart restore endpoints")
    parser.add_argument("--max-concurrency", type=int, default=0, help="Managed Instances: invocations at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="the function timeout in seconds")
    parser.add_argument("--handler", help="_HANDLER for the runtime (for a `bootstrap` command)")
    return parser.parse_args(argv), command


def read_events(sources: list[str]) -> list[bytes]:
    events: list[bytes] = []
    for source in sources:
        if source == "-":
            events.extend(line.rstrip(b"\n") for line in sys.stdin.buffer if line.strip())
        else:
            with open(source, "rb") as f:
                events.append(f.read())
    return events


def main(argv: list[str] | None = None) -> int:
    args, command = parse(sys.argv[1:] if argv is None else argv)
    try:
        events = read_events(args.event)
    except OSError as exc:
        sys.stderr.write(f"slipstream emulator: cannot read an event: {exc}\n")
        return 2
    with Emulator(
        port=args.port, snap_start=args.snap_start, max_concurrency=args.max_concurrency, timeout=args.timeout
    ) as emulator:
        sys.stderr.write(f"slipstream emulator: Runtime API on {emulator.address}\n")
        if command:
            emulator.start_runtime(command, env={}, cwd=os.getcwd(), handler=args.handler)
        if not events:
            return serve(emulator, bool(command))
        answered = 0
        for event in events:
            try:
                result = emulator.invoke(event, timeout=args.timeout + 5, content_type=args.content_type)
            except TimeoutError as exc:
                print(json.dumps({"kind": "timeout", "message": str(exc)}), flush=True)
                continue
            answered += result.kind in {"response", "error"}
            print(
                json.dumps(
                    {
                        "requestId": result.request_id,
                        "kind": result.kind,
                        "contentType": result.content_type,
                        "body": result.body.decode(errors="replace"),
                    }
                ),
                flush=True,
            )
        if command:
            sys.stderr.write(emulator.output())
        return 0 if answered == len(events) else 1


def serve(emulator: Emulator, with_runtime: bool) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sys.stderr.write(
        f"slipstream emulator: invoke with POST http://{emulator.address}/2015-03-31/functions/function/invocations\n"
    )
    while not stop.wait(0.2):
        if with_runtime and emulator.runtime_returncode() is not None:
            sys.stderr.write(f"slipstream emulator: the runtime exited with {emulator.runtime_returncode()}\n")
            sys.stderr.write(emulator.output())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
