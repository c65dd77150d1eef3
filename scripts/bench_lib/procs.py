"""Running contenders: timed commands in a clean environment."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


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
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode not in ok_codes:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"{' '.join(argv[:4])} ... exited with {proc.returncode}:\n{tail}")
    return Finished(seconds, proc.stdout, proc.stderr)
