"""What a user relies on in docker-compose.yml and the Dockerfile, checked without Docker.

No Docker engine is needed: the files are parsed and checked for the promises the README
makes (scale the workers, nothing but the mail UI reachable from the host, settings
that the application actually reads). When the docker CLI with the compose plugin is
installed, compose's own validation runs as well.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from importer.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"gearmand", "db", "mail", "worker"}
DEBIAN_PACKAGES = {"gearman-job-server", "tesseract-ocr", "poppler-utils", "stunnel4"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _published(service: dict[str, Any]) -> list[str]:
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append(f"{port.get('host_ip', '')}:{port.get('published', '')}:{port['target']}")
        else:
            out.append(str(port))
    return out


def test_the_four_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= SERVICES


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "fixed host ports would clash with --scale worker=N"
    assert _command(worker)[:1] == ["worker"]


def test_worker_waits_for_a_healthy_database(services: dict[str, dict[str, Any]]) -> None:
    depends = services["worker"]["depends_on"]
    assert isinstance(depends, dict)
    assert depends["db"]["condition"] == "service_healthy"
    assert "gearmand" in depends
    assert services["db"].get("healthcheck"), "service_healthy needs a healthcheck"
    assert str(services["db"]["image"]).startswith("postgres:16")
    assert services["db"].get("volumes"), "the database must survive `docker compose down`"


def test_every_setting_is_real() -> None:
    """A misspelt IMPORTER_ key would be rejected at start-up: extra settings are forbidden."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for path in (COMPOSE, DOCKERFILE):
        used = set(re.findall(r"\bIMPORTER_[A-Z0-9_]+", path.read_text()))
        assert used, f"{path.name} sets no IMPORTER_ variable"
        assert used <= known, f"{path.name}: not settings: {sorted(used - known)}"


def test_worker_settings(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["worker"])
    assert env["IMPORTER_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["IMPORTER_GEARMAN_SERVERS"] == "gearmand:4730"
    assert env["IMPORTER_MAIL_URL"] == "smtp://mail:1025"
    assert env["IMPORTER_ALLOWED_ROOTS"] == "/data"
    assert "IMPORTER_SECRET_KEYS" in env
    assert "./inbox:/data:ro" in services["worker"]["volumes"]


def test_the_dashboard_asks_for_its_token(services: dict[str, dict[str, Any]]) -> None:
    """It listens beyond its container's loopback: without a token it would refuse to start,
    and compose refuses to start it without one set."""
    dashboard = services["dashboard"]
    assert _command(dashboard)[:1] == ["dashboard"]
    env = _environment(dashboard)
    assert env["IMPORTER_DASHBOARD_TOKEN"].startswith("${IMPORTER_DASHBOARD_TOKEN:?")
    assert env["IMPORTER_DATABASE_URL"] == _environment(services["worker"])["IMPORTER_DATABASE_URL"]


def test_workers_get_what_their_walls_need_and_no_more(
    services: dict[str, dict[str, Any]],
) -> None:
    """Without these a worker refuses to start (workers/walls.py): root, so children drop
    to IMPORTER_CHILD_USER; SYS_ADMIN, which also makes Docker's default seccomp profile
    allow unshare and mount; no AppArmor profile that forbids mount. Nothing wider."""
    worker = services["worker"]
    assert str(worker.get("user")) in ("root", "0", "0:0")
    assert worker.get("cap_add") == ["SYS_ADMIN"]
    options = [str(o).replace(":", "=", 1) for o in worker.get("security_opt") or []]
    assert options == ["apparmor=unconfined"], "seccomp stays Docker's default"
    assert not worker.get("privileged") and worker.get("network_mode") != "host"
    assert _environment(worker)["IMPORTER_WEAK_ISOLATION"] == "${IMPORTER_WEAK_ISOLATION:-0}"
    for name, service in services.items():
        if name != "worker":
            assert not service.get("cap_add") and not service.get("security_opt"), name
    gearmand = _environment(services["gearmand"])  # only what it needs, no secret
    assert set(gearmand) == {"IMPORTER_DATA_DIR"}


def test_workers_get_time_to_drain(services: dict[str, dict[str, Any]]) -> None:
    """On `docker compose stop` a worker finishes or hands back its document, then sends
    its outbox for up to DRAIN_SECONDS: compose must wait longer than that."""
    from workers.supervisor import DRAIN_SECONDS

    grace = str(services["worker"]["stop_grace_period"])
    assert grace.endswith("s") and int(grace[:-1]) > DRAIN_SECONDS


def test_submitter_shares_the_workers_settings(services: dict[str, dict[str, Any]]) -> None:
    """Same keys, same database, same root: else signatures or paths would not match."""
    submit = services["submit"]
    assert submit.get("profiles") == ["tools"]
    assert _environment(submit) == _environment(services["worker"])
    assert "./inbox:/data:ro" in submit["volumes"]
    entry = submit.get("entrypoint")
    assert (entry.split() if isinstance(entry, str) else entry) == ["importer", "submit"]


def test_gearmand_is_not_published(services: dict[str, dict[str, Any]]) -> None:
    gearmand = services["gearmand"]
    assert not gearmand.get("ports")
    assert gearmand.get("network_mode") != "host"
    command = " ".join(_command(gearmand))
    assert command.startswith("gearmand --listen 0.0.0.0 --port 4730")
    for name, service in services.items():
        assert not any(p.endswith(":4730") or p == "4730" for p in _published(service)), name


def test_gearmand_and_db_are_on_an_internal_network(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    networks = compose["networks"]
    for name in ("gearmand", "db"):
        attached = services[name].get("networks")
        assert attached, f"{name} would sit on the default, non-internal network"
        for net in attached:
            assert networks[net].get("internal") is True, f"{name} is on {net}"


def test_only_loopback_is_published(services: dict[str, dict[str, Any]]) -> None:
    published = {name: _published(s) for name, s in services.items() if _published(s)}
    assert published == {"mail": ["127.0.0.1:8025:8025"], "dashboard": ["127.0.0.1:8730:8730"]}
    assert str(services["mail"]["image"]).startswith("axllent/mailpit")


def test_worker_and_gearmand_share_the_image(services: dict[str, dict[str, Any]]) -> None:
    worker, gearmand = services["worker"], services["gearmand"]
    assert worker.get("image") == gearmand.get("image")
    assert worker.get("build") == gearmand.get("build")
    assert worker.get("build") is not None


def _dockerfile_packages() -> set[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found: set[str] = set()
    for match in re.finditer(r"apt-get install ([^&;\n]*)", text):
        found |= {word for word in match.group(1).split() if not word.startswith("-")}
    return found


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert _dockerfile_packages() >= DEBIAN_PACKAGES | {"tesseract-ocr-eng", "tesseract-ocr-deu"}
    assert re.search(r"pip install \.", text)
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert re.search(r'^ENTRYPOINT \["importer"\]', text, re.MULTILINE)
    assert re.search(r"^RUN id -u nobody", text, re.MULTILINE), "the child user must exist"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=20, check=False
    )
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker CLI with the compose plugin is not installed")
    env = {**os.environ, "IMPORTER_SECRET_KEYS": "k1:" + "x" * 32}
    result = subprocess.run(
        [*cli, "--project-directory", str(ROOT), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
