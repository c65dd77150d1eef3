"""Mutual TLS from the command line: certs init, gearmand --tls, then submit, worker, status
and doctor all through it with IMPORTER_TLS_*; without our certificate, submit is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from importer.gearman.address import free_port
from tests.conftest import SAMPLES, importer


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def tls_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["IMPORTER_DATA_DIR"] = str(tmp_path / "data")
    env["IMPORTER_ALLOWED_ROOTS"] = str(SAMPLES)
    return env


def test_pipeline_through_mutual_tls(tls_env: dict[str, str], tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    importer("certs", "init", str(certs), env=tls_env, check=True)
    assert (certs / "client.key").stat().st_mode & 0o777 == 0o600
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "importer",
            "gearmand",
            "--tls",
            "--certs",
            str(certs),
            "--port",
            str(port),
        ],
        env={**tls_env, "IMPORTER_DATA_DIR": str(tmp_path / "gearmand")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env = dict(tls_env)
        env["IMPORTER_GEARMAN_SERVERS"] = f"localhost:{port}"
        deadline = time.monotonic() + 20
        while not port_open(port):
            assert time.monotonic() < deadline, "gearmand --tls did not come up"
            time.sleep(0.2)
        # without a client certificate: plain text is refused, nothing is recorded
        proc = importer(
            "submit", str(SAMPLES / "born_digital.pdf"), "--email", "ops@example.com", env=env
        )
        assert proc.returncode == 3, proc.stderr
        recorded = json.loads(importer("status", "--json", env=env, check=True).stdout)
        assert recorded["batches"] == [], recorded
        env.update(
            IMPORTER_TLS_CA=str(certs / "ca.pem"),
            IMPORTER_TLS_CERT=str(certs / "client.pem"),
            IMPORTER_TLS_KEY=str(certs / "client.key"),
        )
        doctor = importer("doctor", "--json", env=env)
        assert doctor.returncode == 0, doctor.stdout
        batch = json.loads(
            importer(
                "submit",
                str(SAMPLES / "born_digital.pdf"),
                "--email",
                "ops@example.com",
                "--json",
                env=env,
                check=True,
            ).stdout
        )
        importer("worker", "--burst", env=env, check=True)
        status = json.loads(
            importer("status", batch["batch_id"], "--json", env=env, check=True).stdout
        )
        assert status["batches"][0]["done"] == 1
        assert status["documents"][0]["progress"] == [3, 3]
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0
    assert server.stderr is not None and "mutual TLS" in server.stderr.read()
