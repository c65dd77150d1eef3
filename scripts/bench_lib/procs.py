"""Running contenders: timed commands in a clean environment."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class BenchError(Exception):
    """A contender failed or produced something unusable: the bench cannot go on."""


@dataclass(frozen=True)
class Finished:
    seconds: float
    stdout: str
    stderr: str


DROPPED = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "OMP_THREAD_LIMIT")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the operator's importer settings or the bench's own path.

    Contenders run as they would be deployed: among other things, Python may cache
    compiled modules (without that, every engine child compiles its modules afresh).
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_") and k not in DROPPED
    }
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    ok_codes: tuple[int, ...] = (0,),
    cwd: Path | None = None,
) -> Finished:
    """Run `argv` in a session of its own, its output in files, not pipes: a process it leaves
    behind cannot hold the bench up, and is killed (and logged) once `argv` has exited."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, argv)
            proc.wait()
            raise BenchError(f"{' '.join(argv[:4])} ... took more than {timeout:.0f} s") from None
        seconds = time.perf_counter() - started
        _kill_group(proc.pid, argv)
        stdout, stderr = (_read(f) for f in (out, err))
    if code not in ok_codes:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(argv[:4])} ... exited with {code}:\n{tail}")
    return Finished(seconds, stdout, stderr)


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode("utf-8", "replace")


def _kill_group(pgid: int, argv: Sequence[str]) -> None:
    """Kill what is left of the process group `argv` led, saying so: a leak to fix."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return
    log.warning("%s left processes behind; killing them", " ".join(argv[:4]))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
