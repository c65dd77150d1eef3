"""Memory: the peak resident memory of one worker's whole process tree (supervisor, worker,
engine child, pdftoppm, tesseract), sampled every 50 ms, on a short and a long scan."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench_lib.accuracy import cer
from bench_lib.contenders import (
    EMAIL,
    export_texts,
    fresh_dir,
    importer,
    importer_env,
    own_gearmand,
)
from bench_lib.corpus import Corpus, Doc
from bench_lib.procs import BenchError, run
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series, Step, alternate
from bench_lib.treemem import PeakSampler, ProcessMemory

MB = 2**20
WORKER_TIMEOUT = 3600.0
MEMORY_CAP_MB = 500


def _name(doc: Doc) -> str:
    return f"importer worker, {doc.pages}-page scan"


def worker_step(
    doc: Doc,
    work: Path,
    breakdowns: dict[int, list[ProcessMemory]],
    submit_options: Sequence[str] = (),
) -> Step:
    """One round: submit the document (with `submit_options`), then time one burst worker
    and sample its tree's memory."""

    def step(series: Series) -> None:
        data = fresh_dir(work / f"memory-{doc.pages}")
        with own_gearmand(data) as gearmand:
            env = importer_env(data, gearmand.address)
            env["IMPORTER_ALLOWED_ROOTS"] = str(doc.path.parent.resolve())
            argv = importer("submit", str(doc.path), "--email", EMAIL, "--json", *submit_options)
            submitted = run(argv, env=env)
            batch = str(json.loads(submitted.stdout)["batch_id"])
            argv = importer("worker", "--concurrency", "1", "--burst")
            with open(data / "worker.log", "wb") as log_file:
                started = time.perf_counter()
                proc = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
                )
                with PeakSampler(proc.pid) as sampler:
                    code = proc.wait(WORKER_TIMEOUT)
                seconds = time.perf_counter() - started
            if code != 0:
                raise BenchError(f"importer worker exited with {code}; see {data / 'worker.log'}")
            texts = export_texts(data, gearmand.address, batch)
        text = texts.get(str(doc.path.resolve()))
        if text is None:
            raise BenchError(f"{doc.path} was not imported; see {data / 'worker.log'}")
        series.seconds.append(seconds)
        series.quality.append(cer({doc.path: text}, {doc.path: doc.expected}))
        series.add_fact("peak_mb", sampler.peak_rss / MB)
        series.add_fact("peak_pss_mb", sampler.peak_pss / MB)
        series.add_fact("processes", float(len(sampler.at_peak)))
        breakdowns[doc.pages] = sampler.at_peak

    return step


def memory(corpus: Corpus, work: Path, rounds: int) -> SectionResult:
    small, large = corpus.memory
    breakdowns: dict[int, list[ProcessMemory]] = {}
    steps = {
        _name(small): worker_step(small, work, breakdowns),
        _name(large): worker_step(large, work, breakdowns),
    }
    series = alternate(steps, rounds, "memory")
    result = SectionResult()
    for doc in (small, large):
        s = series[_name(doc)]
        result.rows.append(
            row(
                "memory (peak RSS, whole tree)",
                s,
                f"{doc.pages / s.median:.2f} pages/s; peak RSS {s.median_of('peak_mb'):.0f} MB"
                f" (PSS {s.median_of('peak_pss_mb'):.0f} MB) in"
                f" {s.median_of('processes'):.0f} processes",
                f"CER {s.median_quality:.2%}",
            )
        )
    low, high = series[_name(small)].median_of("peak_mb"), series[_name(large)].median_of("peak_mb")
    result.goals.append(
        ratio_goal(
            f"peak RSS {large.pages}-page / {small.pages}-page document",
            high / low,
            1.3,
            at_most=True,
            extra=f" ({high:.0f} MB vs {low:.0f} MB)",
        )
    )
    result.goals.append(
        ratio_goal(f"peak RSS, {large.pages}-page document (MB)", high, MEMORY_CAP_MB, at_most=True)
    )
    result.notes.append(
        "Peak RSS is the sum of the resident sets of the `importer worker --concurrency 1"
        " --burst` process and all its descendants, sampled every 50 ms (shared library pages"
        " count once per process); PSS shares such pages out, so its sum counts them once."
    )
    for doc in (small, large):
        parts = ", ".join(
            f"{p.label} {p.rss / MB:.0f} MB (PSS {p.pss / MB:.0f})"
            for p in sorted(breakdowns[doc.pages], key=lambda p: -p.rss)
        )
        result.notes.append(f"At the peak of the last {doc.pages}-page run: {parts}.")
    return result
