"""`scripts/bench`: the command line, and the order the sections run in."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from bench_lib import goals, ocrmypdf_env, report
from bench_lib.archive_section import archive_section
from bench_lib.corpus import QUICK, Corpus, Sizes, describe, load_or_build
from bench_lib.machine import ROOT, machine, revision, versions
from bench_lib.mail_section import mail_section
from bench_lib.memory import memory
from bench_lib.mixed import mixed
from bench_lib.ocr_sections import ScannedPlan, fixed_cost_note, scanned, startup, text_layer
from bench_lib.procs import BenchError
from bench_lib.results import SectionResult
from bench_lib.scale import ROWS, ROWS_QUICK, scale
from bench_lib.search_section import PAGES, PAGES_QUICK, search_section
from bench_lib.submission import submission
from bench_lib.turned import turned

log = logging.getLogger("bench")

SECTIONS = (
    "ocr",
    "scaling",
    "text-layer",
    "startup",
    "submission",
    "memory",
    "turned",
    "mixed",
    "archive",
    "scale",
    "search",
    "mail",
)
# the sections that make their own material and need no corpus
NO_CORPUS = frozenset({"scale", "search", "mail"})
SECTION_HELP = (
    "ocr: scanned pages, importer against the raw limit and OCRmyPDF; scaling: 1 worker against"
    " all; text-layer: born-digital pages against pdftotext; startup: the fixed cost of a run;"
    " submission: importer submit against a naive loop; memory: one worker's peak RSS; turned:"
    " pages turned 0/90/180/270 against the same upright; mixed: manuals, scans, a blank page"
    " (make_documents.py) against the limit and OCRmyPDF --skip-text --rotate-pages; archive:"
    " the mixed corpus with and without --archive against OCRmyPDF making the same searchable"
    " PDFs (--output-type pdf), and one worker's peak memory on the long scan with --archive"
    " against without; scale:"
    f" status, a reaper pass and submit's duplicate check among {ROWS:,} generated documents,"
    " on SQLite and PostgreSQL; search: full-text queries over"
    f" {PAGES:,} generated pages against a substring scan, and what the index costs an"
    " import, on SQLite and PostgreSQL; mail: importer run with a maildir against the same"
    " run with an SMTP server that never answers (8 documents, an e-mail each)"
)
TURNED_PAGES, TURNED_PAGES_QUICK = 8, 4


def _sections(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="importer against the raw Tesseract limit, OCRmyPDF, pdftotext and a naive"
        " submitter, on one generated corpus; writes BENCHMARKS.md.",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny corpus: 2 scanned pages, 200 files to submit, 4 turned pages, 1 mixed document,"
        f" {ROWS_QUICK:,} documents for scale, {PAGES_QUICK:,} pages for search",
    )
    parser.add_argument(
        "--scale-rows",
        type=int,
        default=None,
        help=f"documents for the scale section (default {ROWS:,}; --quick: {ROWS_QUICK:,})",
    )
    parser.add_argument(
        "--search-pages",
        type=int,
        default=None,
        help=f"pages for the search section (default {PAGES:,}; --quick: {PAGES_QUICK:,})",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=list(SECTIONS),
        help=f"comma-separated, from {','.join(SECTIONS)} (default: all). {SECTION_HELP}",
    )
    parser.add_argument("--no-ocrmypdf", action="store_true", help="leave OCRmyPDF out")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="default: cores")
    parser.add_argument("--scanned-pages", type=int, help="scanned pages (default 14)")
    parser.add_argument(
        "--work-dir", type=Path, default=ROOT / "bench-out", help="corpus and runs (bench-out/)"
    )
    parser.add_argument(
        "--ocrmypdf-venv", type=Path, default=None, help="default: WORK/venv-ocrmypdf"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the report (BENCHMARKS.md)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1 or args.workers < 1:
        parser.error("--rounds and --workers must be at least 1")
    return args


def _ocrmypdf(args: argparse.Namespace, result: SectionResult) -> Path | None:
    if args.no_ocrmypdf or not {"ocr", "mixed", "archive"} & set(args.sections):
        return None
    try:
        return ocrmypdf_env.ensure(args.ocrmypdf_venv or args.work_dir / "venv-ocrmypdf")
    except ocrmypdf_env.Unavailable as e:
        log.warning("OCRmyPDF left out: %s", e)
        result.notes.append(f"OCRmyPDF was left out: {e}")
        return None


def measure(
    args: argparse.Namespace, ocrmypdf: Path | None, result: SectionResult
) -> Corpus | None:
    sizes = QUICK if args.quick else Sizes()
    if args.scanned_pages:
        sizes = Sizes(**{**sizes.__dict__, "scanned_pages": args.scanned_pages})
    chosen = set(args.sections)
    if "scale" in chosen:
        result.extend(scale(args.work_dir, args.rounds, args.quick, args.scale_rows))
    if "search" in chosen:
        result.extend(search_section(args.work_dir, args.quick, args.search_pages))
    if "mail" in chosen:
        result.extend(mail_section(args.work_dir, args.rounds, args.workers, args.quick))
    if chosen <= NO_CORPUS:
        return None
    corpus = load_or_build(args.work_dir, sizes)
    runs = args.work_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if chosen & {"ocr", "scaling"}:
        plan = ScannedPlan("ocr" in chosen, "scaling" in chosen, ocrmypdf)
        result.extend(scanned(corpus, runs, args.rounds, args.workers, plan))
    if "text-layer" in chosen:
        result.extend(text_layer(corpus, runs, args.rounds, args.workers))
    if "startup" in chosen:
        result.extend(startup(corpus, runs, args.rounds, args.workers))
    if "submission" in chosen:
        result.extend(submission(corpus, runs, args.rounds))
    if "memory" in chosen:
        result.extend(memory(corpus, runs, args.rounds))
    if "turned" in chosen:
        count = TURNED_PAGES_QUICK if args.quick else TURNED_PAGES
        result.extend(turned(args.work_dir, runs, args.rounds, args.workers, count))
    if "mixed" in chosen:
        result.extend(mixed(args.work_dir, runs, args.rounds, args.workers, args.quick, ocrmypdf))
    if "archive" in chosen:
        result.extend(
            archive_section(
                args.work_dir, runs, corpus, args.rounds, args.workers, args.quick, ocrmypdf
            )
        )
    result.goals = goals.settle(result.goals)
    note = fixed_cost_note(result.medians, args.workers)
    if note:
        result.notes.append(note)
    return corpus


def _revisions(start: str, end: str) -> str:
    """The code measured; the importer may change under a long run."""
    return start if start == end else f"{start} at the start, {end} at the end"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("importer").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    measured = revision()
    result = SectionResult()
    ocrmypdf = _ocrmypdf(args, result)
    try:
        corpus = measure(args, ocrmypdf, result)
    except BenchError as e:
        log.error("bench failed: %s", e)
        return 1
    host = {
        **machine(),
        "load average (1 min), start / end": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
    }
    text = report.render(
        result,
        command=shlex.join(["scripts/bench", *(sys.argv[1:] if argv is None else argv)]),
        rounds=args.rounds,
        minutes=(time.monotonic() - started) / 60,
        machine=host,
        versions=versions(ocrmypdf, _revisions(measured, revision())),
        corpus=describe(corpus) if corpus else "None: the sections run make their own rows.",
    )
    args.output.write_text(text, encoding="utf-8")
    print(report.goals_table(result.goals) if result.goals else "(no goals measured)")
    print()
    print(report.rows_table(result.rows))
    print(f"\nwritten to {args.output}")
    return 0
