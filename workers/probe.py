"""What this host can run, asked once: the programs on PATH and Tesseract's languages.

A worker's fork server calls `start_up` before it forks any document child, so every
child inherits the answer instead of running `tesseract --list-langs` per document.
The answer holds for one PATH and one TESSDATA_PREFIX: a process that changes either
(a test, a tool) asks again. A failed probe is not kept, so a busy moment at start-up
costs a retry, not every document until the fork server is replaced.
"""

from __future__ import annotations

import os
import shutil

from importer.languages import ORIENTATION, install_command
from workers import ocr
from workers.tools import PACKAGES, ToolError

PROBE_SECONDS = 10.0  # well within the fork server's start-up allowance

_languages: dict[tuple[str, str], frozenset[str]] = {}


def installed_languages(*, timeout: float = PROBE_SECONDS) -> frozenset[str]:
    """Tesseract's traineddata names in this environment, listed now only if nobody has
    yet; `ToolError` if Tesseract cannot list them."""
    key = (os.environ.get("PATH", ""), os.environ.get("TESSDATA_PREFIX", ""))
    found = _languages.get(key)
    if found is None:
        found = _languages[key] = ocr.list_languages(timeout=timeout)
    return found


def start_up() -> list[str]:
    """Probe now; a warning naming the fix for each thing missing (none when all is well).

    Documents whose pages all have a text layer need none of Tesseract, so nothing here
    stops a worker: a document that needs what is missing fails with the same fix."""
    missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    warnings = [f"{tool} is not installed (apt-get install {PACKAGES[tool]})" for tool in missing]
    if "tesseract" in missing:
        return warnings
    try:
        languages = installed_languages()
    except ToolError as e:
        return [*warnings, f"documents that need OCR will fail: {e}"]
    if ORIENTATION not in languages:
        warnings.append(
            f"Tesseract has no {ORIENTATION} data: documents that need OCR will fail"
            f" ({install_command([ORIENTATION])})"
        )
    return warnings
