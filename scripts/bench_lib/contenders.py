"""The ways of reading the same PDFs that the importer is measured against, and the importer.

Each returns the wall time and every document's text (pages joined by a form feed), so
the caller can check that no contender bought its speed with accuracy.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench_lib.corpus import Doc
from bench_lib.procs import BenchError, clean_env, run
from importer.gearmand import GearmandProcess, free_port

DPI = 300
EMAIL = "bench@example.com"
ONE_THREAD = {"OMP_THREAD_LIMIT": "1"}
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome:
    seconds: float
    texts: dict[Path, str]
    facts: dict[str, object] = field(default_factory=dict)


def _pool(func: Callable[[T], R], items: Sequence[T], parallel: int) -> list[R]:
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(func, items))


def raw_limit(docs: Sequence[Doc], work: Path, parallel: int) -> Outcome:
    """pdftoppm (300 dpi gray) then tesseract on each page, `parallel` pages at a time."""
    env = clean_env(ONE_THREAD)
    pages = [(doc, number) for doc in docs for number in range(1, doc.pages + 1)]

    def one(item: tuple[Doc, int]) -> str:
        doc, number = item
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            base = f"{tmp}/page"
            pdftoppm = ["pdftoppm", "-r", str(DPI), "-gray", "-f", str(number), "-l", str(number)]
            run([*pdftoppm, "-singlefile", str(doc.path), base], env=env)
            return run(["tesseract", f"{base}.pgm", "stdout", "--dpi", str(DPI)], env=env).stdout

    started = time.perf_counter()
    texts = _pool(one, pages, parallel)
    seconds = time.perf_counter() - started
    joined: dict[Path, list[str]] = {}
    for (doc, _), text in zip(pages, texts, strict=True):
        joined.setdefault(doc.path, []).append(text.strip())
    return Outcome(seconds, {path: "\f".join(parts) for path, parts in joined.items()})


def ocrmypdf_batch(docs: Sequence[Doc], work: Path, parallel: int, ocrmypdf: Path) -> Outcome:
    """OCRmyPDF's best batch use: one file per process, `parallel` at a time, text only."""
    env = clean_env(ONE_THREAD)
    out = work / "ocrmypdf"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def one(doc: Doc) -> str:
        sidecar = out / f"{doc.path.stem}.txt"
        argv = [str(ocrmypdf), "-q", "-j", "1", "--output-type", "none"]
        run([*argv, "--sidecar", str(sidecar), str(doc.path), "-"], env=env)
        return sidecar.read_text(encoding="utf-8").strip()

    started = time.perf_counter()
    texts = _pool(one, docs, parallel)
    seconds = time.perf_counter() - started
    return Outcome(seconds, {d.path: t for d, t in zip(docs, texts, strict=True)})


def pdftotext_batch(docs: Sequence[Doc], parallel: int) -> Outcome:
    """poppler's pdftotext, one process per file, `parallel` at a time."""
    env = clean_env()

    def one(doc: Doc) -> str:
        return run(["pdftotext", "-enc", "UTF-8", str(doc.path), "-"], env=env).stdout

    started = time.perf_counter()
    texts = _pool(one, docs, parallel)
    seconds = time.perf_counter() - started
    return Outcome(
        seconds, {d.path: t.rstrip("\f").strip() for d, t in zip(docs, texts, strict=True)}
    )


def importer_env(data: Path, gearmand: str) -> dict[str, str]:
    return clean_env({"IMPORTER_DATA_DIR": str(data), "IMPORTER_GEARMAN_SERVERS": gearmand})


def importer(*args: str) -> list[str]:
    return [sys.executable, "-m", "importer", *args]


def importer_run(folder: Path, docs: Sequence[Doc], work: Path, workers: int) -> Outcome:
    """`importer run` on a fresh data dir, against a gearmand of its own (started in the clock)."""
    data = work / f"importer-data-w{workers}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    started = time.perf_counter()
    gearmand = GearmandProcess(data_dir=data / "gearmand", port=free_port())
    gearmand.start()
    try:
        env = importer_env(data, gearmand.address)
        argv = importer("run", str(folder), "--email", EMAIL, "--workers", str(workers), "--json")
        finished = run(argv, env=env, ok_codes=(0, 1))
        seconds = time.perf_counter() - started
    finally:
        gearmand.stop()
    summary = json.loads(finished.stdout)
    if summary["done"] != len(docs) or summary["failed"]:
        raise BenchError(f"importer run imported {summary['done']} of {len(docs)}: {summary}")
    texts = export_texts(data, gearmand.address, str(summary["id"]))
    facts = {"pages": summary["pages_done"], "reported_seconds": summary.get("seconds")}
    return Outcome(seconds, {d.path: texts[str(d.path.resolve())] for d in docs}, facts)


def export_texts(data: Path, gearmand: str, batch: str) -> dict[str, str]:
    env = importer_env(data, gearmand)
    out = run(importer("export", batch, "--format", "jsonl"), env=env).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {r["path"]: r["text"] for r in records}
