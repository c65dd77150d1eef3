"""One key ring per fleet: hosts that share a database hold the same signing keys, or
refuse to start saying which key they lack; files the importer creates are private."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from importer.config import Settings
from importer.errors import ConfigError
from importer.keyring import new_key
from tests.conftest import SAMPLES, importer

KEY_A = "k1:" + "a" * 40
KEY_A_OTHER = "k1:" + "b" * 40
KEY_NEW = "k2:" + "c" * 40


@pytest.fixture
def hosts(tmp_path: Path, env: dict[str, str], pg_url: str) -> tuple[dict[str, str], ...]:
    """Two hosts' environments: one PostgreSQL database and one gearmand, own data dirs."""
    made = []
    for name in ("a", "b"):
        host = dict(env)
        host.pop("IMPORTER_SECRET_KEYS")
        host["IMPORTER_DATA_DIR"] = str(tmp_path / name)
        host["IMPORTER_DATABASE_URL"] = pg_url
        host["IMPORTER_ALLOWED_ROOTS"] = str(SAMPLES)
        made.append(host)
    return tuple(made)


def submit(host: dict[str, str]) -> str:
    proc = importer(
        "submit", str(SAMPLES / "born_digital.pdf"), "--email", "ops@example.com", "--json",
        "--force", env=host, check=True,
    )  # fmt: skip
    return str(json.loads(proc.stdout)["batch_id"])


def test_a_shared_database_needs_keys_given_not_made(hosts: tuple[dict[str, str], ...]) -> None:
    a, _ = hosts
    for command in (["worker", "--burst"], ["submit", str(SAMPLES), "--email", "a@b.example"]):
        proc = importer(*command, env=a)
        assert proc.returncode == 2, proc.stderr
        assert "IMPORTER_SECRET_KEYS is required" in proc.stderr
        assert "importer keys new" in proc.stderr
    assert not (Path(a["IMPORTER_DATA_DIR"]) / "secret_keys").exists()


def test_hosts_with_different_keys_under_one_id_refuse_to_start(
    hosts: tuple[dict[str, str], ...],
) -> None:
    a, b = hosts
    a["IMPORTER_SECRET_KEYS"] = KEY_A
    b["IMPORTER_SECRET_KEYS"] = KEY_A_OTHER
    batch = submit(a)
    proc = importer("worker", "--burst", env=b)
    assert proc.returncode == 2
    assert "signing key 'k1' of this host is not the key 'k1' other hosts recorded" in proc.stderr
    assert "b" * 40 not in proc.stderr + proc.stdout  # fingerprints, never the secret
    # with the fleet's key the same host imports the batch, and nothing counts as forged
    b["IMPORTER_SECRET_KEYS"] = KEY_A
    importer("worker", "--burst", env=b, check=True)
    status = json.loads(importer("status", batch, "--json", env=b, check=True).stdout)
    assert status["batches"][0]["done"] == 1
    assert status["rejected_jobs"] == 0


def test_rotation_a_host_without_the_newest_key_refuses(hosts: tuple[dict[str, str], ...]) -> None:
    a, b = hosts
    a["IMPORTER_SECRET_KEYS"] = KEY_A
    b["IMPORTER_SECRET_KEYS"] = KEY_A
    submit(a)
    a["IMPORTER_SECRET_KEYS"] = f"{KEY_NEW},{KEY_A}"  # the new key first, on host a
    submit(a)
    proc = importer("worker", "--burst", env=b)
    assert proc.returncode == 2
    assert "lacks signing key 'k2'" in proc.stderr
    b["IMPORTER_SECRET_KEYS"] = f"{KEY_A},{KEY_NEW}"  # has it, but signs with the old one
    proc = importer("worker", "--burst", env=b)
    assert proc.returncode == 2 and "put 'k2' first" in proc.stderr
    b["IMPORTER_SECRET_KEYS"] = KEY_NEW  # the old key dropped: a warning, not a refusal
    proc = importer("worker", "--burst", env=b, check=True)
    assert "signing key 'k1', recorded by other hosts, is not in this host's" in proc.stderr


def test_keys_new_prints_a_key_the_settings_accept() -> None:
    key = new_key()
    kid, _, secret = key.partition(":")
    assert kid.startswith("k") and len(secret.encode()) >= 32
    assert Settings(secret_keys=key).keyring() == [(kid, secret.encode())]
    assert new_key() != key
    with pytest.raises(ValueError, match="32 bytes or more"):
        Settings(secret_keys="k1:" + "x" * 31)
    with pytest.raises(ValueError, match="no key given"):
        Settings(secret_keys=",")
    with pytest.raises(ValueError, match="each key id may appear once"):
        Settings(secret_keys=f"{KEY_A},{KEY_A_OTHER}")


def test_keys_are_generated_only_when_everything_is_local(tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path / "d")
    assert local.keyring()[0][0] == "k1"
    remote_gearmand = Settings(data_dir=tmp_path / "e", gearman_servers="10.0.0.5:4730")
    with pytest.raises(ConfigError, match="IMPORTER_SECRET_KEYS is required"):
        remote_gearmand.keyring()
    elsewhere = Settings(data_dir=tmp_path / "f", database_url=f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigError, match="importer keys new"):
        elsewhere.keyring()


def test_what_run_creates_is_private(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    data = tmp_path / "data"
    env["IMPORTER_DATA_DIR"] = str(data)
    importer(
        "run", str(SAMPLES / "born_digital.pdf"), "--email", "ops@example.com", "--workers", "1",
        env=env, check=True,
    )  # fmt: skip
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    created = [p for p in data.rglob("*")]
    assert {"importer.db", "secret_keys"} <= {p.name for p in created}
    assert any(p.parent.name == "new" for p in created)  # the e-mail
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(data)} is {mode:o}"


def test_a_data_dir_planted_by_another_user_is_refused(tmp_path: Path) -> None:
    """Another user's data dir would give them the key that signs and the pages' text."""
    if os.geteuid() != 0:
        pytest.skip("planting a file of another user needs root")
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "secret_keys").write_text("k1:" + "k" * 40 + "\n")
    os.chown(planted / "secret_keys", 65534, 65534)
    with pytest.raises(ConfigError, match="belongs to another user"):
        Settings(data_dir=planted).keyring()
    os.chown(planted / "secret_keys", os.geteuid(), os.getegid())
    assert Settings(data_dir=planted).keyring()[0][0] == "k1"
    linked = tmp_path / "linked"
    linked.symlink_to(planted)
    with pytest.raises(ConfigError, match="symbolic link"):
        Settings(data_dir=linked).keyring()
