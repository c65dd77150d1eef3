"""The tools layer against real programs: typed failures, logging, and one language probe
per worker.

Whether and how a program ran is observed, not mocked: a wrapper script first on PATH
logs its arguments (and the OpenMP limit it was given) and then runs the real program.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import importer, submit_json
from workers import ocr
from workers.tools import (
    ToolError,
    ToolExitStatus,
    ToolKilled,
    ToolNotFound,
    ToolTimeout,
    run_tool,
)

SAMPLES = Path(__file__).resolve().parent.parent / "sample_pdfs"


def logging_wrapper(bin_dir: Path, tool: str, log: Path) -> None:
    """`tool` on PATH as a script that logs "OMP_THREAD_LIMIT args..." and runs the real one."""
    real = shutil.which(tool)
    assert real is not None, f"{tool} is not installed"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / tool
    wrapper.write_text(
        f'#!/bin/sh\necho "omp=${{OMP_THREAD_LIMIT:-unset}} $*" >> {log}\nexec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    log.touch()
    log.chmod(0o666)  # document children may run as another user


def test_a_missing_program_names_its_package() -> None:
    with pytest.raises(ToolNotFound, match="not installed or not on PATH"):
        run_tool(["importer-no-such-program"], timeout=5)
    with pytest.raises(ToolNotFound, match=r"apt-get install poppler-utils"):
        run_tool(["pdfinfo"], timeout=5, env={"PATH": "/nonexistent"})


def test_a_failure_carries_the_status_and_the_last_words(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="workers.tools")
    with pytest.raises(ToolExitStatus) as caught:
        run_tool(["pdfinfo", str(SAMPLES / "broken.pdf")], timeout=30)
    assert caught.value.tool == "pdfinfo" and caught.value.status > 0
    assert caught.value.detail  # poppler's own complaint, not a bare status
    said = [r for r in caplog.records if r.name == "workers.tools.pdfinfo"]
    assert said and all(r.levelno == logging.DEBUG for r in said)
    assert any("pdfinfo" in r.getMessage() for r in caplog.records if r.name == "workers.tools")


def test_a_signal_is_told_apart_from_a_status() -> None:
    with pytest.raises(ToolKilled, match=r"killed by signal 9 \(SIGKILL\)") as caught:
        run_tool(["sh", "-c", "kill -KILL $$"], timeout=10)
    assert caught.value.signum == signal.SIGKILL


def test_a_timeout_kills_the_program(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(ToolTimeout, match="timed out after 0.5 s"):
        run_tool(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped, not left behind
    with pytest.raises(ToolTimeout, match="no time left"):
        run_tool(["true"], timeout=0)


def test_only_the_named_descriptors_are_inherited(tmp_path: Path) -> None:
    with open(SAMPLES / "born_digital.pdf", "rb") as handle:
        fd = handle.fileno()
        with pytest.raises(ToolError):
            run_tool(["pdfinfo", f"fd://{fd}"], timeout=30)
        out = run_tool(["pdfinfo", f"fd://{fd}"], timeout=30, pass_fds=[fd]).stdout
    assert b"Pages:" in out


def test_tesseract_runs_through_the_tools_layer_with_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "tesseract.log"
    logging_wrapper(tmp_path / "bin", "tesseract", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    run_tool(
        ["pdftoppm", "-r", "150", "-gray", "-singlefile", "-f", "1", "-l", "1"]
        + [str(SAMPLES / "scanned_memo.pdf"), str(tmp_path / "page")],
        timeout=60,
    )
    result = ocr.read_page(
        tmp_path / "page.pgm", lang="eng", dpi=150, deadline=time.monotonic() + 120
    )
    assert result.words > 10 and result.confidence is not None and result.confidence > 50
    (run,) = log.read_text().splitlines()
    assert run.startswith("omp=1 ") and "--psm 1 --dpi 150" in run, run
    assert not list(tmp_path.glob("page-ocr*"))  # its text and TSV files are gone


def test_missing_language_fails_the_document_and_languages_are_listed_once_per_worker(
    env: dict[str, str], tmp_path: Path, shared_tmp: Path
) -> None:
    """Two documents asking for a language that is not installed fail with the package to
    install; a third document is OCRed; `tesseract --list-langs` ran once in all."""
    log = shared_tmp / "tesseract.log"
    logging_wrapper(shared_tmp / "bin", "tesseract", log)
    env["PATH"] = f"{shared_tmp / 'bin'}{os.pathsep}{env['PATH']}"
    german, english = tmp_path / "german", tmp_path / "english"
    german.mkdir()
    english.mkdir()
    for name in ("scanned_letter.pdf", "scanned_memo.pdf"):
        shutil.copy(SAMPLES / name, german / name)
    shutil.copy(SAMPLES / "mixed.pdf", english / "mixed.pdf")
    assert submit_json(german, env, "--lang", "eng+xyz")["submitted"] == 2
    assert submit_json(english, env, "--lang", "eng")["submitted"] == 1

    importer("worker", "--burst", "--concurrency", "1", env=env, check=True, timeout=300)

    lines = importer("export", "--format", "jsonl", env=env, check=True).stdout.splitlines()
    docs = {Path(d["path"]).name: d for d in map(json.loads, lines)}
    for name in ("scanned_letter.pdf", "scanned_memo.pdf"):
        assert docs[name]["status"] == "failed", docs[name]
        assert "apt-get install tesseract-ocr-xyz" in docs[name]["error"], docs[name]["error"]
    assert docs["mixed.pdf"]["status"] == "done", docs["mixed.pdf"]
    runs = log.read_text().splitlines()
    assert [run for run in runs if run.endswith(" --list-langs")] == ["omp=1 --list-langs"], runs
    assert len([run for run in runs if "--psm 1" in run]) == 1, runs  # mixed.pdf's page 2
