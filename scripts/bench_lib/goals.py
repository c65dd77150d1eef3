"""The goals every figure is judged against, in one table, and how a timed goal is judged:
a contender's time counts only at the same accuracy (see `accuracy.same_accuracy`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bench_lib.accuracy import same_accuracy
from bench_lib.results import Goal, ratio_goal

# figure -> (target, at most?)
TURNED = "turned pages: importer turned / upright, wall time"
ORIENTATIONS = "turned pages: each orientation's CER against the same pages upright"
BORN = "born-digital pages: importer / pdftotext, wall time"
HASH_CHECK = "born-digital pages: the worker's sha256 check (serial) / importer run, % of time"
MIXED_LIMIT = "mixed corpus: importer / limit, wall time"
MIXED_OCRMYPDF = (
    "mixed corpus: importer / OCRmyPDF --skip-text --rotate-pages, wall time"
    " (CER on the image-only scans)"
)
ARCHIVE_COST = "searchable PDFs: importer run --archive / without, wall time (database CER)"
ARCHIVE_OCRMYPDF = (
    "searchable PDFs: importer run --archive / OCRmyPDF --skip-text --rotate-pages"
    " --output-type pdf, wall time (CER of the PDFs' text)"
)
ARCHIVE_MEMORY = "searchable PDFs: peak RSS with --archive / without, one worker, {pages}-page scan"
KEPT = "mixed corpus: text-layer pages kept from the text layer (contents and index among them)"
SCANS = "scanned pages: importer / raw limit, wall time"
SCANS_OCRMYPDF = "scanned pages: importer / OCRmyPDF best batch, wall time"
SCALING = "workers / 1 worker throughput, scanned pages"
SUBMISSION = "submission: importer files/s"
SEARCH_P95 = {
    name: f"search, {name}: p95 of the slowest query (rare word, frequent word, two words,"
    " phrase), ms"
    for name in ("SQLite", "PostgreSQL")
}
SEARCH_IMPORT = {
    name: f"search, {name}: importer run on born-digital pages with the full-text index"
    " / without, wall time"
    for name in ("SQLite", "PostgreSQL")
}
TARGETS: dict[str, tuple[float, bool]] = {
    TURNED: (1.15, True),
    BORN: (3, True),
    MIXED_LIMIT: (1.1, True),
    MIXED_OCRMYPDF: (0.7, True),
    ARCHIVE_COST: (1.1, True),
    ARCHIVE_OCRMYPDF: (0.6, True),
    ARCHIVE_MEMORY: (1.3, True),
    SCANS: (1.05, True),
    SCANS_OCRMYPDF: (0.87, True),
    SCALING: (1.8, False),
    SUBMISSION: (5000, False),
    **{figure: (50, True) for figure in SEARCH_P95.values()},
    **{figure: (1.1, True) for figure in SEARCH_IMPORT.values()},
}
RETIRED = ("submission: importer files/s / naive files/s",)  # issue 8 dropped it


def timed(figure: str, ours: float, theirs: float, cer: tuple[float, float]) -> Goal:
    """ours / theirs against the figure's target; unmet whenever our CER is not theirs."""
    target, at_most = TARGETS[figure]
    mine, base = cer
    same = same_accuracy(mine, base)
    verdict = "" if same else ": accuracy differs"
    extra = f" (CER {mine:.2%} vs {base:.2%}{verdict})"
    goal = ratio_goal(figure, ours / theirs, target, at_most=at_most, extra=extra)
    return Goal(goal.figure, goal.measured, goal.target, goal.met and same)


def settle(goals: Sequence[Goal]) -> list[Goal]:
    """Goals judged against this table: retired ones dropped, and a figure whose section
    still states an older target (the submission section) judged again by the table's."""
    settled = []
    for goal in goals:
        if goal.figure in RETIRED:
            continue
        value = re.match(r"[\d.,]+", goal.measured)
        if goal.figure in TARGETS and value:
            target, at_most = TARGETS[goal.figure]
            number = float(value[0].replace(",", ""))
            judged = ratio_goal(goal.figure, number, target, at_most=at_most)
            if judged.target != goal.target:
                goal = Goal(goal.figure, goal.measured, judged.target, judged.met)
        settled.append(goal)
    return settled
