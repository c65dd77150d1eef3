"""Submission: `importer submit` against the naive loop, on the same files, each round against
a fresh gearmand (persistent queue, as `importer gearmand` runs it) and a fresh database."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from bench_lib.contenders import EMAIL, importer, importer_env
from bench_lib.corpus import Corpus
from bench_lib.procs import BenchError, Finished, clean_env, run
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series, Step, alternate
from importer.gearmand import GearmandProcess, free_port

IMPORTER = "importer submit"
NAIVE = "naive loop (1 round trip + 1 commit per file)"
BENCH_PATH = str(Path(__file__).resolve().parent.parent)


def queued_jobs(gearmand: GearmandProcess) -> int:
    """Jobs gearmand holds for any function, from its admin `status` listing."""
    with socket.create_connection(("127.0.0.1", gearmand.port), timeout=10) as sock:
        sock.sendall(b"status\n")
        reply = b""
        while not (reply.endswith(b"\n.\n") or reply == b".\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    total = 0
    for line in reply.decode().splitlines():
        fields = line.split("\t")
        if len(fields) == 4:
            total += int(fields[1])
    return total


def _round(
    work: Path, tag: str, expected: int, body: Callable[[GearmandProcess, Path], Finished]
) -> Step:
    def step(series: Series) -> None:
        data = work / f"submit-{tag}"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        gearmand = GearmandProcess(data_dir=data / "gearmand", port=free_port())
        gearmand.start()
        try:
            finished = body(gearmand, data)
            queued = queued_jobs(gearmand)
        finally:
            gearmand.stop()
        if queued != expected:
            raise BenchError(f"{series.name}: gearmand holds {queued} jobs, not {expected}")
        series.seconds.append(finished.seconds)
        series.quality.append(queued / expected)

    return step


def submission(corpus: Corpus, work: Path, rounds: int) -> SectionResult:
    files = corpus.submit_files
    folder = str(corpus.submit_dir)

    def ours(gearmand: GearmandProcess, data: Path) -> Finished:
        env = importer_env(data, gearmand.address)
        finished = run(importer("submit", folder, "--email", EMAIL, "--json"), env=env)
        if json.loads(finished.stdout)["submitted"] != files:
            raise BenchError(f"importer submit: {finished.stdout.strip()}, expected {files}")
        return finished

    def naive(gearmand: GearmandProcess, data: Path) -> Finished:
        env = clean_env({"PYTHONPATH": BENCH_PATH})
        argv = [sys.executable, "-m", "bench_lib.naive_submit", folder, str(data / "naive.db")]
        return run([*argv, gearmand.address], env=env)

    steps = {
        IMPORTER: _round(work, "importer", files, ours),
        NAIVE: _round(work, "naive", files, naive),
    }
    series = alternate(steps, rounds, "submission")
    result = SectionResult()
    section = f"submission, {files:,} small PDFs"
    for s in series.values():
        result.rows.append(row(section, s, f"{files / s.median:,.0f} files/s", "all queued"))
    fast, slow = files / series[IMPORTER].median, files / series[NAIVE].median
    result.goals.append(
        ratio_goal(
            "submission: importer files/s / naive files/s",
            fast / slow,
            10,
            at_most=False,
            extra=f" ({fast:,.0f} vs {slow:,.0f} files/s)",
        )
    )
    result.goals.append(ratio_goal("submission: importer files/s", fast, 2000, at_most=False))
    return result
