"""Lambda Managed Instances: up to `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once in one environment.

The main process imports the handler once, freezes the garbage collector's generations and forks workers from
that initialised state, so init time and memory are paid once (awslambdaric imports the handler again in each of
its N processes). It then only supervises: a worker that dies is replaced from the same state, and the invocations
it had in flight get a `Runtime.ExitError` answer, so no caller is left waiting.

- Plain handlers: N workers, one invocation each at a time (CPU-bound work gets the cores).
- `async def` handlers: the N slots share one event loop (uvloop when installed), in
  `SLIPSTREAM_ASYNC_PROCESSES` processes (default 1); request id, tenant id and trace id live in contextvars.
- `SLIPSTREAM_FORK_AFTER_INIT=0` gives awslambdaric's model, one full init per worker, for handlers that are not
  fork-safe (threads started or sockets opened at import time).

Every slot polls `/next` on a connection of its own (one `RuntimeClient` per slot), and answers on it. Each worker
puts its stdout and stderr on the log socket Lambda names (`_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET`), where
records are read line by line; Lambda sets `AWS_LAMBDA_LOG_FORMAT=JSON` there, so every record is one JSON line
with its `requestId`. SIGTERM drains the invocations in flight, then the main process exits 0; it exits non-zero
only when it gives up (init failed, or workers keep dying before they serve), never 0 after such a failure.

Each worker tells the supervisor through a pipe which invocations it is running: `R` once it is ready to poll,
then one line when an invocation starts (`S`, request id, invocation id) and one when it has been answered (`E`).
"""

from __future__ import annotations

import _signal
import os
import sys

from slipstream import _native, logs, preload
from slipstream.handler import is_async, load_handler
from slipstream.runtime import Runtime, Shutdown, report_init_failure, user_agent

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms): mypy reads it the same way
if TYPE_CHECKING:
    from typing import Any

    from slipstream.handler import Handler

ENV_MAX_CONCURRENCY = "AWS_LAMBDA_MAX_CONCURRENCY"
ENV_FORK_AFTER_INIT = "SLIPSTREAM_FORK_AFTER_INIT"
ENV_ASYNC_PROCESSES = "SLIPSTREAM_ASYNC_PROCESSES"
ENV_LOG_SOCKET = "_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET"
_TRACE_ENV = "_X_AMZN_TRACE_ID"

_EXIT_GIVE_UP = 1
_EXIT_INIT_ERROR = 1
_EXIT_WORKER_CRASH = 70
# Workers that die this many times in a row before they ran any invocation mean the environment cannot serve
# (the Runtime API is gone, or something in the worker's start fails every time).
_MAX_EARLY_DEATHS = 3
# How long SIGTERM waits for in-flight invocations before the workers are killed (Lambda allows about 2 s).
_DRAIN_SECONDS = 1.8
# A slot of a shared event loop whose `/next` failed (after the core's own retries) tries again this many times,
# waiting 0.1 s, then 0.2 s, ..., before its process gives up and the supervisor replaces it.
_SLOT_NEXT_ATTEMPTS = 4
_SLOT_FIRST_BACKOFF = 0.1
# awslambdaric's name for the record its parent logs (at DEBUG) before it starts the workers.
_WORKER_POOL_EVENT = "runtime_worker_pool_initializing"


def parse_max_concurrency(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{ENV_MAX_CONCURRENCY} must be a whole number of at least 1, not {value!r}")
    return count


def _async_processes(max_concurrency: int) -> int:
    value = os.environ.get(ENV_ASYNC_PROCESSES, "")
    try:
        count = int(value) if value else 1
    except ValueError:
        count = 0
    if count < 1:
        logs.diag(f"{ENV_ASYNC_PROCESSES} must be a whole number of at least 1, not {value!r}; using 1")
        count = 1
    return min(count, max_concurrency)


def run(handler_name: str, max_concurrency: int) -> int:
    """The main process on Managed Instances: init once, fork, supervise. Returns the exit code."""
    try:
        client = _native.RuntimeClient(user_agent())
    except _native.ConfigurationError as exc:
        logs.diag(str(exc))
        return 1

    handler: Handler | None = None
    if os.environ.get(ENV_FORK_AFTER_INIT, "1").lower() not in {"0", "false", "no"}:
        preload.install(handler_name)  # the workers fork from what the snapshot preloaded
        try:
            handler = load_handler(handler_name)
        except Exception as exc:
            preload.finish(initialised=False)
            return report_init_failure(client, exc)
        preload.finish()

    # Without the handler the parent cannot tell an `async def` one: each worker then serves one slot.
    processes = _async_processes(max_concurrency) if handler is not None and is_async(handler) else max_concurrency
    slots = [max_concurrency // processes + (1 if i < max_concurrency % processes else 0) for i in range(processes)]
    logs.log_debug(
        {
            "event": _WORKER_POOL_EVENT,
            "workerCount": processes,
            "executionEnvironmentMaxConcurrency": max_concurrency,
        }
    )

    import gc

    # Objects created by init stay in the permanent generation: a collection in a worker would otherwise touch
    # every one of them and copy the pages fork shared.
    gc.freeze()
    return Supervisor(client, handler_name, handler, slots).run()


class WorkerState:
    __slots__ = ("inflight", "partial", "pid", "ready", "served", "slots", "status_fd")

    def __init__(self, pid: int, status_fd: int, slots: int) -> None:
        self.pid = pid
        self.status_fd = status_fd
        self.slots = slots
        # Past its init (`R`), and past the start of its first invocation (`S`).
        self.ready = False
        self.served = False
        self.inflight: dict[str, str | None] = {}
        self.partial = b""


class Supervisor:
    """The main process after init: starts the workers, replaces the dead, answers what they left, drains."""

    def __init__(self, client: _native.RuntimeClient, handler_name: str, handler: Handler | None, slots: list[int]):
        self.client = client
        self.handler_name = handler_name
        self.handler = handler
        self.slots = slots
        self.workers: dict[int, WorkerState] = {}
        self.stopping = False
        self.exit_code = 0
        self.early_deaths = 0
        self.wake_fds: tuple[int, int] = (-1, -1)

    def run(self) -> int:
        import select
        import time

        wake_read, wake_write = self.wake_fds = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        _signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        _signal.signal(_signal.SIGCHLD, lambda signum, frame: None)
        _signal.signal(_signal.SIGTERM, lambda signum, frame: self.begin_stop())

        for count in self.slots:
            self.spawn(count)

        deadline: float | None = None
        killed = False
        while self.workers or not self.stopping:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + _DRAIN_SECONDS
            poller = select.poll()
            poller.register(wake_read, select.POLLIN)
            for worker in self.workers.values():
                poller.register(worker.status_fd, select.POLLIN)
            timeout = None if deadline is None or killed else max(0.0, deadline - time.monotonic()) * 1000
            try:
                ready = poller.poll(timeout)
            except InterruptedError:
                ready = []
            for fd, _ in ready:
                if fd == wake_read:
                    _drain(wake_read)
                else:
                    self.read_status(fd)
            self.reap()
            if deadline is not None and not killed and time.monotonic() >= deadline:
                # Lambda kills the environment soon after SIGTERM anyway; the invocations still running are
                # answered when their workers are reaped.
                logs.diag("in-flight invocations did not end in time; stopping their workers")
                for worker in self.workers.values():
                    _kill(worker.pid, 9)
                killed = True

        if self.exit_code == 0:
            logs.diag("SIGTERM received, workers drained, exiting")
        return self.exit_code

    def begin_stop(self, exit_code: int = 0) -> None:
        if exit_code and not self.exit_code:
            self.exit_code = exit_code
        if self.stopping:
            return
        self.stopping = True
        for worker in self.workers.values():
            _kill(worker.pid, 15)

    def spawn(self, slots: int) -> None:
        status_read, status_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            # The child must never return into the supervisor's code, whatever is raised (a signal included).
            code = _EXIT_WORKER_CRASH
            try:
                try:
                    # The supervisor's pipes are of no use here: the wake-up fd first, as a signal writes to it.
                    _signal.set_wakeup_fd(-1)
                    for fd in (status_read, *self.wake_fds, *(w.status_fd for w in self.workers.values())):
                        os.close(fd)
                    code = worker_main(status_write, self.handler_name, self.handler, slots)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException as exc:
                    logs.diag(f"worker failed: {type(exc).__name__}: {exc}")
                _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
                _flush()
            finally:
                os._exit(code)
        os.close(status_write)
        os.set_blocking(status_read, False)
        self.workers[pid] = WorkerState(pid, status_read, slots)

    def read_status(self, fd: int) -> None:
        worker = next((w for w in self.workers.values() if w.status_fd == fd), None)
        if worker is None:
            return
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        self.apply_status(worker, data)

    def apply_status(self, worker: WorkerState, data: bytes) -> None:
        *lines, worker.partial = (worker.partial + data).split(b"\n")
        for line in lines:
            kind, _, rest = line.decode().partition("\t")
            if kind == "R":
                worker.ready = True
            elif kind == "S":
                request_id, _, invocation_id = rest.partition("\t")
                worker.inflight[request_id] = invocation_id or None
                worker.served = True
                self.early_deaths = 0
            elif kind == "E":
                worker.inflight.pop(rest, None)

    def reap(self) -> None:
        """Collects dead workers, answers their invocations and replaces them, or stops when that cannot help."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            try:
                while data := os.read(worker.status_fd, 65536):
                    self.apply_status(worker, data)
            except BlockingIOError:
                pass
            os.close(worker.status_fd)

            reason = _describe_exit(status)
            for request_id, invocation_id in worker.inflight.items():
                self.answer_lost_invocation(request_id, invocation_id, reason)
            if self.stopping:
                continue
            if not worker.ready and self.handler is None and os.WIFEXITED(status):
                # Its own init failed (and was reported): the function cannot start.
                logs.diag(f"worker {pid} failed its init ({reason}); the environment cannot serve")
                self.begin_stop(_EXIT_INIT_ERROR)
                continue
            if not worker.served:
                self.early_deaths += 1
                if self.early_deaths >= _MAX_EARLY_DEATHS:
                    logs.diag(f"worker {pid} {reason}; workers keep dying before they serve, giving up")
                    self.begin_stop(_EXIT_GIVE_UP)
                    continue
            logs.diag(f"worker {pid} {reason}; starting a replacement")
            self.spawn(worker.slots)

    def answer_lost_invocation(self, request_id: str, invocation_id: str | None, reason: str) -> None:
        from slipstream import errors

        # Lambda's own words for an invocation whose runtime died under it.
        # TODO(#5): a worker the OOM killer ended is reported as `signal: killed`, not as Runtime.OutOfMemory.
        message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
        error = errors.make_error(message, "Runtime.ExitError", [], request_id)
        logs.set_request(request_id, None)
        try:
            logs.log_uncaught_error(error)
        finally:
            logs.set_request("", None)
        try:
            status, body = self.client.post_error(request_id, invocation_id, errors.encode(error), "")
        except _native.RuntimeApiError as exc:
            logs.diag(f"cannot report the lost invocation: {exc}", request_id)
            return
        if status >= 300:
            logs.diag(f"Runtime API rejected the lost invocation's error ({status}): {body}", request_id)


def _describe_exit(status: int) -> str:
    """A wait status as Lambda words it (Go's `ProcessState`): `exit status 3`, `signal: segmentation fault`."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = _signal.strsignal(number) or f"signal {number}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"signal: {name[:1].lower()}{name[1:]}{core}"
    return f"exit status {os.WEXITSTATUS(status)}"


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class StatusPipe:
    """A worker's side of the status pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")


class TrackedRuntime(Runtime):
    """The one-invocation-at-a-time loop, telling the supervisor what runs."""

    status: StatusPipe

    def handle(self, invocation: _native.Invocation) -> None:
        # TODO(#5): a worker that dies after `/next` answered and before this line leaves that invocation
        # unanswered (the supervisor never heard of it); the window is a few microseconds.
        self.status.send(f"S\t{invocation.request_id}\t{invocation.invocation_id or ''}")
        try:
            super().handle(invocation)
        except _native.RuntimeApiError as exc:
            # As awslambdaric's Managed Instances client: a reply that could not be delivered costs that
            # invocation, not the worker.
            logs.diag(f"cannot deliver the reply: {exc}", invocation.request_id)
        finally:
            self.status.send(f"E\t{invocation.request_id}")


def connect_log_socket() -> None:
    """Points this worker's stdout and stderr at the Managed Instances log socket, one connection each."""
    path = os.environ.get(ENV_LOG_SOCKET)
    if not path:
        return
    import _socket

    for fd in (1, 2):
        connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            connection.connect(path)
            os.dup2(connection.fileno(), fd)
        except OSError as exc:
            # The logs still reach the streams the main process was given.
            logs.diag(f"cannot connect to the log socket {path!r}: {exc}")
            return
        finally:
            connection.close()


def worker_main(status_fd: int, handler_name: str, handler: Handler | None, slots: int) -> int:
    """A worker process: (init,) then serve `slots` invocations at a time until SIGTERM."""
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    connect_log_socket()
    status = StatusPipe(status_fd)
    client = _native.RuntimeClient(user_agent())
    if handler is None:
        try:
            handler = load_handler(handler_name)
        except Exception as exc:
            return report_init_failure(client, exc)
    status.send("R")

    if is_async(handler):
        return serve_async(handler, slots, status)

    from slipstream.runtime import install_sigterm

    runtime = TrackedRuntime(client, handler)
    runtime.status = status
    client.set_wakeup_fd(install_sigterm(runtime))
    try:
        runtime.run_forever()
    except Shutdown:
        return 0
    except _native.RuntimeApiError as exc:
        logs.diag(f"cannot continue: {exc}")
        return 1


def serve_async(handler: Handler, slots: int, status: StatusPipe) -> int:
    from slipstream.runtime import new_event_loop

    loop = new_event_loop()
    try:
        return int(loop.run_until_complete(_serve_slots(handler, slots, status, loop)))
    finally:
        loop.close()


async def _serve_slots(handler: Handler, slots: int, status: StatusPipe, loop: Any) -> int:
    import asyncio
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    install_trace_environ()
    if slots > 1:
        logs.isolate_requests()

    class ContextExecutor(ThreadPoolExecutor):
        """The loop's default executor: `run_in_executor(None, f)` runs `f` in the caller's context, so
        synchronous code a handler hands to a thread (boto3 calls) logs and traces as its invocation."""

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)

    loop.set_default_executor(ContextExecutor(thread_name_prefix="slipstream-executor"))
    # One thread per slot blocks in the core's `/next`, or sends the slot's reply, with the GIL released; the
    # handlers run on the loop.
    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="slipstream-slot")
    reply_pool = pool if slots > 1 else None
    runtimes = [ConcurrentRuntime(_native.RuntimeClient(user_agent()), handler, reply_pool) for _ in range(slots)]
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        for runtime in runtimes:
            runtime.client.interrupt()

    loop.add_signal_handler(_signal.SIGTERM, stop)
    failures: list[BaseException] = []
    exits: list[int] = []

    async def slot(runtime: ConcurrentRuntime) -> None:
        failed = 0
        while not stopping:
            try:
                invocation = await loop.run_in_executor(pool, runtime.client.next)
            except _native.Interrupted:
                return
            except _native.RuntimeApiError as exc:
                failed += 1
                if failed < _SLOT_NEXT_ATTEMPTS and not stopping:
                    logs.diag(f"/next failed, trying again: {exc}")
                    await asyncio.sleep(_SLOT_FIRST_BACKOFF * 2 ** (failed - 1))
                    continue
                if not stopping:
                    failures.append(exc)
                    stop()
                return
            failed = 0
            status.send(f"S\t{invocation.request_id}\t{invocation.invocation_id or ''}")
            try:
                await runtime.handle_async(invocation)
            except _native.RuntimeApiError as exc:
                logs.diag(f"cannot deliver the reply: {exc}", invocation.request_id)
            except SystemExit as exc:
                # The handler asked the process to end (its invocation was answered): the other slots finish
                # theirs, then the supervisor replaces the process.
                exits.append(exc.code if isinstance(exc.code, int) else 1)
                stop()
            finally:
                status.send(f"E\t{invocation.request_id}")

    try:
        await asyncio.gather(*(slot(runtime) for runtime in runtimes))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if failures:
        logs.diag(f"cannot continue: {failures[0]}")
        return 1
    return exits[0] if exits else 0


_trace_id_var: Any = None


def install_trace_environ() -> None:
    """Makes `os.environ["_X_AMZN_TRACE_ID"]` read the current invocation's trace id from a contextvar.

    Invocations sharing a process cannot share one environment variable, yet botocore (and the X-Ray SDK) read
    that variable to propagate the trace: reads of it answer from the running invocation's context instead, and
    a thread that runs in no invocation's context finds no trace id rather than another invocation's.
    """
    global _trace_id_var
    import contextvars

    _trace_id_var = contextvars.ContextVar("slipstream_trace_id", default=None)
    environ_type = type(os.environ)
    var = _trace_id_var

    class TraceAwareEnviron(environ_type):  # type: ignore[valid-type,misc]
        def __getitem__(self, key: str) -> str:
            if key == _TRACE_ENV:
                value = var.get()
                if value is None:
                    raise KeyError(key)
                return str(value)
            return str(super().__getitem__(key))

        def __contains__(self, key: object) -> bool:
            if key == _TRACE_ENV:
                return var.get() is not None
            return bool(super().__contains__(key))

        def __setitem__(self, key: str, value: str) -> None:
            if key == _TRACE_ENV:
                var.set(str(value))
                return
            super().__setitem__(key, value)

        def __delitem__(self, key: str) -> None:
            if key == _TRACE_ENV:
                if var.get() is None:
                    raise KeyError(key)
                var.set(None)
                return
            super().__delitem__(key)

    os.environ.pop(_TRACE_ENV, None)
    os.environ.__class__ = TraceAwareEnviron


def current_trace_id() -> str | None:
    """The trace id of the invocation running in the current context."""
    if _trace_id_var is not None:
        value = _trace_id_var.get()
        return None if value is None else str(value)
    return os.environ.get(_TRACE_ENV)


class ConcurrentRuntime(Runtime):
    """One slot of a shared event loop."""

    creates_loop = False

    def __init__(self, client: _native.RuntimeClient, handler: Handler, reply_pool: Any) -> None:
        super().__init__(client, handler)
        # Where replies are sent from when other slots share the loop (None: from the loop itself).
        self.reply_pool = reply_pool

    def set_trace_id(self, trace_id: str | None) -> None:
        _trace_id_var.set(trace_id)

    async def handle_async(self, invocation: _native.Invocation) -> None:
        import asyncio
        import contextvars

        try:
            event, context = self.begin(invocation)
            if self.streams_to_argument:
                from slipstream import streaming

                stream = streaming.ResponseStream(self.client, invocation.request_id, invocation.invocation_id)
                await streaming.run_async(
                    stream, self.handler(event, stream, context), lambda exc: self.report_error(invocation, exc)
                )
                return
            result = self.handler(event, context)
            if hasattr(type(result), "__await__"):
                result = await result
            if hasattr(type(result), "__anext__"):
                from slipstream import streaming

                stream = streaming.ResponseStream(self.client, invocation.request_id, invocation.invocation_id)
                await streaming.run_async(
                    stream, streaming.send_async(stream, result), lambda exc: self.report_error(invocation, exc)
                )
                return
            if self.reply_pool is None:
                self.complete(invocation, result)
                return
            # Replies of invocations that end together go out side by side, not one after another on the loop
            # (64 slots whose awaits end together would otherwise each wait for the round trips of those before).
            post = contextvars.copy_context().run
            await asyncio.get_running_loop().run_in_executor(self.reply_pool, post, self.complete, invocation, result)
        except Exception as exc:
            self.report_error(invocation, exc)
        except SystemExit as exc:
            self.report_error(invocation, exc)
            raise
