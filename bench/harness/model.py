"""What the harness passes around: settings, metrics, one repetition's figures and the ways a runtime can fail."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
HANDLERS = BENCH / "handlers"

# A failed runtime's log is cut to its end: the lines just before it died or hung are the ones that tell why.
LOG_TAIL_LINES = 25
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure; `quick` is the test suite's short run."""

    quick: bool = False
    repetitions: int = 5
    # Cold starts are cheap and noisy: they get more repetitions.
    cold_repetitions: int = 10
    # Any one wait for the runtime (init, a feed, an invocation) gives up after this: a hang is bounded.
    timeout: float = 60.0
    # How long each measured feed should last; counts are derived from a warm-up's rate.
    target_seconds: float = 1.5
    warm_seconds: float = 0.3
    min_invocations: int = 50
    max_invocations: int = 100_000
    stream_bytes: int = 200_000_000
    streams_per_repetition: int = 5
    buffered_bytes: int = 5_000_000
    large_event_bytes: int = 1 << 20
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    # Slots of the Managed Instances init scenario (the boto3 handler).
    init_concurrency: int = 8
    cpu_rounds: int = 30_000
    upstream_delay: float = 0.05
    # The CPU the sequential scenarios pin the emulator and the runtime to; None leaves them unpinned.
    cpu: int | None = None

    @classmethod
    def for_quick(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "quick": True,
            "repetitions": 2,
            "cold_repetitions": 2,
            "timeout": 20.0,
            "target_seconds": 0.1,
            "warm_seconds": 0.02,
            "min_invocations": 5,
            "stream_bytes": 20_000_000,
            "streams_per_repetition": 1,
            "concurrency": (1, 2),
            "init_concurrency": 2,
            "cpu_rounds": 3_000,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    # "higher" or "lower": which way is better, so ratios can be read.
    better: str


@dataclass
class Outcome:
    """One repetition's figures for one runtime."""

    metrics: dict[str, float]
    latencies_us: list[float] | None = None


class RuntimeFailure(Exception):
    """The runtime crashed, hung or answered wrongly: the scenario reports this instead of a figure."""

    def __init__(self, kind: str, message: str, log_tail: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.log_tail = log_tail


@dataclass
class Context:
    """What scenarios share during one run: settings, a scratch directory and services started on demand."""

    settings: Settings
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slipstream-bench-")))
    services: dict[str, Any] = field(default_factory=dict)


def log_tail(text: str) -> str:
    lines = text.rstrip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)[-LOG_TAIL_CHARS:]
