"""Figures from repetitions, ratios between runtimes, and the results written as JSON and Markdown.

The Markdown is rendered from the same data as the JSON, never edited by hand.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from harness.model import ROOT, Outcome, RuntimeFailure
from harness.scenarios import Scenario, percentile

SCHEMA_VERSION = 1
SUBJECT = "slipstream"
# Percentiles kept for the latency distribution chart.
CDF_POINTS = (*range(0, 100), 99.5, 99.9, 99.99, 100)


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def runtime_result(
    scenario: Scenario,
    outcomes: list[Outcome],
    unsupported: str | None = None,
    failed: RuntimeFailure | None = None,
) -> dict[str, Any]:
    """One runtime's entry in a scenario: its figures, or why there are none."""
    if unsupported is not None:
        return {"status": "not_supported", "reason": unsupported, "repetitions": 0, "metrics": {}}
    if failed is not None:
        # No figure for a run that went wrong, even if some repetitions went right: a wrong runtime never scores.
        return {
            "status": "failed",
            "failure": failed.kind,
            "reason": failed.message,
            "log_tail": failed.log_tail,
            "repetitions": len(outcomes),
            "metrics": {},
        }
    entry: dict[str, Any] = {
        "status": "ok",
        "reason": None,
        "repetitions": len(outcomes),
        "metrics": {
            metric.name: summary([outcome.metrics[metric.name] for outcome in outcomes]) for metric in scenario.metrics
        },
    }
    pooled = sorted(value for outcome in outcomes for value in outcome.latencies_us or ())
    if pooled:
        entry["latency_percentiles_us"] = [[q, percentile(pooled, q)] for q in CDF_POINTS]
        entry["invocations_measured"] = len(pooled)
    return entry


def ratios(scenario: Scenario, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """slipstream's figure over each other runtime's, per metric: the ratio of medians, and the range of the
    ratios of the same repetition (runtimes are interleaved, so repetition i of each saw the same noise)."""
    mine = results.get(SUBJECT)
    if mine is None or mine["status"] != "ok":
        return {}
    found: dict[str, dict[str, Any]] = {}
    for other, theirs in results.items():
        if other == SUBJECT or theirs["status"] != "ok":
            continue
        per_metric = {}
        for metric in scenario.metrics:
            a, b = mine["metrics"][metric.name], theirs["metrics"][metric.name]
            if not b["median"]:
                continue
            paired = [x / y for x, y in zip(a["values"], b["values"], strict=False) if y]
            per_metric[metric.name] = {
                "ratio": a["median"] / b["median"],
                "paired_min": min(paired) if paired else None,
                "paired_max": max(paired) if paired else None,
                "better": metric.better,
            }
        found[f"{SUBJECT}/{other}"] = per_metric
    return found


def scenario_entry(scenario: Scenario, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": scenario.id,
        "group": scenario.group,
        "title": scenario.title,
        "description": scenario.description,
        "handler": scenario.handler,
        "params": scenario.params,
        "primary_metric": scenario.primary.name,
        "cpu_metric": scenario.cpu.name if scenario.cpu else None,
        "metrics": {m.name: {"label": m.label, "unit": m.unit, "better": m.better} for m in scenario.metrics},
        "results": results,
        "ratios": ratios(scenario, results),
    }


def _command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Where and on what the figures were taken."""
    from slipstream import _native

    status = _command(["git", "status", "--porcelain", "--untracked-files=no"])
    changed = [line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip()]
    return {
        "git_commit": _command(["git", "rev-parse", "HEAD"]) or None,
        # Others edit this checkout at the same time: the build measured may hold uncommitted changes.
        "git_dirty": bool(changed),
        "git_changed_files": changed,
        "python_version": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
        "slipstream_version": _native.__version__,
        "build_profile": _native.build_profile,
        "awslambdaric_version": _version("awslambdaric"),
        "boto3_version": _version("boto3"),
        "aiohttp_version": _version("aiohttp"),
        "machine": {
            "cpu_model": _cpu_model(),
            "cores": os.cpu_count(),
            "usable_cpus": sorted(os.sched_getaffinity(0)),
            "kernel": platform.release(),
            "system": platform.system(),
            "architecture": platform.machine(),
            "memory_bytes": _memory_total(),
        },
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# Markdown


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == "µs":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.1f} µs"
    if unit == "invocations/s":
        return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"
    if unit == "GB/s":
        return f"{value:.2f} GB/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.3g} {unit}"


def fmt_ratio(ratio: dict[str, Any] | None) -> str:
    if not ratio:
        return "—"
    text = f"**{ratio['ratio']:.2f}x**"
    if ratio["paired_min"] is not None and ratio["paired_min"] != ratio["paired_max"]:
        text += f" ({ratio['paired_min']:.2f} to {ratio['paired_max']:.2f})"
    return text


def cell(entry: dict[str, Any], metric: str, unit: str, spread: bool = True) -> str:
    if entry["status"] == "not_supported":
        return "n/a"
    if entry["status"] == "failed":
        return f"**{entry['failure']}**"
    figure = entry["metrics"][metric]
    text = fmt(figure["median"], unit)
    if spread and figure["min"] != figure["max"]:
        low, high = fmt(figure["min"], unit), fmt(figure["max"], unit)
        # The unit once, after the range, when both ends have the same one.
        low_number, _, low_unit = low.rpartition(" ")
        high_unit = high.rpartition(" ")[2]
        text += f" ({low_number} to {high})" if low_unit == high_unit and low_number else f" ({low} to {high})"
    return text


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(document: dict[str, Any]) -> str:
    meta = document["meta"]
    settings = document["settings"]
    machine = meta["machine"]
    runtimes = list(document["runtimes"])
    others = [name for name in runtimes if name != SUBJECT]
    quick = " (a quick run: a check that the harness works, not figures to quote)" if settings["quick"] else ""
    changed = meta.get("git_changed_files") or []
    dirty = f" with uncommitted changes to {', '.join(f'`{name}`' for name in changed)}" if changed else ""
    lines = [
        "# slipstream benchmark results",
        "",
        f"Rendered by `bench/run.py` from `results.json`{quick}."
        " Every figure is the median of the repetitions, with the lowest and highest in parentheses; runtimes are"
        " interleaved (repetition 1 of each, then repetition 2 ...), so noise hits them alike, and ratios are"
        " taken within this run. Ratios are slipstream's figure over the other runtime's: above 1 is better for"
        " throughput, below 1 is better for times and memory; the range beside a ratio is that of the same"
        " repetition's ratios.",
        "",
        f"- slipstream {meta['slipstream_version']} ({meta['build_profile']} build of the native core, as last built"
        f" into the environment), awslambdaric {meta['awslambdaric_version']}, CPython {meta['python_version']}",
        f"- commit `{(meta['git_commit'] or 'unknown')[:12]}`{dirty}",
        f"- {machine['cpu_model']}, {machine['cores']} cores, Linux {machine['kernel']};"
        f" load average {document['load_before'][0]} before, {document['load_after'][0]} after"
        " (other work shares this machine: absolute figures are noisy, ratios within the run are what count)",
        f"- {settings['repetitions']} repetitions ({settings['cold_repetitions']} for cold starts); sequential"
        f" scenarios pinned to CPU {settings['cpu']} (emulator and runtime together), Managed Instances unpinned;"
        f" run took {document['duration_s']:.0f} s",
        "",
        "Runtimes:",
        "",
    ]
    lines += [f"- **{name}**: {info['description']}" for name, info in document["runtimes"].items()]
    for title, key, note in (
        ("Headline", "primary_metric", ""),
        (
            "Runtime CPU",
            "cpu_metric",
            "The CPU time the runtime's own processes spent (the emulator's not included). Other work on the machine"
            " stretches wall-clock figures far more than this, so on a shared machine these ratios are the steadier"
            " ones.",
        ),
    ):
        lines += ["", f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += [
            _row(["scenario", "metric", *runtimes, *(f"{SUBJECT}/{other}" for other in others)]),
            _row(["---"] * (2 + len(runtimes) + len(others))),
        ]
        for scenario in document["scenarios"]:
            metric = scenario.get(key)
            if metric is None:
                continue
            about = scenario["metrics"][metric]
            label = f"{about['label']} ({about['better']} is better)"
            values = [cell(scenario["results"][name], metric, about["unit"], spread=False) for name in runtimes]
            pairs = scenario["ratios"]
            ratio_cells = [fmt_ratio(pairs.get(f"{SUBJECT}/{other}", {}).get(metric)) for other in others]
            lines.append(_row([scenario["title"], label, *values, *ratio_cells]))

    lines += ["", "## Every figure", ""]
    for scenario in document["scenarios"]:
        lines += [f"### {scenario['title']} (`{scenario['id']}`)", "", scenario["description"] + ".", ""]
        metrics = scenario["metrics"]
        lines.append(_row(["runtime", *(f"{m['label']}" for m in metrics.values())]))
        lines.append(_row(["---"] * (1 + len(metrics))))
        for name in runtimes:
            entry = scenario["results"][name]
            if entry["status"] != "not_supported":
                lines.append(_row([name, *(cell(entry, key, m["unit"]) for key, m in metrics.items())]))
        for pair, per_metric in scenario["ratios"].items():
            parts = [f"{metrics[key]['label']} {fmt_ratio(value)}" for key, value in per_metric.items()]
            lines.append("")
            lines.append(f"{pair}: " + ", ".join(parts))
        notes = [
            f"- {name}: {entry['reason']}"
            for name, entry in scenario["results"].items()
            if entry["status"] == "not_supported"
        ]
        if notes:
            lines += ["", "Not supported:", "", *notes]
        lines.append("")

    failures = [
        (scenario, name, entry)
        for scenario in document["scenarios"]
        for name, entry in scenario["results"].items()
        if entry["status"] == "failed"
    ]
    if failures:
        lines += ["## Failures", ""]
        for scenario, name, entry in failures:
            lines += [f"### {name} in `{scenario['id']}`: {entry['failure']}", "", entry["reason"], ""]
            if entry.get("log_tail"):
                lines += ["```", entry["log_tail"], "```", ""]
    lines += [
        "## Charts",
        "",
        *(f"![{name}]({name}.png)" for name in document.get("charts", [])),
        "",
    ]
    return "\n".join(lines)
