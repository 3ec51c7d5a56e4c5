"""Cold start with a snapshot (issue #6): process spawn to the first `/next`, slipstream serving its init from
`slipstream snapshot` against awslambdaric, for three functions:

- `boto3, no .pyc`: boto3 imported and an S3 client built at module level, the packages it needs copied into the
  task root without `__pycache__`, `PYTHONDONTWRITEBYTECODE=1` and `PYTHONPYCACHEPREFIX` at an empty directory, so
  that no bytecode is found or written, as with code shipped without it on a read-only file system (target 0.4x);
- `boto3, .pyc`: the same function with the bytecode caches in place (target 0.6x);
- `trivial`: a handler that imports nothing (target 0.5x).

Each figure is the median of interleaved runs (`--runs`, default 7) after one unmeasured start per runtime, which
also checks that the function answers. slipstream runs with and without its snapshot, so the snapshot's own share
is visible, and with it once more started through `python -m`. Beside the wall time, the CPU time of the runtime's
process to its first `/next`: the steadier figure on a shared machine.
`python bench/coldstart_snapshot.py [--runs N] [--scenario NAME] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from slipstream import _native
from slipstream.emulator import Emulator

REPO = Path(__file__).resolve().parent.parent
BOTO3_HANDLER = """import boto3

S3 = boto3.client("s3")


def handler(event, context):
    return event
"""
TRIVIAL_HANDLER = """def handler(event, context):
    return event
"""
# What `import boto3; boto3.client("s3")` imports from site-packages (boto3's dependencies and theirs).
BOTO3_PACKAGES = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"]
EVENT = b'{"cold": true}'
# slipstream starts as images start it, through `slipstream-runtime` (run from the checkout, as the editable build
# is); `-m` adds runpy's imports to every start, shown apart. awslambdaric starts as AWS's image instructions do.
LAUNCHER = REPO / "python" / "slipstream.data" / "scripts" / "slipstream-runtime"
RUNTIMES = {
    "awslambdaric": ([sys.executable, "-m", "awslambdaric"], False),
    "slipstream": ([sys.executable, str(LAUNCHER)], False),
    "slipstream+snapshot": ([sys.executable, str(LAUNCHER)], True),
    "-m slipstream+snapshot": ([sys.executable, "-m", "slipstream"], True),
}


@dataclass
class Scenario:
    name: str
    handler_source: str
    target: float
    no_pyc: bool = False
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def prepare(scenario: Scenario, root: Path) -> tuple[Path, dict[str, str]]:
    """A task root holding the function (and, without bytecode, the packages it needs), and its environment."""
    task_root = root / scenario.name.replace(" ", "-").replace(",", "").replace(".", "")
    task_root.mkdir()
    (task_root / "app.py").write_text(scenario.handler_source)
    env: dict[str, str] = {}
    if scenario.no_pyc:
        for name in BOTO3_PACKAGES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise SystemExit(f"{name} is not installed: .venv/bin/pip install -r requirements-bench.txt")
            origin = Path(spec.origin)
            if spec.submodule_search_locations is not None:
                shutil.copytree(origin.parent, task_root / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copyfile(origin, task_root / origin.name)
        empty = root / "no-pycache"
        empty.mkdir()
        empty.chmod(0o555)
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}
    return task_root, env


def take_snapshot(task_root: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slipstream", "snapshot", "app.handler"],
        cwd=task_root,
        env={**os.environ, **env, "LAMBDA_TASK_ROOT": str(task_root)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"slipstream snapshot failed:\n{done.stdout}{done.stderr}")
    print(f"  {done.stdout.strip()}", file=sys.stderr)


def cpu_ms(pid: int) -> float:
    """CPU time of every thread of a process so far (schedstat, in ns): the runtime waits in `/next` when this is
    read, so it is its CPU time to the first `/next`, a steadier figure than wall time on a shared machine."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e6


def start(runtime: str, task_root: Path, env: dict[str, str], answer: bool) -> tuple[float, float]:
    """One cold start: milliseconds from the spawn to the first `/next`, and CPU milliseconds to it. With `answer`,
    checks the reply too."""
    argv, snapshot = RUNTIMES[runtime]
    extra = {**env, "SLIPSTREAM_SNAPSHOT": "" if snapshot else "0"}
    with Emulator() as emulator:
        emulator.start_runtime([*argv, "app.handler"], cwd=str(task_root), env=extra)
        if not emulator.wait_records("next", 1, 60):
            raise SystemExit(f"{runtime} did not reach /next:\n{emulator.output()}")
        cpu = cpu_ms(emulator.runtime_pid)
        if answer:
            result = emulator.invoke(EVENT, timeout=60)
            if result.kind != "response" or result.body != EVENT:
                raise SystemExit(f"{runtime} answered {result.kind}: {result.body[:200]!r}\n{emulator.output()}")
        spawned = emulator.spawned_ns
        first_next = emulator.records("next")[0].at_ns
        emulator.stop_runtime()
        output = emulator.output()
    # A snapshot that is stale or ignored says so on stderr: the figure would not be the snapshot's.
    if snapshot and "slipstream: snapshot" in output:
        raise SystemExit(f"the snapshot was not used as built:\n{output}")
    return (first_next - spawned) / 1e6, cpu


def run(scenario: Scenario, runs: int, root: Path) -> None:
    print(f"{scenario.name}:", file=sys.stderr)
    task_root, env = prepare(scenario, root)
    take_snapshot(task_root, env)
    for runtime in RUNTIMES:
        start(runtime, task_root, env, answer=True)
    scenario.samples = {runtime: [] for runtime in RUNTIMES}
    scenario.cpu = {runtime: [] for runtime in RUNTIMES}
    for number in range(runs):
        for runtime in RUNTIMES:
            wall, cpu = start(runtime, task_root, env, answer=False)
            scenario.samples[runtime].append(wall)
            scenario.cpu[runtime].append(cpu)
        figures = "  ".join(
            f"{runtime} {scenario.samples[runtime][-1]:7.1f} ({scenario.cpu[runtime][-1]:.1f})" for runtime in RUNTIMES
        )
        print(f"  run {number + 1}/{runs}: {figures} ms", file=sys.stderr)


def table(scenarios: list[Scenario], runs: int) -> str:
    lines = [
        f"Spawn to first /next, median of {runs} interleaved runs, wall ms (CPU ms of the runtime process in "
        "brackets); ratio = slipstream+snapshot / awslambdaric, on wall time (on CPU time in brackets); slipstream "
        "starts through slipstream-runtime, `-m slipstream` through runpy",
        "",
        "| function | " + " | ".join(RUNTIMES) + " | ratio | target |",
        "|---|" + "---:|" * len(RUNTIMES) + "---:|---|",
    ]
    for scenario in scenarios:
        wall = {runtime: statistics.median(values) for runtime, values in scenario.samples.items()}
        cpu = {runtime: statistics.median(values) for runtime, values in scenario.cpu.items()}
        ratio = wall["slipstream+snapshot"] / wall["awslambdaric"]
        cpu_ratio = cpu["slipstream+snapshot"] / cpu["awslambdaric"]
        verdict = "met" if ratio <= scenario.target else "missed"
        figures = " | ".join(f"{wall[runtime]:.1f} ({cpu[runtime]:.1f})" for runtime in RUNTIMES)
        lines.append(
            f"| {scenario.name} | {figures} | {ratio:.2f}x ({cpu_ratio:.2f}x) | <= {scenario.target:.2f}x {verdict} |"
        )
    return "\n".join(lines)


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="measured runs per runtime and function (default 7)")
    parser.add_argument("--scenario", action="append", help="only this function (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write every sample, with the build measured, as JSON")
    args = parser.parse_args()

    scenarios = [
        Scenario("boto3, no .pyc", BOTO3_HANDLER, 0.4, no_pyc=True),
        Scenario("boto3, .pyc", BOTO3_HANDLER, 0.6),
        Scenario("trivial", TRIVIAL_HANDLER, 0.5),
    ]
    if args.scenario:
        scenarios = [scenario for scenario in scenarios if scenario.name in args.scenario]
    if importlib.util.find_spec("boto3") is None or importlib.util.find_spec("awslambdaric") is None:
        raise SystemExit("boto3 and awslambdaric are needed: .venv/bin/pip install -r requirements-bench.txt")

    # The runtime's own bytecode as a wheel install has it; installed packages have theirs from pip.
    compileall.compile_dir(str(Path(_native.__file__).parent), quiet=1)
    with tempfile.TemporaryDirectory(prefix="slipstream-coldstart-") as directory:
        try:
            for scenario in scenarios:
                run(scenario, args.runs, Path(directory))
        finally:
            # The read-only bytecode directory must be writable again for the cleanup.
            for empty in Path(directory).glob("no-pycache"):
                empty.chmod(0o755)

    print(table(scenarios, args.runs))
    if args.json:
        document = {
            "git": git_revision(),
            "python": sys.version,
            "slipstream": _native.__version__,
            "build_profile": _native.build_profile,
            "runs": args.runs,
            "scenarios": {s.name: {"target": s.target, "wall_ms": s.samples, "cpu_ms": s.cpu} for s in scenarios},
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
