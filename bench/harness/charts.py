"""PNG charts of a results document, with matplotlib's Agg backend; imported only when charts are written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after matplotlib.use: the backend is chosen before pyplot loads
from matplotlib.ticker import FuncFormatter, NullFormatter

COLOURS = {
    "slipstream": "#1b7f5b",
    "slipstream-m": "#6fbf9b",
    "awslambdaric": "#d9822b",
    "floor": "#5470c6",
    "floor-socket": "#8a8a8a",
}
SPARE = ("#9b59b6", "#c0392b", "#16a085", "#7f8c8d")


def _save(fig: Any, title: str, path: Path) -> bool:
    """Titles, lays out, writes and closes a figure; True, for the chart functions to return."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def label(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def colour(name: str, names: list[str]) -> str:
    if name in COLOURS:
        return COLOURS[name]
    return SPARE[names.index(name) % len(SPARE)]


def _bars(ax: Any, scenario: dict[str, Any], metric: str, runtimes: list[str]) -> None:
    """One bar per runtime: the median, with whiskers to the lowest and highest repetition; a word where none."""
    unit = scenario["metrics"][metric]["unit"]
    for index, name in enumerate(runtimes):
        entry = scenario["results"].get(name)
        if entry is None:
            continue
        if entry["status"] != "ok":
            word = "n/a" if entry["status"] == "not_supported" else entry.get("failure", "failed")
            ax.text(index, 0, word, ha="center", va="bottom", fontsize=8, rotation=90, color="#555555")
            continue
        figure = entry["metrics"][metric]
        median = figure["median"]
        ax.bar(index, median, color=colour(name, runtimes), width=0.7)
        ax.errorbar(
            index,
            median,
            yerr=[[median - figure["min"]], [figure["max"] - median]],
            color="black",
            capsize=3,
            linewidth=1,
        )
        ax.text(index, median, label(median), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(runtimes)), runtimes, rotation=20, fontsize=8)
    ax.set_title(scenario["title"], fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.margins(y=0.15)


def throughput(document: dict[str, Any], runtimes: list[str], path: Path) -> bool:
    chosen = [s for s in document["scenarios"] if s["group"] in {"echo", "echo-1mb", "buffered-5mb", "stream"}]
    if not chosen:
        return False
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], chosen, strict=True):
        _bars(ax, scenario, scenario["primary_metric"], runtimes)
    return _save(fig, "Throughput (median, whiskers: lowest to highest repetition; higher is better)", path)


def latency(document: dict[str, Any], runtimes: list[str], path: Path) -> bool:
    chosen = [
        s
        for s in document["scenarios"]
        if s["group"] in {"echo", "echo-1mb", "buffered-5mb"}
        and any("latency_percentiles_us" in e for e in s["results"].values())
    ]
    if not chosen:
        return False
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], chosen, strict=True):
        for name in runtimes:
            entry = scenario["results"].get(name) or {}
            points = entry.get("latency_percentiles_us")
            if not points:
                continue
            # A logit scale spreads the tail out: the p99 and p99.9 are where runtimes differ most.
            inner = [(q / 100, v) for q, v in points if 0 < q < 100]
            ax.plot([v for _, v in inner], [q for q, _ in inner], label=name, color=colour(name, runtimes))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("logit")
        ax.set_yticks([0.01, 0.1, 0.5, 0.9, 0.99, 0.999], ["1", "10", "50", "90", "99", "99.9"])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency, delivery to response (µs, log)", fontsize=8)
        ax.set_ylabel("percentile (logit scale)", fontsize=8)
        ax.set_title(scenario["title"], fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, "Latency distribution (all measured invocations of all repetitions)", path)


def cold_start(document: dict[str, Any], runtimes: list[str], path: Path) -> bool:
    chosen = [s for s in document["scenarios"] if s["group"] == "cold-start"]
    if not chosen:
        return False
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.5 * len(chosen), 3.8), squeeze=False)
    for ax, scenario in zip(axes[0], chosen, strict=True):
        for index, name in enumerate(runtimes):
            entry = scenario["results"].get(name)
            if entry is None:
                continue
            if entry["status"] != "ok":
                word = "n/a" if entry["status"] == "not_supported" else entry.get("failure", "failed")
                ax.text(index, 0, word, ha="center", va="bottom", fontsize=8, rotation=90, color="#555555")
                continue
            response = entry["metrics"]["to_first_response_ms"]
            first_next = entry["metrics"]["to_first_next_ms"]["median"]
            ax.bar(index, response["median"], color=colour(name, runtimes), alpha=0.45, width=0.7)
            ax.bar(index, first_next, color=colour(name, runtimes), width=0.7)
            ax.errorbar(
                index,
                response["median"],
                yerr=[[response["median"] - response["min"]], [response["max"] - response["median"]]],
                color="black",
                capsize=3,
                linewidth=1,
            )
            ax.text(index, response["median"], f"{response['median']:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(runtimes)), runtimes, rotation=20, fontsize=8)
        ax.set_ylabel("ms since spawn", fontsize=8)
        ax.set_title(scenario["title"], fontsize=9)
        ax.margins(y=0.15)
    return _save(fig, "Cold start: dark to the first /next, light to the first response (lower is better)", path)


def memory(document: dict[str, Any], runtimes: list[str], path: Path) -> bool:
    scenarios = document["scenarios"]
    if not scenarios:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * len(scenarios) * len(runtimes) / 2 + 2.5), squeeze=False)
    height = 0.8 / max(len(runtimes), 1)
    for ax, metric, label in (
        (axes[0][0], "peak_pss_mib", "peak PSS"),
        (axes[0][1], "peak_rss_mib", "peak RSS"),
    ):
        for offset, name in enumerate(runtimes):
            ys, xs = [], []
            for row, scenario in enumerate(scenarios):
                entry = scenario["results"].get(name)
                if entry and entry["status"] == "ok" and metric in entry["metrics"]:
                    ys.append(row + offset * height)
                    xs.append(entry["metrics"][metric]["median"])
            ax.barh(ys, xs, height=height, color=colour(name, runtimes), label=name)
        ax.set_yticks(
            [row + 0.4 - height / 2 for row in range(len(scenarios))], [s["id"] for s in scenarios], fontsize=7
        )
        ax.invert_yaxis()
        ax.set_xlabel(f"{label} of the runtime's process tree (MiB)", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, "Peak memory per scenario (median of repetitions; lower is better)", path)


def concurrency(document: dict[str, Any], runtimes: list[str], path: Path) -> bool:
    groups = [
        g for g in ("concurrency-cpu", "concurrency-async") if any(s["group"] == g for s in document["scenarios"])
    ]
    if not groups:
        return False
    delay = document["settings"]["upstream_delay"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        chosen = sorted(
            (s for s in document["scenarios"] if s["group"] == group), key=lambda s: s["params"]["concurrency"]
        )
        levels = [s["params"]["concurrency"] for s in chosen]
        for name in runtimes:
            xs, ys, low, high = [], [], [], []
            for scenario in chosen:
                entry = scenario["results"].get(name)
                if entry and entry["status"] == "ok":
                    figure = entry["metrics"]["invocations_per_s"]
                    xs.append(scenario["params"]["concurrency"])
                    ys.append(figure["median"])
                    low.append(figure["median"] - figure["min"])
                    high.append(figure["max"] - figure["median"])
            if xs:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=name, color=colour(name, runtimes))
        if group == "concurrency-async":
            ax.plot(levels, [n / delay for n in levels], linestyle="--", color="#999999", label="ideal (N / delay)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("AWS_LAMBDA_MAX_CONCURRENCY", fontsize=8)
        ax.set_ylabel("invocations/s", fontsize=8)
        title = "CPU-bound handler" if group == "concurrency-cpu" else f"async handler, {delay * 1000:g} ms upstream"
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, "Managed Instances scaling (higher is better)", path)


def write(document: dict[str, Any], out: Path) -> list[str]:
    """Writes every chart the document has data for; returns their names (file name without `.png`)."""
    runtimes = list(document["runtimes"])
    written = []
    for name, draw in (
        ("throughput", throughput),
        ("latency", latency),
        ("cold_start", cold_start),
        ("memory", memory),
        ("concurrency", concurrency),
    ):
        if draw(document, runtimes, out / f"{name}.png"):
            written.append(name)
    return written
