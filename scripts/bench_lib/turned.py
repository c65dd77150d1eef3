"""Turned pages: scanned pages lying turned 0, 90, 180 and 270 degrees in turn, against
the same pages upright, both through `importer run`. Tesseract's `--psm 1` reads every
orientation in one pass, so turned pages should cost (almost) nothing extra."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench_lib import contenders as c
from bench_lib import goals
from bench_lib.accuracy import by_page, cer, expected_pages, same_accuracy
from bench_lib.corpus import Doc, build_scanned, cached_sets
from bench_lib.ocr_sections import importer_name
from bench_lib.pages import scanned_pages
from bench_lib.results import Goal, SectionResult, row
from bench_lib.rounds import Series, Step, alternate

VERSION = "v1"
ORIENTATIONS = (0, 90, 180, 270)
SETS = ("turned", "upright")


def corpus(work_dir: Path, pages: int) -> dict[str, list[Doc]]:
    """The same `pages` scanned pages, turned in turn and upright, in documents of 3, 3, 2 …"""

    def build(root: Path) -> dict[str, list[Doc]]:
        turned = build_scanned(root / "turned", scanned_pages(pages, ORIENTATIONS))
        used = 0
        for index, doc in enumerate(turned):
            spins = tuple(ORIENTATIONS[(used + n) % len(ORIENTATIONS)] for n in range(doc.pages))
            turned[index] = dataclasses.replace(doc, rotations=spins)
            used += doc.pages
        return {"turned": turned, "upright": build_scanned(root / "upright", scanned_pages(pages))}

    return cached_sets(work_dir / f"turned-{VERSION}-p{pages}", build)


def _step(docs: list[Doc], angles: dict[tuple[str, int], int], work: Path, cores: int) -> Step:
    """`importer run` on one set; CER over the set and over the pages of each orientation
    (`angles`: by file name and page number, the angle of the turned copy of the page)."""
    folder = docs[0].path.parent
    expected = expected_pages(docs)

    def step(series: Series) -> None:
        outcome = c.importer_run(folder, docs, work, cores)
        pages = by_page(outcome.texts, docs)
        series.seconds.append(outcome.seconds)
        series.quality.append(cer(pages, expected))
        for angle in ORIENTATIONS:
            mine = {k: v for k, v in expected.items() if angles[(k[0].name, k[1])] == angle}
            if mine:
                series.add_fact(f"cer {angle}", cer(pages, mine))

    return step


def turned(work_dir: Path, work: Path, rounds: int, cores: int, pages: int) -> SectionResult:
    sets = corpus(work_dir, pages)
    names = {name: f"{importer_name(cores)}, {name} pages" for name in SETS}
    angles = {
        (doc.path.name, number): angle
        for doc in sets["turned"]
        for number, angle in enumerate(doc.rotations, 1)
    }
    steps = {names[name]: _step(sets[name], angles, work, cores) for name in SETS}
    series = alternate(steps, rounds, "turned pages")
    turned_s, upright = series[names["turned"]], series[names["upright"]]
    section = f"turned pages, {pages} scans in {len(sets['turned'])} doc(s)"
    result = SectionResult(
        notes=[
            f"Turned pages: {pages} scanned pages (the scanned set's styles) lying turned"
            f" {', '.join(map(str, ORIENTATIONS))} degrees in turn, against the same {pages}"
            " scans upright; CER per orientation compares each turned page with its upright copy."
        ]
    )
    for s in (turned_s, upright):
        per_angle = ", ".join(
            f"{angle}°: {s.median_of(f'cer {angle}'):.2%}"
            for angle in ORIENTATIONS
            if f"cer {angle}" in s.facts
        )
        quality = f"CER {s.median_quality:.2%}" + (f" ({per_angle})" if s is turned_s else "")
        result.rows.append(row(section, s, f"{pages / s.median:.2f} pages/s", quality))
    cers = (turned_s.median_quality, upright.median_quality)
    result.goals.append(goals.timed(goals.TURNED, turned_s.median, upright.median, cers))
    result.goals.append(_each_orientation(turned_s, upright))
    return result


def _each_orientation(turned_s: Series, upright: Series) -> Goal:
    """Each orientation read as well as the same pages are upright (same_accuracy)."""
    angles = [a for a in ORIENTATIONS if f"cer {a}" in turned_s.facts]
    cers = {a: (turned_s.median_of(f"cer {a}"), upright.median_of(f"cer {a}")) for a in angles}
    measured = ", ".join(f"{a}°: CER {t:.2%} vs {u:.2%}" for a, (t, u) in cers.items())
    met = all(same_accuracy(t, u) for t, u in cers.values())
    return Goal(goals.ORIENTATIONS, measured, "each the upright CER", met)
