"""BENCHMARKS.md: the goals, every measurement, the machine, the versions, how to reproduce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from bench_lib.results import Goal, Row, SectionResult

WHAT = """\
- **raw limit**: for every page, `pdftoppm -r 300 -gray` then `tesseract PAGE stdout --dpi 300`,
  as many pages at a time as cores, `OMP_THREAD_LIMIT=1`: the floor for 300-dpi Tesseract OCR.
- **OCRmyPDF**: its best batch use, one file per process, as many processes as cores,
  `ocrmypdf -j 1 --output-type none --sidecar FILE IN -`, `OMP_THREAD_LIMIT=1`; installed by the
  bench into its own virtualenv (it needs Debian's `ghostscript`).
- **importer run**: `importer run DIR --email … --workers N --json` on a fresh data dir (SQLite),
  against a gearmand the bench starts inside the timed span; the text is exported afterwards and
  compared with the text typeset on each page (character error rate, CER, whitespace-normalized).
- **born-digital**: `importer run` against `pdftotext` (one process per file, as many as cores)
  on the same text-layer PDFs; similarity = 1 − CER of the importer's text against pdftotext's.
- **fixed cost**: `importer run` on a single one-page born-digital PDF: start-up, gearmand,
  worker processes, database migrations, shutdown; every run pays it once.
- **submission**: `importer submit DIR --json` against a naive loop (one file at a time: read
  and hash, INSERT and COMMIT into SQLite, pygearman `submit_job(background=True)`), each a
  process of its own, each round against a fresh gearmand with its persistent (libsqlite3)
  queue; the bench checks that gearmand holds every job afterwards.
- **memory**: a job submitted, then `importer worker --concurrency 1 --burst`; its process
  tree's summed RSS sampled every 50 ms from /proc.
- Each round runs every contender once, in a rotated order; figures are medians over rounds.
  Other work on the machine disturbs the figures: the load average is shown with the machine.
"""

REPRODUCE = """\
```sh
bash scripts/install-deps --test   # Debian packages; .venv with the project, reportlab, rapidfuzz
scripts/bench                      # everything (~8 min on 2 cores); writes BENCHMARKS.md
scripts/bench --quick              # a smoke run on a tiny corpus (1 round)
scripts/bench --sections submission,memory --rounds 5
scripts/bench --help
```
The corpus is generated (deterministic) into `bench-out/` and reused; OCRmyPDF is installed
into `bench-out/venv-ocrmypdf` with pip on first use, and Debian's `ghostscript` with apt-get
when it is missing (as root; otherwise install it first, or pass `--no-ocrmypdf`).
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines)


def goals_table(goals: Sequence[Goal]) -> str:
    return _table(
        ["figure", "measured", "goal", "met"],
        [[g.figure, g.measured, g.target, "yes" if g.met else "**no**"] for g in goals],
    )


def rows_table(rows: Sequence[Row]) -> str:
    return _table(
        ["set", "contender", "each round (s)", "median", "throughput", "accuracy"],
        [[r.section, r.contender, r.rounds, r.median, r.rate, r.quality] for r in rows],
    )


def render(
    result: SectionResult,
    *,
    command: str,
    rounds: int,
    minutes: float,
    machine: Mapping[str, str],
    versions: Mapping[str, str],
    corpus: str,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        f"Written by `{command}` on {when}: {rounds} alternating round(s), medians; the whole"
        f" run took {minutes:.1f} min. Regenerate it rather than editing it.",
        "## Goals",
        goals_table(result.goals) if result.goals else "(no goal measured in this run)",
        "## Measurements",
        rows_table(result.rows),
    ]
    if result.notes:
        parts += ["Notes:", "\n".join(f"- {note}" for note in result.notes)]
    parts += [
        "## Machine",
        _table(["", ""], list(machine.items())),
        "## Versions",
        _table(["", ""], list(versions.items())),
        "## The corpus",
        corpus,
        "## What is measured",
        WHAT,
        "## How to reproduce",
        REPRODUCE,
    ]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"
