"""Memory and CPU time of a process tree, read from /proc: summed over a process and all its descendants."""

from __future__ import annotations

import os
import threading
import time


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it: through /proc/<pid>/task/*/children where the kernel has it
    (CONFIG_PROC_CHILDREN), else from the parent ids of every process in /proc."""
    if os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return _descendants_from_children(pid)
    return _descendants_from_parents(pid)


def _descendants_from_children(pid: int) -> list[int]:
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
            except OSError:
                continue
    return found


def _descendants_from_parents(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name, in parentheses, may hold spaces and parentheses: the fields follow its last ")".
        fields = stat[stat.rindex(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found = [pid]
    index = 0
    while index < len(found):
        found.extend(children.get(found[index], ()))
        index += 1
    return found


def tree_memory(pid: int, members: list[int] | None = None) -> tuple[int, int]:
    """(RSS, PSS) in bytes of `pid`'s whole tree (or of `members`); PSS shares copy-on-write pages fairly between
    forks, where RSS counts a page shared by N processes N times."""
    rss = pss = 0
    for member in descendants(pid) if members is None else members:
        try:
            with open(f"/proc/{member}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def tree_cpu_ns(pid: int, members: list[int] | None = None) -> int:
    """CPU time in ns that `pid`'s tree (or `members`) has used so far, every thread counted: the scheduler's own
    account (/proc/<pid>/task/<tid>/schedstat), to the nanosecond, unlike the tick-rounded times of `stat`.
    Time of threads or processes that already ended is not in it."""
    total = 0
    for member in descendants(pid) if members is None else members:
        try:
            tasks = os.listdir(f"/proc/{member}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{member}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


class PeakSampler:
    """Samples a process tree's memory every few milliseconds in a thread; `peak_rss`/`peak_pss` hold the highest.

    Finding the tree can mean reading every process's stat file, so it is looked up again only every
    `refresh` seconds; the members' memory is read on every sample.
    """

    def __init__(self, pid: int, interval: float = 0.02, refresh: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.refresh = refresh
        self.peak_rss = 0
        self.peak_pss = 0
        self.samples = 0
        self._members: list[int] = []
        self._found_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self.sample(refresh=True)

    def sample(self, refresh: bool = False) -> None:
        now = time.monotonic()
        if refresh or now - self._found_at >= self.refresh:
            self._members = descendants(self.pid)
            self._found_at = now
        rss, pss = tree_memory(self.pid, self._members)
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)
