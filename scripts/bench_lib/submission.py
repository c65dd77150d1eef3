"""Submission: `importer submit` against the naive loop, on the same files, each round against
a fresh gearmand (persistent queue, as `importer gearmand` runs it) and a fresh database.

The submitter's peak RSS is sampled too; on the full corpus it is also measured once on
200,000 files (written under /tmp and removed afterwards), to show it stays flat."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bench_lib.contenders import EMAIL, importer, importer_env
from bench_lib.corpus import Corpus, write_small_pdfs
from bench_lib.procs import BenchError, Finished, clean_env, run
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series, Step, alternate
from bench_lib.treemem import PeakSampler
from importer.gearman.address import free_port
from importer.gearman.client import GearmanIO
from importer.gearman.server import GearmandProcess

IMPORTER = "importer submit"
NAIVE = "naive loop (1 round trip + 1 commit per file)"
BENCH_PATH = str(Path(__file__).resolve().parent.parent)
MB = 2**20
# The memory run: ten times the full corpus, only when the full corpus is measured.
LARGE_FILES = 200_000
FULL_CORPUS = 20_000
SUBMIT_TIMEOUT = 3600.0

Measured = tuple[Finished, float | None]  # a run, and its peak RSS in MB when sampled


def queued_jobs(gearmand: GearmandProcess) -> int:
    """Jobs gearmand holds for any function, from its admin `status` listing."""
    with GearmanIO([gearmand.address], timeout=10) as gio:
        return sum(function.queued for function in gio.admin_status().values())


def run_sampled(argv: Sequence[str], env: Mapping[str, str]) -> tuple[Finished, int]:
    """Run a command as `run` does, sampling its peak RSS (bytes) every 50 ms."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        with PeakSampler(proc.pid) as sampler:
            code = proc.wait(SUBMIT_TIMEOUT)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(argv[:4])} ... exited with {code}:\n{tail}")
    return Finished(seconds, stdout, stderr), sampler.peak_rss


def _submit_sampled(gearmand: GearmandProcess, data: Path, folder: str, files: int) -> Measured:
    env = importer_env(data, gearmand.address)
    finished, peak = run_sampled(importer("submit", folder, "--email", EMAIL, "--json"), env)
    if json.loads(finished.stdout)["submitted"] != files:
        raise BenchError(f"importer submit: {finished.stdout.strip()}, expected {files}")
    return finished, peak / MB


def _round(
    work: Path, tag: str, expected: int, body: Callable[[GearmandProcess, Path], Measured]
) -> Step:
    def step(series: Series) -> None:
        data = work / f"submit-{tag}"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        gearmand = GearmandProcess(data_dir=data / "gearmand", port=free_port())
        gearmand.start()
        try:
            finished, peak_mb = body(gearmand, data)
            queued = queued_jobs(gearmand)
        finally:
            gearmand.stop()
        if queued != expected:
            raise BenchError(f"{series.name}: gearmand holds {queued} jobs, not {expected}")
        series.seconds.append(finished.seconds)
        series.quality.append(queued / expected)
        if peak_mb is not None:
            series.add_fact("peak_mb", peak_mb)

    return step


def submission(corpus: Corpus, work: Path, rounds: int) -> SectionResult:
    files = corpus.submit_files
    folder = str(corpus.submit_dir)

    def ours(gearmand: GearmandProcess, data: Path) -> Measured:
        return _submit_sampled(gearmand, data, folder, files)

    def naive(gearmand: GearmandProcess, data: Path) -> Measured:
        env = clean_env({"PYTHONPATH": BENCH_PATH})
        argv = [sys.executable, "-m", "bench_lib.naive_submit", folder, str(data / "naive.db")]
        return run([*argv, gearmand.address], env=env), None

    steps = {
        IMPORTER: _round(work, "importer", files, ours),
        NAIVE: _round(work, "naive", files, naive),
    }
    series = alternate(steps, rounds, "submission")
    result = SectionResult()
    section = f"submission, {files:,} small PDFs"
    ours_series = series[IMPORTER]
    peak = ours_series.median_of("peak_mb")
    for s in series.values():
        extra = f"; peak RSS {peak:.0f} MB" if s is ours_series else ""
        result.rows.append(row(section, s, f"{files / s.median:,.0f} files/s{extra}", "all queued"))
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
    result.goals.append(ratio_goal("submission: importer files/s", fast, 5000, at_most=False))
    if files >= FULL_CORPUS:
        large = _large_run(work)
        result.rows.append(
            row(
                f"submission, {LARGE_FILES:,} small PDFs (once, for memory)",
                large,
                f"{LARGE_FILES / large.median:,.0f} files/s; peak RSS"
                f" {large.median_of('peak_mb'):.0f} MB",
                "all queued",
            )
        )
        high = large.median_of("peak_mb")
        result.goals.append(
            ratio_goal(
                f"submission: peak RSS {LARGE_FILES:,} / {files:,} files",
                high / peak,
                1.25,
                at_most=True,
                extra=f" ({high:.0f} MB vs {peak:.0f} MB)",
            )
        )
    result.notes.append(
        "Submission peak RSS is the `importer submit` process's resident set, sampled every"
        " 50 ms; gearmand runs with its durable SQLite queue, as `importer gearmand` runs it."
    )
    return result


def _large_run(work: Path) -> Series:
    """One submit of LARGE_FILES files under /tmp, for its peak RSS; the files are removed."""
    series = Series(IMPORTER)
    top = Path(tempfile.mkdtemp(prefix="bench-submit-large-", dir="/tmp"))
    try:
        files = top / "files"
        write_small_pdfs(files, LARGE_FILES)
        step = _round(
            work,
            "large",
            LARGE_FILES,
            lambda gearmand, data: _submit_sampled(gearmand, data, str(files), LARGE_FILES),
        )
        step(series)
    finally:
        shutil.rmtree(top, ignore_errors=True)
        shutil.rmtree(work / "submit-large", ignore_errors=True)
    return series
