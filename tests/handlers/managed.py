"""Handlers for the Managed Instances tests: each reports what its invocation saw, when and in which process.

Two switches act at import time, for the tests that need a module which is not fork-safe or whose init fails:
- `CONCURRENT_IMPORT_THREAD`: a helper thread is started at import, and `uses_import_thread` needs it running.
- `CONCURRENT_INIT_BARRIER=<dir>:<count>`: init waits (at most 10 s) until `count` processes have reached it,
  then raises, so that several workers report their init error at about the same moment.
"""

import asyncio
import logging
import os
import signal
import threading
import time

from slipstream.concurrency import current_trace_id

log = logging.getLogger("concurrent")


def _seen(context):
    """What the invocation can see of itself: from the context, the environment and the runtime's helpers."""
    return {
        "request_id": context.aws_request_id,
        "tenant_id": context.tenant_id,
        # The deadline back from the remaining time, to within the few milliseconds this call takes.
        "deadline_ms": round(time.time() * 1000) + context.get_remaining_time_in_millis(),
        "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
        "trace_in_env": "_X_AMZN_TRACE_ID" in os.environ,
        "trace_current": current_trace_id(),
    }


def _crash(how):
    if how == "exit":
        os._exit(3)
    if how in {"segv", "kill"}:
        # SIGKILL is what the kernel's OOM killer sends.
        os.kill(os.getpid(), signal.SIGSEGV if how == "segv" else signal.SIGKILL)
        time.sleep(10)  # the signal is delivered at once; this line is never reached


def work(event, context):
    """Logs, waits `delay` s, crashes if `crash` says how, sleeps `sleep` s, logs again; returns what it saw."""
    started = time.time()
    before = _seen(context)
    log.warning("start %s", event.get("tag"))
    time.sleep(event.get("delay", 0))
    _crash(event.get("crash"))
    time.sleep(event.get("sleep", 0))
    after = _seen(context)
    log.warning("end %s", event.get("tag"))
    return {
        "tag": event.get("tag"),
        "pid": os.getpid(),
        "started": started,
        "ended": time.time(),
        "before": before,
        "after": after,
    }


def spin(event, context):
    """CPU-bound: `loops` rounds of arithmetic, for throughput figures."""
    total = 0
    for i in range(event.get("loops", 200_000)):
        total += i * i % 7
    return total


async def async_work(event, context):
    """`work` for a shared event loop: awaits instead of sleeping, and hands a synchronous call to a thread."""
    started = time.time()
    before = _seen(context)
    log.warning("start %s", event.get("tag"))
    await asyncio.sleep(event.get("delay", 0))
    _crash(event.get("crash"))
    await asyncio.sleep(event.get("sleep", 0))
    in_thread = await asyncio.get_running_loop().run_in_executor(None, _seen, context)
    after = _seen(context)
    log.warning("end %s", event.get("tag"))
    return {
        "tag": event.get("tag"),
        "pid": os.getpid(),
        "started": started,
        "ended": time.time(),
        "before": before,
        "after": after,
        "in_thread": in_thread,
        "loop": type(asyncio.get_running_loop()).__module__,
    }


# A module that is not fork-safe: a thread started at import keeps a heartbeat the handler relies on. A forked
# worker has the module's state but not the thread (fork copies only the calling thread): its heartbeat stops.
_beats = 0
if os.environ.get("CONCURRENT_IMPORT_THREAD"):

    def _beat():
        global _beats
        while True:
            _beats += 1
            time.sleep(0.005)

    threading.Thread(target=_beat, name="import-time-helper", daemon=True).start()


def uses_import_thread(event, context):
    seen = _beats
    until = time.monotonic() + 1.0
    while _beats == seen:
        if time.monotonic() > until:
            raise RuntimeError(f"the thread started at import is not running in process {os.getpid()}")
        time.sleep(0.005)
    return {"pid": os.getpid(), "threads": [t.name for t in threading.enumerate()]}


def _init_barrier(spec):
    directory, _, count = spec.rpartition(":")
    open(os.path.join(directory, str(os.getpid())), "w").close()
    until = time.monotonic() + 10
    while len(os.listdir(directory)) < int(count) and time.monotonic() < until:
        time.sleep(0.01)
    raise RuntimeError(f"init failed in process {os.getpid()}")


if os.environ.get("CONCURRENT_INIT_BARRIER"):
    _init_barrier(os.environ["CONCURRENT_INIT_BARRIER"])
