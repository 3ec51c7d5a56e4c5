"""The benchmark harness works: a quick run measures every scenario for every runtime (or says why it cannot),
writes the JSON, the Markdown and the charts, and a runtime that crashes, hangs or answers wrongly is reported as
such while the run goes on. Speed is never asserted here; bench/ is where figures live."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"
RUNTIMES = ["slipstream", "slipstream-m", "awslambdaric", "floor", "floor-socket"]
GROUPS = {
    "echo",
    "echo-1mb",
    "buffered-5mb",
    "stream",
    "cold-start",
    "concurrency-cpu",
    "concurrency-async",
    "concurrency-init",
}
# Where each runtime must have figures; everywhere else it must say why not.
MEASURED = {
    "slipstream": {"*"},
    "awslambdaric": {
        "echo",
        "echo-1mb",
        "echo-1mb-text",
        "buffered-5mb",
        "cold-start",
        "cold-start-boto3",
        "concurrency-init-boto3-2",
    }
    | {f"concurrency-cpu-{n}" for n in (1, 2)},
    "floor": {"echo", "echo-1mb", "echo-1mb-text", "buffered-5mb", "stream-20mb", "cold-start"},
    "floor-socket": {"cold-start", "cold-start-boto3"},
    "slipstream-m": {"cold-start", "cold-start-boto3", "concurrency-init-boto3-2"},
}
CHARTS = {"throughput", "latency", "cold_start", "memory", "concurrency"}


def run_bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    return run_bench("--quick", "--out", str(out)), out


def check_figures(entry: dict[str, Any], metrics: dict[str, Any], repetitions: int) -> None:
    assert entry["repetitions"] == repetitions
    assert set(entry["metrics"]) == set(metrics)
    for name, figure in entry["metrics"].items():
        assert len(figure["values"]) == repetitions, name
        assert all(math.isfinite(v) and v > 0 for v in figure["values"]), (name, figure)
        assert figure["min"] <= figure["median"] <= figure["max"], (name, figure)


@pytest.mark.timeout(300)
def test_quick_run_measures_every_scenario_for_every_runtime(quick: tuple[Any, Path]) -> None:
    done, out = quick
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "results.json").read_text())

    assert document["schema_version"] == 1
    meta = document["meta"]
    assert len(meta["git_commit"]) == 40
    assert meta["python_version"] == sys.version.split()[0]
    assert meta["build_profile"] in {"release", "debug", "profiling"}
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["cpu_model"] and meta["machine"]["kernel"]
    assert document["settings"]["quick"] is True
    assert list(document["runtimes"]) == RUNTIMES

    scenarios = document["scenarios"]
    assert {s["group"] for s in scenarios} == GROUPS
    assert sorted(s["params"]["concurrency"] for s in scenarios if s["group"] == "concurrency-cpu") == [1, 2]
    for scenario in scenarios:
        assert set(scenario["results"]) == set(RUNTIMES), scenario["id"]
        assert scenario["primary_metric"] in scenario["metrics"]
        assert scenario["cpu_metric"] in scenario["metrics"]
        assert {"peak_rss_mib", "peak_pss_mib"} <= set(scenario["metrics"])
        cold = scenario["group"] == "cold-start"
        repetitions = document["settings"]["cold_repetitions" if cold else "repetitions"]
        for runtime, entry in scenario["results"].items():
            where = (scenario["id"], runtime, entry.get("reason"))
            if "*" in MEASURED[runtime] or scenario["id"] in MEASURED[runtime]:
                assert entry["status"] == "ok", where
                check_figures(entry, scenario["metrics"], repetitions)
            else:
                assert entry["status"] == "not_supported", where
                assert entry["reason"] and not entry["metrics"], where

    echo = next(s for s in scenarios if s["id"] == "echo")
    assert echo["results"]["slipstream"]["latency_percentiles_us"][-1][0] == 100
    ratio = echo["ratios"]["slipstream/awslambdaric"]["invocations_per_s"]
    assert ratio["ratio"] == pytest.approx(
        echo["results"]["slipstream"]["metrics"]["invocations_per_s"]["median"]
        / echo["results"]["awslambdaric"]["metrics"]["invocations_per_s"]["median"]
    )
    assert "slipstream/floor" in echo["ratios"]

    markdown = (out / "results.md").read_text()
    assert "## Headline" in markdown
    for scenario in scenarios:
        assert scenario["title"] in markdown

    assert set(document["charts"]) == CHARTS
    for name in CHARTS:
        image = (out / f"{name}.png").read_bytes()
        assert image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 10_000, name

    # The progress display names the scenario, the runtime and the repetition.
    assert "echo-1mb" in done.stderr and "awslambdaric" in done.stderr and "rep 2/2" in done.stderr


BROKEN = {
    "crashes": "import sys\nsys.stderr.write('boom: crashing on purpose\\n')\nsys.exit(3)\n",
    "lies": """
import http.client, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
connection = http.client.HTTPConnection(host, int(port))
while True:
    connection.request("GET", "/2018-06-01/runtime/invocation/next")
    answer = connection.getresponse()
    answer.read()
    request_id = answer.getheader("Lambda-Runtime-Aws-Request-Id")
    connection.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", body=b'{"fast": "wrong"}')
    connection.getresponse().read()
""",
    "hangs": """
import http.client, os, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
connection = http.client.HTTPConnection(host, int(port))
connection.request("GET", "/2018-06-01/runtime/invocation/next")
connection.getresponse().read()
print("took an event and went to sleep", flush=True)
time.sleep(600)
""",
}


@pytest.mark.timeout(120)
def test_runtimes_that_crash_lie_or_hang_are_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    extra = []
    for name, source in BROKEN.items():
        script = tmp_path / f"{name}.py"
        script.write_text(source)
        extra += ["--extra-runtime", f"{name}={sys.executable} {script}"]
    out = tmp_path / "out"
    done = run_bench(
        "--quick", "--scenario", "echo", "--runtime", "slipstream", *extra, "--timeout", "3", "--no-charts",
        "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (echo,) = json.loads((out / "results.json").read_text())["scenarios"]
    results = echo["results"]

    assert results["slipstream"]["status"] == "ok"
    assert {name: results[name]["status"] for name in BROKEN} == dict.fromkeys(BROKEN, "failed")
    assert results["crashes"]["failure"] == "crashed"
    assert "boom: crashing on purpose" in results["crashes"]["log_tail"]
    assert results["lies"]["failure"] == "wrong results"
    assert results["hangs"]["failure"] == "timed out"
    assert "went to sleep" in results["hangs"]["log_tail"]
    # A failed runtime gets no figure and no ratio, however fast it was.
    assert all(not results[name]["metrics"] for name in BROKEN)
    assert set(echo["ratios"]) == set()
    assert "## Failures" in (out / "results.md").read_text()


def test_unknown_scenario_is_refused() -> None:
    done = run_bench("--scenario", "nonsense", "--no-charts", timeout=60)
    assert done.returncode == 2
    assert "unknown scenario 'nonsense'" in done.stderr
