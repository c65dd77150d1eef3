"""pytest plugin: real gearmand processes on free loopback ports, each in its own tmp dir.

Skips where gearmand is not installed, but fails when CI is set: there it must be.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from importer.gearman.server import INSTALL_FIX, GearmandProcess, gearmand_binary


def require_gearmand() -> None:
    if gearmand_binary() is None:
        reason = f"gearmand is not installed (/usr/sbin/gearmand): {INSTALL_FIX}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
        pytest.skip(reason)


@pytest.fixture
def gearmand_factory(tmp_path: Path) -> Iterator[Callable[..., GearmandProcess]]:
    """Start more gearmands (keyword arguments go to GearmandProcess); all stopped after."""
    started: list[GearmandProcess] = []

    def start(**kwargs: Any) -> GearmandProcess:
        require_gearmand()
        proc = GearmandProcess(data_dir=tmp_path / f"gearmand-{len(started)}", **kwargs)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def gearmand(gearmand_factory: Callable[..., GearmandProcess]) -> GearmandProcess:
    """One running gearmand; tests use `.address`, `.kill()` and `.restart()`."""
    return gearmand_factory()
