"""Shared fixtures: real services only (gearmand, PostgreSQL, SMTP), each on a free port."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from rapidfuzz.distance import Levenshtein

from importer.config import Settings

pytest_plugins = ["tests.gearmand_fixture", "tests.smtp_fixture"]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_pdfs"
PG_ADMIN = os.environ.get("IMPORTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _unavailable(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it must be there."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _answers(url: str) -> bool:
    """Whether something accepts TCP connections where the URL points."""
    parsed = urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 2):
            return True
    except OSError:
        return False


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    name = "importer_t_" + secrets.token_hex(4)
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        if _answers(PG_ADMIN):  # a server is there, but we cannot use it: never a skip
            pytest.fail(f"PostgreSQL at {PG_ADMIN} answers but refuses the tests: {e}")
        _unavailable(f"PostgreSQL at {PG_ADMIN} is unreachable: {e}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'importer.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory that document children reach whoever they run as: pytest's own
    temporary directories are its user's only, and a child's /tmp, /var/tmp, /dev/shm and
    /run are its own. Made under /var/lib, removed after."""
    path = Path(tempfile.mkdtemp(prefix="importer-test-", dir="/var/lib"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A copy of sample_pdfs/ (PDFs and expected texts) that a test may change."""
    target = tmp_path / "inbox"
    shutil.copytree(SAMPLES, target)
    return target


@pytest.fixture
def env(tmp_path: Path, gearmand) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Environment for running the `importer` command against this test's services."""
    data = tmp_path / "data"
    out = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    out.update(
        IMPORTER_DATA_DIR=str(data),
        IMPORTER_GEARMAN_SERVERS=gearmand.address,
        IMPORTER_SECRET_KEYS="k1:" + secrets.token_hex(16),
        IMPORTER_ALLOWED_ROOTS=f"{tmp_path}{os.pathsep}{SAMPLES}",
    )
    return out


def settings_from(env: dict[str, str]) -> Settings:
    values = {
        k.removeprefix("IMPORTER_").lower(): v
        for k, v in env.items()
        if k.startswith("IMPORTER_") and k != "IMPORTER_CONFIG"
    }
    return Settings(**values)


def importer(
    *args: str, env: dict[str, str], timeout: float = 300, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the console command as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "importer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"importer {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def submit_json(path: str | Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    """`importer submit PATH --email ops@example.com --json`, as a user runs it."""
    proc = importer(
        "submit", str(path), "--email", "ops@example.com", "--json", *extra, env=env, check=True
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def cer(expected: str, got: str) -> float:
    """Character error rate on whitespace-normalized text."""
    a = " ".join(expected.split())
    b = " ".join(got.split())
    if not a:
        return 0.0 if not b else 1.0
    return Levenshtein.distance(a, b) / len(a)
