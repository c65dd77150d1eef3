"""`scripts/bench --quick`: the benchmark runs end to end on a tiny corpus and writes its table.

No timing is asserted: speed and memory goals live in BENCHMARKS.md, not in tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FIGURES = (
    "scanned pages: importer / raw limit",
    "2 workers / 1 worker throughput",
    "born-digital pages: importer / pdftotext",
    "| submission: importer files/s | ",
    "peak RSS 2-page / 1-page document",
    "turned pages: importer turned / upright",
    "turned pages: each orientation's CER",
    "mixed corpus: importer / limit",
    "mixed corpus: text-layer pages kept from the text layer",
    "searchable PDFs: importer run --archive / without",
    "searchable PDFs: peak RSS with --archive / without, one worker, 2-page scan",
    "search, SQLite: p95 of the slowest query",
    "search, PostgreSQL: importer run on born-digital pages with the full-text index",
)
CONTENDERS = (
    "raw limit (pdftoppm + tesseract --psm 1)",
    "importer run, 2 workers",
    "importer run, 1 worker",
    "pdftotext (1 file/process)",
    "importer submit",
    "naive loop",
    "importer worker, 2-page scan",
    "importer worker --archive, 2-page scan",
    "importer run, 2 workers --archive",
    "importer run, 2 workers, turned pages",
    "importer run, 2 workers, upright pages",
    "limit (pdftotext + raw OCR of the pages without text)",
    "full-text, a rare word: quetzalcoatl",
    "substring scan, a frequent word:",
    "storing the pages, without the index",
)
RETIRED = ("files/s / naive files/s", "≥ 2000", "≥ 10 ")


@pytest.mark.slow
def test_quick_bench_writes_goals_and_measurements(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["BENCH_PYTHON"] = sys.executable
    report = tmp_path / "BENCHMARKS.md"
    argv = [str(ROOT / "scripts" / "bench"), "--quick", "--no-ocrmypdf", "--workers", "2"]
    argv += ["--work-dir", str(tmp_path / "work"), "--output", str(report)]
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text(encoding="utf-8")
    assert "| figure | measured | goal | met |" in text
    assert "| set | contender | each round (s) | median | throughput | accuracy |" in text
    for needle in (*FIGURES, *CONTENDERS, "## Machine", "## Versions", "## How to reproduce"):
        assert needle in text, f"{needle!r} missing from the report"
    for needle in RETIRED:
        assert needle not in text, f"retired goal {needle!r} still in the report"
    assert "≥ 5000" in text and "--psm 1" in text
    assert "| figure | measured | goal | met |" in proc.stdout
    assert len(list((tmp_path / "work").glob("corpus-*/submit/*/*.pdf"))) == 200


def _bench_lib() -> None:
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)


def test_same_accuracy_is_relative() -> None:
    _bench_lib()
    from bench_lib.accuracy import same_accuracy

    assert same_accuracy(0.0025, 0.0023)  # within 1.25 times
    assert same_accuracy(0.0019, 0.0)  # within 0.2 points of a perfect baseline
    assert not same_accuracy(0.0050, 0.0025)  # twice the errors is not the same
    assert not same_accuracy(0.0300, 0.0200)


def test_goal_table_retires_and_moves_targets() -> None:
    _bench_lib()
    from bench_lib import goals
    from bench_lib.results import Goal

    settled = goals.settle(
        [
            Goal("submission: importer files/s / naive files/s", "3.86", "≥ 10", False),
            Goal("submission: importer files/s", "3808.02", "≥ 2000", True),
            Goal(goals.TURNED, "1.10 (CER 1.00% vs 0.20%: accuracy differs)", "≤ 1.15", False),
        ]
    )
    assert [(g.figure, g.target, g.met) for g in settled] == [
        ("submission: importer files/s", "≥ 5000", False),
        (goals.TURNED, "≤ 1.15", False),
    ]
    slow = goals.timed(goals.SCANS, 10.0, 10.0, (0.01, 0.002))
    assert not slow.met and "accuracy differs" in slow.measured


def test_render_dpi_follows_the_importer() -> None:
    _bench_lib()
    from bench_lib.dpi import _dpi

    assert _dpi(612.0, [(1700, 200)]) == 200  # a 200-ppi full-page scan stays at 200
    assert _dpi(612.0, [(3400, 400)]) == 300  # never above 300
    assert _dpi(612.0, [(1275, 150)]) == 200  # never below 200
    assert _dpi(612.0, [(300, 200)]) == 300  # a small picture: the page renders at 300
    assert _dpi(612.0, []) == 300 and _dpi(None, [(1700, 200)]) == 300


def test_ocrmypdf_placeholders_become_empty_pages() -> None:
    _bench_lib()
    from bench_lib.contenders import _unskipped

    sidecar = "[OCR skipped on page(s) 1-3]\fscan text\f[OCR skipped on page(s) 5]\f"
    assert _unskipped(sidecar).split("\f") == ["", "", "", "scan text", ""]
