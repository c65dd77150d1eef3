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
    "importer / raw limit",
    "2 workers / 1 worker throughput",
    "born-digital pages: importer / pdftotext",
    "submission: importer files/s / naive files/s",
    "peak RSS 2-page / 1-page document",
)
CONTENDERS = (
    "raw limit (pdftoppm + tesseract)",
    "importer run, 2 workers",
    "importer run, 1 worker",
    "pdftotext (1 file/process)",
    "importer submit",
    "naive loop",
    "importer worker, 2-page scan",
)


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
    assert "| figure | measured | goal | met |" in proc.stdout
    assert len(list((tmp_path / "work").glob("corpus-*/submit/*/*.pdf"))) == 200
