"""The scenarios: what each one sends, what it expects back, what it measures and which runtimes can take part.

Every repetition starts the runtime afresh on a new emulator, warms it up, then measures. Answers are checked
(the emulator's feed compares every reply with the expected bytes; streamed sizes and content are checked here),
and a runtime that crashes, hangs or answers wrongly raises `RuntimeFailure`, which the caller reports in place of
a figure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import payloads

from harness.model import HANDLERS, Context, Metric, Outcome, RuntimeFailure, Settings, log_tail
from harness.runtimes import Runtime
from procmem import PeakSampler, tree_cpu_ns
from slipstream.emulator import Emulator

THROUGHPUT = Metric("invocations_per_s", "throughput", "invocations/s", "higher")
P50 = Metric("p50_us", "p50 latency", "µs", "lower")
P99 = Metric("p99_us", "p99 latency", "µs", "lower")
GBPS = Metric("gb_per_s", "stream throughput", "GB/s", "higher")
FIRST_BYTE = Metric("first_byte_us", "time to first byte", "µs", "lower")
TO_NEXT = Metric("to_first_next_ms", "spawn to first /next", "ms", "lower")
TO_RESPONSE = Metric("to_first_response_ms", "spawn to first response", "ms", "lower")
# The runtime's own CPU time (every thread of its process tree, the emulator not included): other work on the
# machine stretches wall-clock figures, but hardly what a runtime spends on each invocation.
CPU = Metric("cpu_us_per_invocation", "runtime CPU per invocation", "µs", "lower")
CPU_PER_GB = Metric("cpu_ms_per_gb", "runtime CPU per GB streamed", "ms", "lower")
INIT_CPU = Metric("init_cpu_ms", "runtime CPU to first response", "ms", "lower")
ALL_POLLING = Metric("to_all_polling_ms", "spawn to every slot polling", "ms", "lower")
ALL_POLLING_CPU = Metric("all_polling_cpu_ms", "runtime CPU to every slot polling", "ms", "lower")
PEAK_RSS = Metric("peak_rss_mib", "peak RSS (process tree)", "MiB", "lower")
PEAK_PSS = Metric("peak_pss_mib", "peak PSS (process tree)", "MiB", "lower")
MEMORY = (PEAK_RSS, PEAK_PSS)

MIB = 1024 * 1024
TINY_EVENT = payloads.encode({"message": "hello", "id": 42, "flags": [True, False, None]})


@dataclass
class Scenario:
    """One thing measured for every runtime. Subclasses fill in `support` and `measure`."""

    id: str
    group: str
    title: str
    description: str
    handler: str
    metrics: tuple[Metric, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    @property
    def cpu(self) -> Metric | None:
        return next((m for m in self.metrics if m in (CPU, CPU_PER_GB, INIT_CPU, ALL_POLLING_CPU)), None)

    def repetitions(self, settings: Settings) -> int:
        return settings.repetitions

    def support(self, runtime: Runtime, context: Context) -> str | None:
        """Why `runtime` cannot take part (reported as "not supported"), or None."""
        if runtime.cold_start_only:
            return f"{runtime.name} is a floor for cold starts only"
        return None

    def prepare(self, runtime: Runtime, context: Context) -> None:
        """Runs once per runtime before the repetitions (unmeasured)."""

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        raise NotImplementedError


@contextlib.contextmanager
def launched(
    runtime: Runtime,
    handler: str,
    *,
    env: dict[str, str] | None = None,
    affinity: set[int] | None = None,
    sample_interval: float = 0.02,
    **emulator_options: Any,
) -> Iterator[tuple[Emulator, PeakSampler]]:
    """An emulator with `runtime` started on it, its process tree's memory sampled every `sample_interval` seconds;
    everything stopped after."""
    emulator = Emulator(affinity=affinity, **emulator_options)
    try:
        try:
            emulator.start_runtime(
                runtime.command(handler),
                env={**runtime.env, **(env or {})},
                cwd=str(HANDLERS),
                affinity=affinity,
            )
        except OSError as exc:
            raise RuntimeFailure("could not start", f"{runtime.command(handler)[0]}: {exc}") from exc
        with PeakSampler(emulator.runtime_pid, interval=sample_interval) as sampler:
            yield emulator, sampler
    finally:
        emulator.close()


def failure(emulator: Emulator, kind: str, message: str) -> RuntimeFailure:
    return RuntimeFailure(kind, message, log_tail(emulator.output()))


def memory(sampler: PeakSampler) -> dict[str, float]:
    sampler.stop()
    return {PEAK_RSS.name: sampler.peak_rss / MIB, PEAK_PSS.name: sampler.peak_pss / MIB}


def feed(emulator: Emulator, body: bytes, expect: bytes, count: int, timeout: float) -> dict[str, Any]:
    """`run_feed`, with the runtime watched: if it dies the feed is ended at once instead of waiting out the
    timeout. Every failure raises; the stats of a feed that went right are returned."""
    box: dict[str, Any] = {}

    def serve() -> None:
        box["stats"] = emulator.run_feed(body, expect, count, timeout)

    thread = threading.Thread(target=serve, name="bench-feed", daemon=True)
    thread.start()
    process = emulator.process
    assert process is not None
    code = None
    while thread.is_alive():
        thread.join(0.05)
        if thread.is_alive() and (code := process.poll()) is not None:
            # `run_feed` does not watch the process and would wait out its whole timeout for events nobody will
            # take; closing the server wakes its wait, and this emulator is done anyway.
            emulator.core.close()
            thread.join(10)
    stats = box.get("stats")
    if stats is None:
        raise failure(emulator, "harness error", "the feed ended without stats")
    completed = stats["completed"]
    if stats["errors"]:
        first = (stats["first_error"] or "")[:500]
        raise failure(emulator, "errors", f"{stats['errors']} of {completed} invocations ended in an error: {first}")
    if stats["mismatches"]:
        raise failure(
            emulator,
            "wrong results",
            f"{stats['mismatches']} of {completed} responses differ from the expected {len(expect):,} bytes",
        )
    code = code if code is not None else process.poll()
    if completed < count:
        if code is not None:
            raise failure(emulator, "crashed", f"exited with code {code} after {completed} of {count} invocations")
        raise failure(emulator, "timed out", f"{completed} of {count} invocations answered within {timeout:g} s")
    return stats


def invoke(emulator: Emulator, body: bytes, timeout: float) -> Any:
    """One invocation through the emulator's queue; a crash, a hang or an error raises."""
    try:
        result = emulator.invoke(body, timeout=timeout)
    except TimeoutError:
        raise failure(emulator, "timed out", f"no answer within {timeout:g} s") from None
    if result.kind == "exit":
        raise failure(emulator, "crashed", f"exited with code {result.status} during the invocation")
    if result.kind != "response":
        raise failure(emulator, "errors", f"answered {result.kind}: {result.body[:500].decode(errors='replace')}")
    return result


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolated between the nearest ranks."""
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, round(value)))


def pinned(settings: Settings) -> set[int] | None:
    return None if settings.cpu is None else {settings.cpu}


@dataclass
class FeedScenario(Scenario):
    """Sequential invocations as fast as the runtime answers: throughput and the latency distribution."""

    event: bytes = b""
    expect: bytes = b""
    floor_env: dict[str, str] = field(default_factory=dict)

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        settings = context.settings
        env = self.floor_env if not runtime.runs_python else {}
        with launched(runtime, self.handler, env=env, keep_records=False, affinity=pinned(settings)) as (
            emulator,
            sampler,
        ):
            stats = measured_feed(emulator, self.event, self.expect, settings, settings.min_invocations)
            figures = memory(sampler)
        return feed_outcome(stats, figures)


def measured_feed(emulator: Emulator, body: bytes, expect: bytes, settings: Settings, minimum: int) -> dict[str, Any]:
    """Init (one invocation), a warm-up of about `warm_seconds` whose rate sizes the measured feed, then the
    measured feed of about `target_seconds`; its stats get the runtime's CPU time over it as `cpu_ns`."""
    feed(emulator, body, expect, 1, settings.timeout)
    warmed = 0.0
    count = 4
    rate = 0.0
    while warmed < settings.warm_seconds:
        stats = feed(emulator, body, expect, count, settings.timeout)
        elapsed = stats["elapsed_ns"] / 1e9
        warmed += elapsed
        rate = stats["completed"] / max(elapsed, 1e-9)
        count = clamp(rate * (settings.warm_seconds - warmed), 4, settings.max_invocations)
    count = clamp(rate * settings.target_seconds, minimum, settings.max_invocations)
    pid = emulator.runtime_pid
    before = tree_cpu_ns(pid)
    stats = feed(emulator, body, expect, count, settings.timeout)
    stats["cpu_ns"] = tree_cpu_ns(pid) - before
    return stats


def feed_outcome(stats: dict[str, Any], figures: dict[str, float]) -> Outcome:
    latencies = sorted(ns / 1000 for ns in stats["latencies_ns"])
    metrics = {
        THROUGHPUT.name: stats["completed"] / (stats["elapsed_ns"] / 1e9),
        P50.name: percentile(latencies, 50),
        P99.name: percentile(latencies, 99),
        CPU.name: stats["cpu_ns"] / stats["completed"] / 1000,
        **figures,
    }
    return Outcome(metrics, latencies)


@dataclass
class StreamScenario(Scenario):
    """A large streamed response: bytes per second from the event's delivery to the stream's end."""

    total: int = 0

    def support(self, runtime: Runtime, context: Context) -> str | None:
        if not runtime.streams:
            return f"{runtime.name} cannot stream a response"
        return super().support(runtime, context)

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        settings = context.settings
        env = {} if runtime.runs_python else {"FLOOR_STREAM_BYTES": str(self.total)}
        event = payloads.encode({"bytes": self.total})
        expected_head = (payloads.CHUNK * (MIB // len(payloads.CHUNK) + 1))[: min(self.total, MIB)]
        streamed = seconds = 0.0
        first_bytes = []
        with launched(runtime, self.handler, env=env, keep_records=False, keep_body=MIB, affinity=pinned(settings)) as (
            emulator,
            sampler,
        ):
            cpu_before = 0
            for index in range(settings.streams_per_repetition + 1):
                if index == 1:
                    cpu_before = tree_cpu_ns(emulator.runtime_pid)
                result = invoke(emulator, event, settings.timeout)
                if not result.streamed or result.body_len != self.total or result.body != expected_head:
                    raise failure(
                        emulator,
                        "wrong results",
                        f"expected {self.total:,} streamed bytes of the handler's pattern, got "
                        f"{result.body_len:,} bytes (streamed: {result.streamed}, "
                        f"content {'right' if result.body == expected_head else 'wrong'})",
                    )
                if result.trailer("lambda-runtime-function-error-type"):
                    raise failure(emulator, "errors", f"the stream ended with error trailers {result.trailers}")
                if index == 0:
                    continue  # the first one pays for init and warms the caches
                streamed += result.body_len
                seconds += (result.done_ns - result.delivered_ns) / 1e9
                first_bytes.append((result.first_byte_ns - result.delivered_ns) / 1000)
            cpu_ns = tree_cpu_ns(emulator.runtime_pid) - cpu_before
            figures = memory(sampler)
        metrics = {
            GBPS.name: streamed / seconds / 1e9,
            FIRST_BYTE.name: sorted(first_bytes)[len(first_bytes) // 2],
            CPU_PER_GB.name: cpu_ns / 1e6 / (streamed / 1e9),
        }
        return Outcome({**metrics, **figures})


@dataclass
class ColdStartScenario(Scenario):
    """Process spawn to the first `/next`, and to the first response of an event queued right after the spawn."""

    needs: str | None = None

    def repetitions(self, settings: Settings) -> int:
        return settings.cold_repetitions

    def support(self, runtime: Runtime, context: Context) -> str | None:
        if self.needs is not None and importlib.util.find_spec(self.needs) is None:
            return f"{self.needs} is not installed (make bench-install)"
        if self.needs is not None and not runtime.runs_python:
            return f"{runtime.name} runs no Python: nothing imports {self.needs}"
        return None

    def prepare(self, runtime: Runtime, context: Context) -> None:
        # One unmeasured start: bytecode caches written and files in the page cache, as they are in a Lambda
        # environment once its image is on the host.
        self.measure(runtime, context)

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        settings = context.settings
        event = TINY_EVENT
        affinity = pinned(settings)
        emulator = Emulator(keep_records=True, affinity=affinity)
        try:
            try:
                emulator.start_runtime(
                    runtime.command(self.handler), env=dict(runtime.env), cwd=str(HANDLERS), affinity=affinity
                )
            except OSError as exc:
                raise RuntimeFailure("could not start", f"{runtime.command(self.handler)[0]}: {exc}") from exc
            spawned = emulator.spawned_ns
            request_id = emulator.enqueue(event)
            with PeakSampler(emulator.runtime_pid, interval=0.005) as sampler:
                try:
                    result = emulator.result(request_id, settings.timeout)
                except TimeoutError:
                    raise failure(emulator, "timed out", f"no answer within {settings.timeout:g} s") from None
                if result.kind == "exit":
                    raise failure(emulator, "crashed", f"exited with code {result.status} before answering")
                if result.kind != "response" or result.body != event:
                    raise failure(
                        emulator,
                        "wrong results",
                        f"answered {result.kind}: {result.body[:300].decode(errors='replace')}",
                    )
                init_cpu_ns = tree_cpu_ns(emulator.runtime_pid)
                figures = memory(sampler)
            nexts = emulator.records("next")
            if not nexts:
                raise failure(emulator, "harness error", "a response came without any /next on record")
        finally:
            emulator.close()
        metrics = {
            TO_RESPONSE.name: (result.done_ns - spawned) / 1e6,
            TO_NEXT.name: (nexts[0].at_ns - spawned) / 1e6,
            INIT_CPU.name: init_cpu_ns / 1e6,
        }
        return Outcome({**metrics, **figures})


@dataclass
class ConcurrencyScenario(Scenario):
    """Managed Instances: `AWS_LAMBDA_MAX_CONCURRENCY` slots, the feed answering every concurrent `/next`."""

    concurrency: int = 1
    workload: str = "cpu"
    event: bytes = b""
    expect: bytes = b""

    def support(self, runtime: Runtime, context: Context) -> str | None:
        if not runtime.runs_python:
            return f"{runtime.name} runs no Python handler"
        if self.workload == "async":
            if not runtime.awaits:
                return f"{runtime.name} does not await coroutines (an async def handler fails)"
            if importlib.util.find_spec("aiohttp") is None:
                return "aiohttp is not installed (make bench-install)"
        if not runtime.managed_instances:
            return f"{runtime.name} has no Managed Instances mode"
        return super().support(runtime, context)

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        settings = context.settings
        env = {}
        if self.workload == "async":
            env["BENCH_UPSTREAM"] = upstream(context).url
        # Unpinned: the workers need every CPU there is.
        everywhere = os.sched_getaffinity(0)
        with launched(
            runtime,
            self.handler,
            env=env,
            keep_records=False,
            max_concurrency=self.concurrency,
            affinity=everywhere,
            # Reading the memory of up to 17 processes takes CPU the workers compete for, and each read briefly
            # holds the process's memory map: sampled less often than elsewhere, steady state being flat.
            sample_interval=0.1,
        ) as (emulator, sampler):
            stats = measured_feed(
                emulator, self.event, self.expect, settings, settings.min_invocations * self.concurrency
            )
            figures = memory(sampler)
        return feed_outcome(stats, figures)


@dataclass
class ManagedInitScenario(ColdStartScenario):
    """Managed Instances with a heavy init: spawn to every slot polling, and the process tree's memory then."""

    concurrency: int = 8

    def support(self, runtime: Runtime, context: Context) -> str | None:
        if not runtime.managed_instances:
            return f"{runtime.name} has no Managed Instances mode"
        return super().support(runtime, context)

    def measure(self, runtime: Runtime, context: Context) -> Outcome:
        settings = context.settings
        with launched(
            runtime, self.handler, keep_records=True, max_concurrency=self.concurrency, affinity=os.sched_getaffinity(0)
        ) as (emulator, sampler):
            spawned = emulator.spawned_ns
            if not emulator.wait_records("next", self.concurrency, settings.timeout):
                raise failure(emulator, "timed out", f"fewer than {self.concurrency} slots polled")
            polling_ns = emulator.records("next")[self.concurrency - 1].at_ns
            polling_cpu_ns = tree_cpu_ns(emulator.runtime_pid)
            # Memory once every worker is up: the workers' pages shared with the parent are what PSS counts once.
            request_id = emulator.enqueue(TINY_EVENT)
            result = emulator.result(request_id, settings.timeout)
            if result.kind != "response" or result.body != TINY_EVENT:
                raise failure(emulator, "wrong results", f"answered {result.kind}: {result.body[:300]!r}")
            figures = memory(sampler)
        return Outcome(
            {ALL_POLLING.name: (polling_ns - spawned) / 1e6, ALL_POLLING_CPU.name: polling_cpu_ns / 1e6, **figures}
        )


def upstream(context: Context) -> Any:
    found = context.services.get("upstream")
    if found is None:
        from harness.upstream import Upstream

        found = context.services["upstream"] = Upstream(context.settings.upstream_delay).start()
    return found


def build(settings: Settings, context: Context) -> list[Scenario]:
    """Every scenario, in the order they run."""
    large_event = payloads.encode(payloads.document(settings.large_event_bytes))
    text_event = payloads.encode({"text": "lorem ipsum " * (settings.large_event_bytes // 12)})
    buffered = payloads.encode(payloads.document(settings.buffered_bytes))
    buffered_file = context.scratch / "buffered.json"
    buffered_file.write_bytes(buffered)
    feed_metrics = (THROUGHPUT, P50, P99, CPU, *MEMORY)
    scenarios: list[Scenario] = [
        FeedScenario(
            "echo",
            "echo",
            "Tiny event echoed",
            f"a {len(TINY_EVENT)}-byte JSON event decoded and echoed back, invocations back to back",
            "echo.handler",
            feed_metrics,
            {"event_bytes": len(TINY_EVENT)},
            event=TINY_EVENT,
            expect=TINY_EVENT,
        ),
        FeedScenario(
            "echo-1mb",
            "echo-1mb",
            "1 MB event echoed",
            f"a {len(large_event) / 1e6:.2f} MB JSON event (records of mixed types) decoded and echoed back",
            "echo.handler",
            feed_metrics,
            {"event_bytes": len(large_event)},
            event=large_event,
            expect=large_event,
        ),
        FeedScenario(
            "echo-1mb-text",
            "echo-1mb",
            "1 MB text event echoed",
            f"a {len(text_event) / 1e6:.2f} MB JSON event holding one string (a document, a base64 blob) decoded "
            "and echoed back",
            "echo.handler",
            feed_metrics,
            {"event_bytes": len(text_event)},
            event=text_event,
            expect=text_event,
        ),
        FeedScenario(
            "buffered-5mb",
            "buffered-5mb",
            "5 MB buffered response",
            f"a {len(buffered) / 1e6:.2f} MB JSON document (built at init) encoded and sent for a tiny event",
            "buffered.handler",
            feed_metrics,
            {"response_bytes": len(buffered)},
            event=TINY_EVENT,
            expect=buffered,
            floor_env={"FLOOR_RESPONSE_FILE": str(buffered_file)},
        ),
        StreamScenario(
            f"stream-{settings.stream_bytes // 1_000_000}mb",
            "stream",
            f"{settings.stream_bytes / 1e6:g} MB streamed response",
            f"{settings.stream_bytes:,} bytes streamed in 1 MiB chunks by a generator handler; "
            f"{settings.streams_per_repetition} streams per repetition after one unmeasured",
            "streamed.handler",
            (GBPS, FIRST_BYTE, CPU_PER_GB, *MEMORY),
            {"stream_bytes": settings.stream_bytes, "chunk_bytes": len(payloads.CHUNK)},
            total=settings.stream_bytes,
        ),
        ColdStartScenario(
            "cold-start",
            "cold-start",
            "Cold start, trivial handler",
            "process spawn to the first /next and to the first response, the event queued right after the spawn",
            "coldstart.handler",
            (TO_RESPONSE, TO_NEXT, INIT_CPU, *MEMORY),
        ),
        ColdStartScenario(
            "cold-start-boto3",
            "cold-start",
            "Cold start, boto3 S3 client at init",
            "as above, with a handler module that imports boto3 and creates an S3 client",
            "coldstart_boto3.handler",
            (TO_RESPONSE, TO_NEXT, INIT_CPU, *MEMORY),
            needs="boto3",
        ),
        ManagedInitScenario(
            f"concurrency-init-boto3-{settings.init_concurrency}",
            "concurrency-init",
            f"Managed Instances, {settings.init_concurrency} slots, boto3 S3 client at init",
            f"AWS_LAMBDA_MAX_CONCURRENCY={settings.init_concurrency} with the boto3 handler: spawn to every slot "
            "polling, and the process tree's memory once they are",
            "coldstart_boto3.handler",
            (ALL_POLLING, ALL_POLLING_CPU, *MEMORY),
            {"concurrency": settings.init_concurrency},
            needs="boto3",
            concurrency=settings.init_concurrency,
        ),
    ]
    cpu_event = payloads.encode({"rounds": settings.cpu_rounds})
    cpu_expect = payloads.encode({"rounds": settings.cpu_rounds, "result": payloads.cpu_work(settings.cpu_rounds)})
    fetch_expect = payloads.encode({"upstream": "ok", "status": 200})
    for workload, handler, event, expect, what in (
        ("cpu", "cpu.handler", cpu_event, cpu_expect, f"{settings.cpu_rounds:,} rounds of pure-Python arithmetic"),
        (
            "async",
            "fetch.handler",
            TINY_EVENT,
            fetch_expect,
            f"an async def handler awaiting a local aiohttp upstream that answers after "
            f"{settings.upstream_delay * 1000:g} ms, through one shared ClientSession",
        ),
    ):
        for concurrency in settings.concurrency:
            scenarios.append(
                ConcurrencyScenario(
                    f"concurrency-{workload}-{concurrency}",
                    f"concurrency-{workload}",
                    f"Managed Instances, {workload}, concurrency {concurrency}",
                    f"AWS_LAMBDA_MAX_CONCURRENCY={concurrency}; {what}",
                    handler,
                    (THROUGHPUT, P50, P99, CPU, *MEMORY),
                    {"concurrency": concurrency, "workload": workload},
                    concurrency=concurrency,
                    workload=workload,
                    event=event,
                    expect=expect,
                )
            )
    return scenarios
