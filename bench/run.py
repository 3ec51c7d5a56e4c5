"""slipstream's benchmark harness: `python bench/run.py [--quick] [--scenario ID] [--runtime NAME] [--out DIR]`.

Every scenario runs every runtime under test against the project's emulator in the same run, each runtime a real
process started as Lambda starts it; repetitions are interleaved across runtimes. Results go to `results.json`,
`results.md` and PNG charts in the output directory. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH / "handlers")]

from harness import report, scenarios  # noqa: E402  (found through the path set just above)
from harness.model import Context, Outcome, RuntimeFailure, Settings  # noqa: E402
from harness.runtimes import Runtime, build_floor, builtin_runtimes, extra_runtime  # noqa: E402

EXIT_SUBJECT_FAILED = 3


class Progress:
    """One line per step on stderr: which scenario, runtime and repetition is running, and what it gave. On a
    terminal the running step is redrawn in place."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.live = stream.isatty()
        self.started = time.monotonic()

    def begin(self, scenario: str, runtime: str, step: str) -> None:
        self.current = f"[{self.done + 1:>3}/{self.total}] {scenario:<22} {runtime:<13} {step}"
        if self.live:
            self.stream.write(f"\r\033[K{self.current} …")
            self.stream.flush()

    def end(self, result: str) -> None:
        self.done += 1
        line = f"{self.current}  {result}"
        self.stream.write(f"\r\033[K{line}\n" if self.live else f"{line}\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        self.stream.write(f"{message}\n")
        self.stream.flush()


def headline_figure(scenario: scenarios.Scenario, outcome: Outcome) -> str:
    metric = scenario.primary
    return report.fmt(outcome.metrics[metric.name], metric.unit)


def run_scenario(
    scenario: scenarios.Scenario, runtimes: list[Runtime], context: Context, progress: Progress
) -> dict[str, dict[str, Any]]:
    """Every repetition of one scenario, runtimes interleaved; returns each runtime's entry."""
    unsupported: dict[str, str] = {}
    failures: dict[str, RuntimeFailure] = {}
    outcomes: dict[str, list[Outcome]] = {runtime.name: [] for runtime in runtimes}
    for runtime in runtimes:
        reason = scenario.support(runtime, context)
        if reason is not None:
            unsupported[runtime.name] = reason
        elif runtime.broken is not None:
            failures[runtime.name] = RuntimeFailure("could not start", runtime.broken, runtime.broken_log)
    active = [r for r in runtimes if r.name not in unsupported and r.name not in failures]

    def attempt(runtime: Runtime, step: str, measured: bool) -> None:
        if runtime.name in failures:
            progress.done += 1
            return
        progress.begin(scenario.id, runtime.name, step)
        try:
            outcome = scenario.measure(runtime, context) if measured else scenario.prepare(runtime, context)
        except RuntimeFailure as exc:
            failures[runtime.name] = exc
            progress.end(f"FAILED ({exc.kind}: {exc.message[:120]})")
            return
        if outcome is None:
            progress.end("ready")
        else:
            outcomes[runtime.name].append(outcome)
            progress.end(headline_figure(scenario, outcome))

    if type(scenario).prepare is not scenarios.Scenario.prepare:
        for runtime in active:
            attempt(runtime, "warm-up", measured=False)
    repetitions = scenario.repetitions(context.settings)
    for repetition in range(repetitions):
        # The order rotates too, so no runtime always runs first after a change of scenario.
        shift = repetition % len(active) if active else 0
        for runtime in active[shift:] + active[:shift]:
            attempt(runtime, f"rep {repetition + 1}/{repetitions}", measured=True)

    return {
        runtime.name: report.runtime_result(
            scenario, outcomes[runtime.name], unsupported.get(runtime.name), failures.get(runtime.name)
        )
        for runtime in runtimes
    }


def usage_error(message: str) -> SystemExit:
    sys.stderr.write(f"run.py: {message}\n")
    return SystemExit(2)


def select(names: list[str] | None, available: list[str], groups: dict[str, list[str]], what: str) -> list[str]:
    if not names:
        return available
    chosen: list[str] = []
    for name in (part.strip() for item in names for part in item.split(",")):
        matches = groups.get(name) or ([name] if name in available else [])
        if not matches:
            choices = ", ".join(sorted(set(groups) | set(available)))
            raise usage_error(f"unknown {what} {name!r}; choose from {choices}")
        chosen += [m for m in matches if m not in chosen]
    return [name for name in available if name in chosen]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmarks slipstream against awslambdaric and a native floor on the project's emulator.",
        epilog=f"Exit status: 0 when results were written, {EXIT_SUBJECT_FAILED} when slipstream itself failed a "
        "scenario (other runtimes' failures are reported in the results), 2 for bad arguments.",
    )
    parser.add_argument("--quick", action="store_true", help="every scenario briefly: a check that the harness works")
    parser.add_argument("--scenario", action="append", help="scenario id or group (repeatable, or comma-separated)")
    parser.add_argument("--runtime", action="append", help="runtime name (repeatable, or comma-separated)")
    parser.add_argument(
        "--extra-runtime",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="also measure another runtime, started as `COMMAND module.handler`",
    )
    parser.add_argument("--repetitions", type=int, help="repetitions per figure (default 5, quick 1)")
    parser.add_argument("--timeout", type=float, help="seconds any one wait for a runtime may take (a hang)")
    parser.add_argument("--cpu", type=int, help="CPU to pin sequential scenarios to (default: the last usable one)")
    parser.add_argument("--no-pin", action="store_true", help="leave sequential scenarios unpinned")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument("--out", type=Path, help="output directory (default bench/results, quick: bench/results/quick)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and runtimes, then exit")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.for_quick() if args.quick else Settings()
    overrides: dict[str, Any] = {}
    if args.repetitions is not None:
        if args.repetitions < 1:
            raise usage_error("--repetitions must be at least 1")
        overrides["repetitions"] = args.repetitions
        overrides["cold_repetitions"] = max(args.repetitions, settings.cold_repetitions * args.repetitions // 5)
    if args.timeout is not None:
        overrides["timeout"] = args.timeout
    if not args.no_pin:
        usable = sorted(os.sched_getaffinity(0))
        overrides["cpu"] = args.cpu if args.cpu is not None else usable[-1]
    return replace(settings, **overrides)


def main(argv: list[str]) -> int:
    args = parse(argv)
    args.argv = argv
    settings = settings_from(args)
    context = Context(settings)
    try:
        return run(args, settings, context)
    finally:
        for service in context.services.values():
            service.stop()
        shutil.rmtree(context.scratch, ignore_errors=True)


def compile_bytecode() -> None:
    """Writes the `.pyc` files of this checkout's slipstream and of the bench handlers, as pip writes them for an
    installed package: the environment may say PYTHONDONTWRITEBYTECODE, and without them every cold start of the
    editable build would compile slipstream's sources while awslambdaric, installed from PyPI, loads its `.pyc`."""
    import compileall

    import slipstream

    for folder in (Path(slipstream.__file__).parent, BENCH / "handlers"):
        compileall.compile_dir(str(folder), quiet=1)


def run(args: argparse.Namespace, settings: Settings, context: Context) -> int:
    every_runtime = builtin_runtimes()
    try:
        extras = [extra_runtime(spec) for spec in args.extra_runtime]
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    every_runtime.update((runtime.name, runtime) for runtime in extras)
    every_scenario = scenarios.build(settings, context)
    groups: dict[str, list[str]] = {}
    for scenario in every_scenario:
        groups.setdefault(scenario.group, []).append(scenario.id)
    scenario_ids = select(args.scenario, [s.id for s in every_scenario], groups, "scenario")
    # Runtimes given with --extra-runtime are measured whatever --runtime picks.
    runtime_names = select(args.runtime, list(every_runtime), {}, "runtime")
    runtime_names += [runtime.name for runtime in extras if runtime.name not in runtime_names]
    chosen = [s for s in every_scenario if s.id in scenario_ids]
    if args.list:
        for scenario in every_scenario:
            print(f"{scenario.id:<24} {scenario.group:<18} {scenario.title}")
        print()
        for runtime in every_runtime.values():
            print(f"{runtime.name:<24} {runtime.description}")
        return 0

    progress = Progress(0)
    compile_bytecode()
    if "floor" in runtime_names:
        progress.say("building the native floor (cargo build --release, bench/floor) …")
        ok, log = build_floor()
        if not ok:
            progress.say(f"the floor did not build; it is reported as failed:\n{log}")
            every_runtime["floor"] = replace(every_runtime["floor"], broken="the floor did not build", broken_log=log)
    runtimes = [every_runtime[name] for name in runtime_names]

    progress.total = sum(
        (s.repetitions(settings) + (type(s).prepare is not scenarios.Scenario.prepare))
        * sum(1 for r in runtimes if s.support(r, context) is None and r.broken is None)
        for s in chosen
    )
    out: Path = args.out or (BENCH / "results" / ("quick" if settings.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    progress.say(
        f"{len(chosen)} scenarios, {len(runtimes)} runtimes, {settings.repetitions} repetitions"
        f"{' (quick)' if settings.quick else ''}; results to {out}"
    )

    started = time.monotonic()
    load_before = report.load()
    entries = []
    for scenario in chosen:
        results = run_scenario(scenario, runtimes, context, progress)
        entries.append(report.scenario_entry(scenario, results))
    document: dict[str, Any] = {
        "schema_version": report.SCHEMA_VERSION,
        "meta": report.environment(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - (time.monotonic() - started))),
        "duration_s": time.monotonic() - started,
        "load_before": load_before,
        "load_after": report.load(),
        "argv": args.argv,
        "settings": {
            "quick": settings.quick,
            "repetitions": settings.repetitions,
            "cold_repetitions": settings.cold_repetitions,
            "timeout_s": settings.timeout,
            "target_seconds": settings.target_seconds,
            "cpu": settings.cpu,
            "concurrency": list(settings.concurrency),
            "stream_bytes": settings.stream_bytes,
            "upstream_delay": settings.upstream_delay,
        },
        "runtimes": {r.name: {"description": r.description, "command": r.command("<handler>")} for r in runtimes},
        "scenarios": entries,
    }
    document["charts"] = []
    if not args.no_charts:
        try:
            from harness import charts
        except ImportError as exc:
            progress.say(f"no charts: {exc} (make bench-install)")
        else:
            document["charts"] = charts.write(document, out)
    (out / "results.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(report.markdown(document))

    failed = [
        (entry["id"], name, result)
        for entry in entries
        for name, result in entry["results"].items()
        if result["status"] == "failed"
    ]
    progress.say(f"done in {document['duration_s']:.0f} s: {out / 'results.md'}")
    for scenario_id, name, result in failed:
        progress.say(f"  {name} failed {scenario_id}: {result['failure']}: {result['reason'][:200]}")
    return EXIT_SUBJECT_FAILED if any(name == report.SUBJECT for _, name, _ in failed) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
