"""The memory of a whole process tree, sampled from /proc: resident (RSS) and proportional
(PSS, which splits pages shared between processes, as forked workers share their parent's)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.05
KB = 1024

_LABELS = (
    ("workers.engine", "engine child"),
    ("spawn_main", "worker process"),
    ("resource_tracker", "multiprocessing resource tracker"),
    ("importer", "worker process"),
)


@dataclass(frozen=True)
class ProcessMemory:
    label: str
    rss: int
    pss: int


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _label(argv: list[str], is_root: bool) -> str:
    """Which part of the importer (or which program) a process is."""
    program = os.path.basename(argv[0]) if argv and argv[0] else "?"
    if not program.startswith("python"):
        return program
    if is_root:
        return "supervisor"
    line = " ".join(argv)
    return next((label for needle, label in _LABELS if needle in line), program)


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * KB
    return 0


def sample_tree(root: int) -> list[ProcessMemory]:
    """`root` and each of its descendants, with their memory now."""
    tree = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * PAGE_SIZE
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
            pss = _pss(pid)
        except OSError:
            continue
        found.append(ProcessMemory(_label(argv, pid == root), rss, pss))
    return found


@dataclass
class PeakSampler:
    """Samples a process tree every 50 ms in a thread; keeps the peaks of its summed RSS and
    PSS, and the processes at the RSS peak."""

    root: int
    peak_rss: int = 0
    peak_pss: int = 0
    at_peak: list[ProcessMemory] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakSampler:
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            processes = sample_tree(self.root)
            rss = sum(p.rss for p in processes)
            self.peak_pss = max(self.peak_pss, sum(p.pss for p in processes))
            if rss > self.peak_rss:
                self.peak_rss, self.at_peak = rss, processes
            self._stop.wait(SAMPLE_SECONDS)
