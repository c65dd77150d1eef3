"""The machine and the versions of everything measured, for the report's header."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from importer.gearman.server import gearmand_binary

ROOT = Path(__file__).resolve().parent.parent.parent


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def machine() -> dict[str, str]:
    return {
        "cores": str(os.cpu_count()),
        "memory": f"{_memory_gib():.1f} GiB",
        "CPU": _cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
    }


def revision() -> str:
    """The importer's commit, and whether the work tree differs from it."""
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit}{' with uncommitted changes' if dirty else ''}"


def versions(ocrmypdf: Path | None, importer: str) -> dict[str, str]:
    return {
        "importer": importer,
        "Python": platform.python_version(),
        "Tesseract": _first_line(["tesseract", "--version"]),
        "poppler": _first_line(["pdftoppm", "-v"]),
        "gearmand": _first_line([gearmand_binary() or "gearmand", "--version"]),
        "OCRmyPDF": _first_line([str(ocrmypdf), "--version"]) if ocrmypdf else "not measured",
        "Ghostscript": _first_line(["gs", "--version"]),
    }
