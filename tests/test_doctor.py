"""`importer doctor`: plain answers about tools, services and exposure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from importer.gearman.address import free_port
from importer.gearman.client import GearmanIO
from importer.gearman.server import GearmandProcess
from tests.conftest import importer


def checks(proc_stdout: str) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(proc_stdout)}


def test_healthy_setup_passes(env: dict[str, str]) -> None:
    proc = importer("doctor", "--json", env=env)
    found = checks(proc.stdout)
    assert proc.returncode == 0, proc.stdout
    assert found["tesseract"]["state"] == "ok"
    assert found["languages"]["state"] == "ok"
    assert found[f"gearmand {env['IMPORTER_GEARMAN_SERVERS']}"]["state"] == "ok"
    assert found["database"]["state"] == "ok"


def test_flags_gearmand_listening_on_all_interfaces(env: dict[str, str], tmp_path: Path) -> None:
    exposed = GearmandProcess(data_dir=tmp_path / "open", listen="0.0.0.0", port=free_port())
    with exposed:
        exposed.wait_ready()
        proc = importer("doctor", "--json", env=env)
    assert proc.returncode == 1, proc.stdout
    rows = [c for c in json.loads(proc.stdout) if c["state"] == "exposed"]
    assert any(f"0.0.0.0:{exposed.port}" in c["detail"] for c in rows), rows
    assert any("--tls" in c["fix"] for c in rows)


def test_flags_missing_language_and_readable_keys(env: dict[str, str]) -> None:
    importer("status", env=env, check=True)
    keys = Path(env["IMPORTER_DATA_DIR"]) / "secret_keys"
    keys.write_text("k1:" + "s" * 32 + "\n")
    os.chmod(keys, 0o644)
    env.pop("IMPORTER_SECRET_KEYS")
    proc = importer("doctor", "--json", "--lang", "eng+xyz", env=env)
    assert proc.returncode == 1, proc.stdout
    found = checks(proc.stdout)
    assert "tesseract-ocr-xyz" in found["languages"]["fix"]
    assert found["key files"]["state"] == "exposed" and "chmod 600" in found["key files"]["fix"]


def test_flags_plaintext_smtp_password(env: dict[str, str]) -> None:
    env["IMPORTER_MAIL_URL"] = "smtp://user:secret@mail.example.com:25"
    proc = importer("doctor", "--json", env=env)
    assert proc.returncode == 1, proc.stdout
    assert checks(proc.stdout)["mail transport"]["state"] == "exposed"
    assert "secret" not in proc.stdout


def test_flags_remote_gearmand_without_tls(env: dict[str, str]) -> None:
    """Judged from the configuration alone: the remote address is never contacted."""
    from importer.doctor import check_exposure
    from importer.gearman.client import GearmanIO
    from tests.conftest import settings_from

    local = env["IMPORTER_GEARMAN_SERVERS"]
    env["IMPORTER_GEARMAN_SERVERS"] = f"{local},gearman.example.com:4730"
    with GearmanIO([local]) as gio:
        found = {c.name: c for c in check_exposure(settings_from(env), gio)}
    assert found["gearmand transport"].state == "exposed"
    assert "gearman.example.com:4730" in found["gearmand transport"].detail
    assert "IMPORTER_TLS_CA" in found["gearmand transport"].fix


def test_flags_a_rogue_worker_and_foreign_functions(env: dict[str, str]) -> None:
    """A worker that registered `import` without being ours (it would steal jobs)."""
    import subprocess
    import sys
    import threading
    import time

    import gearman  # type: ignore[import-untyped]

    stop = threading.Event()

    class Rogue(gearman.GearmanWorker):  # type: ignore[misc]
        def after_poll(self, any_activity: bool) -> bool:
            return not stop.is_set()

    rogue = Rogue([env["IMPORTER_GEARMAN_SERVERS"]])
    rogue.register_task(b"import", lambda w, j: b"")
    rogue.register_task(b"shell_exec", lambda w, j: b"")
    thread = threading.Thread(target=rogue.work, kwargs={"poll_timeout": 0.2}, daemon=True)
    thread.start()
    ours = subprocess.Popen([sys.executable, "-m", "importer", "worker"], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            workers = GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]).admin_workers()
            registered = sum(" import" in w for w in workers)
            if registered == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert registered == 2, f"our worker never registered: {workers}"
        proc = importer("doctor", "--json", env=env)
        found = checks(proc.stdout)
    finally:
        stop.set()
        thread.join(5)
        ours.terminate()
        ours.wait(30)
    assert proc.returncode == 1, proc.stdout
    assert found["workers"]["state"] == "exposed"
    assert found["workers"]["detail"].startswith("1 worker(s)"), "our own worker was flagged"
    assert "shell_exec" in found["functions"]["detail"]


def test_flags_a_plain_gearmand_port_whose_owner_it_cannot_see(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run as another user, doctor cannot see who holds a socket: a configured gearmand port
    open beyond loopback that answers plain text is still exposure."""
    from importer import doctor
    from tests.conftest import settings_from

    exposed = GearmandProcess(data_dir=tmp_path / "open", listen="0.0.0.0", port=free_port())
    monkeypatch.setattr(doctor, "_socket_owners", dict)  # no process's sockets are visible
    with exposed:
        exposed.wait_ready()
        env["IMPORTER_GEARMAN_SERVERS"] = f"127.0.0.1:{exposed.port}"
        with GearmanIO([env["IMPORTER_GEARMAN_SERVERS"]]) as gio:
            found = doctor.check_exposure(settings_from(env), gio)
    rows = [c for c in found if c.name == "gearmand exposure"]
    assert rows and f"0.0.0.0:{exposed.port}" in rows[0].detail


def test_tls_in_front_of_a_public_port_is_not_exposure(env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    certs = tmp_path / "certs"
    importer("certs", "init", str(certs), env=env, check=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "importer", "gearmand", "--tls", "--certs", str(certs),
         "--listen", "0.0.0.0", "--port", str(port)],
        env={**env, "IMPORTER_DATA_DIR": str(tmp_path / "gearmand")},
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        env.update(
            IMPORTER_GEARMAN_SERVERS=f"localhost:{port}",
            IMPORTER_TLS_CA=str(certs / "ca.pem"),
            IMPORTER_TLS_CERT=str(certs / "client.pem"),
            IMPORTER_TLS_KEY=str(certs / "client.key"),
        )
        deadline = time.monotonic() + 20
        while importer("doctor", "--json", env=env).returncode != 0:
            assert time.monotonic() < deadline, importer("doctor", "--json", env=env).stdout
            time.sleep(0.5)
        found = checks(importer("doctor", "--json", env=env).stdout)
    finally:
        server.terminate()
        server.wait(30)
    assert "gearmand exposure" not in found
    assert [name for name, c in found.items() if c["state"] == "exposed"] == []


def test_a_failed_admin_question_is_a_warning_not_ok(env: dict[str, str]) -> None:
    env["IMPORTER_GEARMAN_SERVERS"] = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = importer("doctor", "--json", env=env)
    assert proc.returncode == 1, proc.stdout  # doctor's own 1, not the table's 3
    found = checks(proc.stdout)
    assert found["gearmand registrations"]["state"] == "warn"
    assert "exposure" not in found


def test_flags_open_data_files_and_missing_roots(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "importer.toml"
    config.write_text('mail_from = "importer@example.com"\n')
    env["IMPORTER_CONFIG"] = str(config)
    importer("status", env=env, check=True)  # creates the data dir and the database
    data = Path(env["IMPORTER_DATA_DIR"])
    for path, mode in ((data, 0o755), (data / "importer.db", 0o644), (config, 0o644)):
        os.chmod(path, mode)
    del env["IMPORTER_ALLOWED_ROOTS"]
    proc = importer("doctor", "--json", env=env)
    assert proc.returncode == 1, proc.stdout
    rows = [c for c in json.loads(proc.stdout) if c["name"] == "data files"]
    flagged = {row["detail"].split(" is open")[0] for row in rows}
    assert flagged == {str(data), str(data / "importer.db"), str(config)}
    assert {row["fix"] for row in rows} >= {f"chmod 700 {data}", f"chmod 600 {config}"}
    assert checks(proc.stdout)["allowed roots"]["state"] == "warn"


def test_reports_the_isolation_of_document_children(env: dict[str, str]) -> None:
    found = checks(importer("doctor", "--json", env=env).stdout)["isolation"]
    if os.geteuid() == 0:
        assert "children run as nobody" in found["detail"] and "no network" in found["detail"]
        # one user for the children of every worker, each in namespaces of its own
        assert "each its own processes, /tmp, /run and IPC" in found["detail"]
        assert "each its own process limit, no capabilities" in found["detail"]
        assert found["state"] == "ok", found
    env["IMPORTER_CHILD_USER"] = "no-such-user-here"
    proc = importer("doctor", "--json", env=env)
    if os.geteuid() == 0:
        assert proc.returncode == 1, proc.stdout
        found = checks(proc.stdout)["isolation"]
        assert found["state"] == "fail" and "no-such-user-here" in found["detail"]
        worker = importer("worker", "--burst", env=env)
        assert worker.returncode == 2 and "IMPORTER_CHILD_USER" in worker.stderr


def test_refuses_a_lang_that_is_not_a_language_spec(env: dict[str, str]) -> None:
    proc = importer("doctor", "--lang", "eng --user-words /etc/passwd", env=env)
    assert proc.returncode == 2
    assert "not a Tesseract language name" in proc.stderr and "e.g. eng+deu" in proc.stderr
