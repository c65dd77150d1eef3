"""What the server programs we start can be read for: gearmand and stunnel get an
allowlisted environment, so no process of the same user finds a secret in their
/proc/PID/environ (the keys, the database URL, the dashboard token)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from importer.certs import init_ca_dir
from importer.errors import GearmanUnavailable
from importer.gearman.address import free_port
from importer.gearman.stunnel import TlsGearmand, find_stunnel
from tests.gearmand_fixture import require_gearmand

SECRETS = {
    "IMPORTER_SECRET_KEYS": "k1:program-environment-marker-0123456789abcdef",
    "IMPORTER_DATABASE_URL": "postgresql+psycopg://u:program-environment-marker@db/x",
    "IMPORTER_DASHBOARD_TOKEN": "program-environment-marker-token",
}


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_gearmand_and_stunnel_hold_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_gearmand()
    try:
        find_stunnel()
    except GearmanUnavailable as e:
        pytest.skip(e.message)
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    init_ca_dir(tmp_path / "certs")
    with TlsGearmand(certs_dir=tmp_path / "certs", data_dir=tmp_path / "data") as server:
        assert server.backend is not None and server.stunnel is not None
        pids = {"gearmand": server.backend.pid, "stunnel": server.stunnel.pid}
        for name, pid in pids.items():
            assert pid is not None
            environ = _environ(pid)
            assert b"PATH=" in environ, name  # it is the real environment we read
            assert b"program-environment-marker" not in environ, name


def test_importer_gearmand_passes_no_secret_to_gearmand(tmp_path: Path) -> None:
    require_gearmand()
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "IMPORTER_DATA_DIR": str(tmp_path), **SECRETS}
    importer = str(Path(sys.executable).parent / "importer")
    proc = subprocess.Popen(
        [importer, "gearmand", "--port", str(free_port("127.0.0.1"))],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        children: list[str] = []
        while not children and time.monotonic() < deadline:
            children = subprocess.run(
                ["pgrep", "-P", str(proc.pid), "gearmand"], capture_output=True, text=True
            ).stdout.split()
            time.sleep(0.05)
        assert children, "importer gearmand started no gearmand"
        environ = _environ(int(children[0]))
        assert b"PATH=" in environ
        assert b"program-environment-marker" not in environ
    finally:
        proc.terminate()
        proc.wait(20)
