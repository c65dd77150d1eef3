"""OCRmyPDF in a virtualenv of the bench's own, never in the project's environment.

OCRmyPDF needs Ghostscript even when it writes no PDF; it comes from Debian's
`ghostscript` package, installed here with apt-get when we are root.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


class Unavailable(Exception):
    """OCRmyPDF cannot be set up here; the message says what to do."""


def _ghostscript() -> None:
    if shutil.which("gs"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("Ghostscript is missing: apt-get install ghostscript")
    log.info("installing Debian's ghostscript for OCRmyPDF (apt-get)")
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "ghostscript"],
    ):
        subprocess.run(argv, check=True, env=APT_ENV, stdin=subprocess.DEVNULL, timeout=900)


def ensure(venv: Path) -> Path:
    """The ocrmypdf executable in `venv`, creating the venv and installing it if needed."""
    _ghostscript()
    exe = venv / "bin" / "ocrmypdf"
    if exe.is_file():
        return exe
    log.info("installing OCRmyPDF into %s (pip)", venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "ocrmypdf"]
        subprocess.run(pip, check=True, stdin=subprocess.DEVNULL, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(venv, ignore_errors=True)
        raise Unavailable(f"cannot install OCRmyPDF into {venv}: {e}") from e
    return exe
