"""The report's fixed prose: what each contender runs, exactly, and how to reproduce."""

from __future__ import annotations

from bench_lib.accuracy import tolerance
from bench_lib.dpi import MAX_DPI, MIN_DPI
from bench_lib.mixed_corpus import OCR_KINDS

OCRMYPDF = "ocrmypdf -q -j 1 {options}--output-type none --sidecar FILE IN -"


def what() -> str:
    kinds = ", ".join(f'"{k}"' for k in OCR_KINDS)
    return f"""\
- **raw limit**: for every page, `pdftoppm -r DPI -gray -f N -l N -singlefile IN PAGE` then
  `tesseract PAGE.pgm stdout --dpi DPI --psm 1`, as many pages at a time as cores,
  `OMP_THREAD_LIMIT=1`. DPI is the importer's own choice for the page (`workers/reader.py`):
  a page that is one full-page scan image at the image's ppi clamped to [{MIN_DPI}, {MAX_DPI}],
  any other page at {MAX_DPI}; the bench reads it from `pdfinfo -box` and `pdfimages -list`
  before the clock starts. So the limit does the importer's OCR work, and only that.
- **OCRmyPDF**: its best batch use, one file per process, as many processes as cores,
  `{OCRMYPDF.format(options="")}`, `OMP_THREAD_LIMIT=1`; on the mixed corpus
  `{OCRMYPDF.format(options="--skip-text --rotate-pages ")}`. Installed by the bench
  into its own virtualenv (it needs Debian's `ghostscript`).
- **importer run**: `importer run DIR --email … --workers N --json` (on the mixed corpus with
  `--text-layer auto`) on a fresh data dir (SQLite), against a gearmand the bench starts inside
  the timed span; the text is exported afterwards (`importer export BATCH --format jsonl`) and
  compared with the text typeset on each page (character error rate, CER, whitespace-normalized).
- **Same accuracy**: a time ratio counts only when the importer's {tolerance()}; otherwise
  the goal is unmet and the figure says "accuracy differs".
- **born-digital**: `importer run` against `pdftotext -enc UTF-8 IN -` (one process per file, as
  many as cores) on the same text-layer PDFs; both scored against the text typeset.
- **turned pages**: `importer run` on scans lying turned 0, 90, 180 and 270 degrees in turn,
  against the same scans upright; CER per set and per orientation.
- **mixed corpus**: the importer against OCRmyPDF and against the **limit**: `pdftotext` of every
  document plus the raw limit's OCR of exactly the pages of kind {kinds} (the pages with no
  real text layer; a blank page, with nothing drawn on it, is left to pdftotext), all in one
  pool of as many processes as cores; each page's text from the one that read it. Accuracy
  page by page against the expected text; the importer's database (`pages.source`) says
  which pages it took from the text layer.
- **searchable PDFs**: on the mixed corpus, `importer run` with and without `--archive DIR`,
  against OCRmyPDF `--skip-text --rotate-pages --output-type pdf IN OUT` (one file per
  process, as many as cores, `OMP_THREAD_LIMIT=1`); every PDF made is read back with
  `pdftotext` after the clock and scored page by page against the expected text; the run
  with `--archive` is compared with the run without by its database text. Then the memory
  step below on the long scan, with and without `--archive`.
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
scripts/bench                      # everything (~12 min on 2 cores); writes BENCHMARKS.md
scripts/bench --quick              # a smoke run on a tiny corpus (1 round)
scripts/bench --sections turned,mixed --rounds 5
scripts/bench --help
```
The corpora are generated (deterministic) into `bench-out/` and reused; OCRmyPDF is installed
into `bench-out/venv-ocrmypdf` with pip on first use, and Debian's `ghostscript` with apt-get
when it is missing (as root; otherwise install it first, or pass `--no-ocrmypdf`).
"""
