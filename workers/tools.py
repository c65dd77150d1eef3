"""The one way an external program runs: poppler, Tesseract, and the doctor's version checks.

`run_tool` runs a program to completion with a timeout, logs its argv (debug), routes
what it printed on stderr to a logger of its own (`workers.tools.pdftoppm`, ...) and turns
every failure into a `ToolError` subclass; callers never see a `CalledProcessError`, an
`OSError` from a missing program, or a magic return value.

What a program inherits is chosen here, once:
- an allowlisted environment (`tool_environment`): no key, password or token;
- no stdin, and no descriptor but stdout, stderr and the `pass_fds` named (the open
  document a poppler tool reads as `fd://N`);
- the caller's resource limits (address space, CPU time, file size), as they are: nothing
  is reset before it starts;
- the caller's process group: the engine kills a document child's whole group on its
  wall-clock timeout, and a program that started a session of its own would escape it.
  On `run_tool`'s own timeout the program itself is killed and reaped before the error
  is raised.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

# The Debian package that installs each program, for the message that names the fix.
PACKAGES = {
    "tesseract": "tesseract-ocr",
    "pdfinfo": "poppler-utils",
    "pdftotext": "poppler-utils",
    "pdftoppm": "poppler-utils",
    "pdfimages": "poppler-utils",
}


class ToolError(Exception):
    """An external program failed: `tool` names it, `detail` is its own last words."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"{tool}: {detail}")
        self.tool = tool
        self.detail = detail


class ToolNotFound(ToolError):
    """The program is not installed, or not on PATH."""


class ToolTimeout(ToolError):
    """The program ran past its timeout and was killed."""


class ToolExitStatus(ToolError):
    """The program exited with a non-zero status; `detail` is its last line on stderr."""

    def __init__(self, tool: str, status: int, detail: str) -> None:
        super().__init__(tool, detail or f"exit status {status}")
        self.status = status


class ToolKilled(ToolError):
    """The program died by a signal (a crash, or a resource limit)."""

    def __init__(self, tool: str, signum: int) -> None:
        super().__init__(tool, f"killed by signal {signum} ({signal_name(signum)})")
        self.signum = signum


class ToolOutOfMemory(ToolError):
    """The program ran out of memory but said so only on stderr (poppler exits 0)."""


# What a program inherits of the caller's environment when the caller names none: enough
# to find programs, data and the locale, and no secret (keys, database URL, tokens).
TOOL_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TESSDATA_PREFIX", "OMP_THREAD_LIMIT")


def tool_environment(**extra: str) -> dict[str, str]:
    """The allowlisted environment of every external program, with `extra` set."""
    return {**{key: os.environ[key] for key in TOOL_ENV if key in os.environ}, **extra}


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run one external program to completion, or raise a `ToolError` saying why not.

    `pass_fds` are the descriptors it may inherit (the PDF it reads); it gets no other.
    `env` is its whole environment (None: `tool_environment()`, never this process's own)."""
    tool = os.path.basename(argv[0])
    if timeout <= 0:
        raise ToolTimeout(tool, "no time left to start it")
    log.debug("run (timeout %.1f s): %s", timeout, shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=tool_environment() if env is None else dict(env),
            check=False,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired as e:
        _log_stderr(tool, e.stderr or b"")
        raise ToolTimeout(tool, f"timed out after {timeout:.3g} s") from e
    except FileNotFoundError as e:
        raise ToolNotFound(tool, _not_found(tool)) from e
    _log_stderr(tool, proc.stderr)
    if proc.returncode < 0:
        raise ToolKilled(tool, -proc.returncode)
    if proc.returncode > 0:
        raise ToolExitStatus(tool, proc.returncode, last_line(proc.stderr))
    return proc


def _not_found(tool: str) -> str:
    package = PACKAGES.get(tool)
    fix = f" (apt-get install {package})" if package else ""
    return f"{tool} is not installed or not on PATH{fix}"


def _log_stderr(tool: str, stream: bytes) -> None:
    """Every line the program printed on stderr, to its own logger, at debug level."""
    logger = log.getChild(tool)
    if not stream or not logger.isEnabledFor(logging.DEBUG):
        return
    for line in stream.decode("utf-8", "replace").splitlines():
        if line.strip():
            logger.debug("%s", line.rstrip()[:1000])


def last_line(stream: bytes) -> str:
    """The last non-empty line a program printed: usually the one that names the problem."""
    lines = [line.strip() for line in stream.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else ""
