"""`importer config`: every setting, where its value came from, and no secret in sight."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from importer.config import Settings
from importer.config_report import mask, mask_url
from tests.conftest import importer

KEY_SECRET = "Sq3cretKeyMaterial-0123456789abcdefghijkl"
OLD_SECRET = "0ldSecretKeyMaterial-0123456789abcdefghijk"
DB_PASSWORD = "dbPa55w0rd-from-the-file"
MAIL_PASSWORD = "m@il/Pa55?word"  # '@', '/' and '?' inside: masked all the same
SSL_PASSWORD = "sslPa55phrase"
TOKEN = "t0kenValue-never-shown"
API_KEY = "SG.apiKeyAsTheUserName"


def clean_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(IMPORTER_DATA_DIR=str(tmp_path / "data"), NO_COLOR="1", COLUMNS="250", **values)
    return env


def write_config(tmp_path: Path, text: str, name: str = "importer.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def report(env: dict[str, str]) -> dict[str, Any]:
    proc = importer("config", "--json", env=env, check=True, timeout=60)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def table_rows(env: dict[str, str]) -> dict[str, list[str]]:
    """The table's rows by key: [value, source], as a user reads them (a cell too wide
    for its column goes on in the next lines, its key cell empty)."""
    proc = importer("config", env=env, check=True, timeout=60)
    rows: dict[str, list[str]] = {}
    key = ""
    for line in proc.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) != 3:
            continue
        if cells[0].startswith("IMPORTER_"):
            key = cells[0]
            rows[key] = cells[1:]
        elif key and not cells[0]:
            rows[key] = [f"{old}{new}" for old, new in zip(rows[key], cells[1:], strict=True)]
    return rows


def test_environment_beats_file_beats_default(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        'max_pages = 77\nIMPORTER_MAIL_FROM = "file@example.com"\nmax_attempts = 5\n',
    )
    env = clean_env(
        tmp_path,
        IMPORTER_CONFIG=str(config),
        IMPORTER_MAIL_FROM="env@example.com",
        IMPORTER_MAX_ATTEMPTS="4",
    )
    data = report(env)
    assert data["IMPORTER_CONFIG"] == {"value": str(config), "source": "environment"}
    assert data["IMPORTER_MAIL_FROM"] == {"value": "env@example.com", "source": "environment"}
    assert data["IMPORTER_MAX_ATTEMPTS"] == {"value": 4, "source": "environment"}
    assert data["IMPORTER_MAX_PAGES"] == {"value": 77, "source": "file"}
    assert data["IMPORTER_OCR_DPI"] == {"value": 300, "source": "default"}
    assert data["IMPORTER_DATA_DIR"] == {"value": str(tmp_path / "data"), "source": "environment"}
    # Derived defaults are shown as they resolve: inside the data dir.
    database = f"sqlite:///{(tmp_path / 'data' / 'importer.db').resolve()}"
    assert data["IMPORTER_DATABASE_URL"] == {"value": database, "source": "default"}
    assert data["IMPORTER_MAIL_URL"]["value"] == f"maildir://{(tmp_path / 'data/mail').resolve()}"
    # Every key Settings has, whoever added it, and nothing else.
    assert set(data) == {"IMPORTER_CONFIG"} | {
        f"IMPORTER_{n.upper()}" for n in Settings.model_fields
    }

    rows = table_rows(env)
    assert rows["IMPORTER_MAIL_FROM"] == ["env@example.com", "environment"]
    assert rows["IMPORTER_MAX_PAGES"] == ["77", "file"]
    assert rows["IMPORTER_CONFIG"] == [str(config), "environment"]
    assert rows["IMPORTER_OCR_DPI"] == ["300", "default"]
    assert set(rows) == set(data)


def test_no_config_file_everything_default(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    del env["IMPORTER_DATA_DIR"]
    data = report(env)
    assert data["IMPORTER_CONFIG"] == {"value": None, "source": "default"}
    assert {entry["source"] for entry in data.values()} == {"default"}
    assert data["IMPORTER_GEARMAN_SERVERS"]["value"] == "127.0.0.1:4730"


def test_secrets_never_appear(tmp_path: Path) -> None:
    database = f"postgresql+psycopg://importer:{DB_PASSWORD}@db.internal:5432/importer"
    config = write_config(
        tmp_path, f'database_url = "{database}?sslpassword={SSL_PASSWORD}&sslmode=require"\n'
    )
    tokens = {  # whatever token fields Settings has by now (the dashboard's, for one)
        f"IMPORTER_{name.upper()}": TOKEN for name in Settings.model_fields if "token" in name
    }
    env = clean_env(
        tmp_path,
        IMPORTER_CONFIG=str(config),
        IMPORTER_SECRET_KEYS=f"knew:{KEY_SECRET},kold:{OLD_SECRET}",
        IMPORTER_MAIL_URL=f"smtp://mailer:{MAIL_PASSWORD}@smtp.internal:587?starttls=true",
        IMPORTER_TLS_KEY="/etc/importer/certs/client-key.pem",
        **tokens,
    )
    table = importer("config", env=env, check=True, timeout=60)
    machine = importer("config", "--json", env=env, check=True, timeout=60)
    for proc in (table, machine):
        shown = proc.stdout + proc.stderr
        for secret in (KEY_SECRET, OLD_SECRET, DB_PASSWORD, MAIL_PASSWORD, SSL_PASSWORD, TOKEN):
            assert secret not in shown, secret
        for part in ("Pa55", "m@il", "0123456789"):  # no piece of one either
            assert part not in shown, part
    data = json.loads(machine.stdout)
    assert data["IMPORTER_SECRET_KEYS"]["value"] == "knew:***,kold:***"  # the key ids
    assert data["IMPORTER_DATABASE_URL"] == {
        "value": "postgresql+psycopg://***@db.internal:5432/importer"
        "?sslpassword=***&sslmode=require",
        "source": "file",
    }
    assert data["IMPORTER_MAIL_URL"]["value"] == "smtp://***@smtp.internal:587?starttls=true"
    assert data["IMPORTER_TLS_KEY"]["value"] == "/etc/importer/certs/client-key.pem"  # a path
    for key in tokens:
        assert data[key] == {"value": "***", "source": "environment"}


def test_masking_rule() -> None:
    """By the name: secret words hide the value; `key` hides it unless it holds a path."""
    assert mask("dashboard_token", "abc") == "***"
    assert mask("smtp_password", "abc") == "***"
    assert mask("api_key", "abc") == "***"
    assert mask("tls_key", "/etc/k.pem", holds_path=True) == "/etc/k.pem"
    assert mask("signing_keys", "a:x, b:y") == "a:***,b:***"
    assert mask("dashboard_token", "") == ""
    assert mask("review_confidence", 60) == 60
    assert mask("mail_from", "a@example.com") == "a@example.com"
    assert mask_url("maildir:///var/lib/importer/mail") == "maildir:///var/lib/importer/mail"
    assert mask_url("smtp://relay:25") == "smtp://relay:25"
    assert mask_url("smtp://APIKEY@relay:25") == "smtp://***@relay:25"  # a user part alone
    assert mask_url("smtp://:pw@relay:25") == "smtp://***@relay:25"
    assert mask_url("postgresql://u:p@[::1]:5432/db") == "postgresql://***@[::1]:5432/db"
    assert mask_url("postgresql:///db?host=/run/pg&password=x") == (
        "postgresql:///db?host=/run/pg&password=***"
    )


SECRET_PARAMS = ("pass", "pwd", "key", "api_key", "apikey", "auth", "token", "secret")


@pytest.mark.parametrize(
    "name", [*SECRET_PARAMS, "password", "sslpassword", "X-Auth-Token", "client_secret", "Pass"]
)
def test_every_secret_named_query_parameter_is_masked(name: str) -> None:
    url = f"https://relay.example/api?mode=tls&{name}=s3cr3t;region=eu"
    assert mask_url(url) == f"https://relay.example/api?mode=tls&{name}=***;region=eu"


def test_a_user_name_alone_is_masked_by_the_command(tmp_path: Path) -> None:
    mail = f"smtp://{API_KEY}@smtp.internal:587?starttls=true&apikey={TOKEN}"
    env = clean_env(tmp_path, IMPORTER_MAIL_URL=mail)
    shown = importer("config", "--json", env=env, check=True, timeout=60).stdout
    assert API_KEY not in shown and TOKEN not in shown
    value = json.loads(shown)["IMPORTER_MAIL_URL"]["value"]
    assert value == "smtp://***@smtp.internal:587?starttls=true&apikey=***"


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ('max_pages = "many"\n', "IMPORTER_MAX_PAGES", "valid integer"),
        ("ocr_dpi = 5000\n", "IMPORTER_OCR_DPI", "less than or equal to 600"),
        ('IMPORTER_GEARMAN_SERVERS = ""\n', "IMPORTER_GEARMAN_SERVERS", "no server given"),
        ("max_pagez = 5\n", "IMPORTER_MAX_PAGEZ", "unknown setting"),
    ],
)
def test_bad_value_in_the_file_names_key_and_file(
    tmp_path: Path, text: str, key: str, why: str
) -> None:
    config = write_config(tmp_path, text, name="[bold]site.toml")
    proc = importer("config", env=clean_env(tmp_path, IMPORTER_CONFIG=str(config)), timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    message = " ".join(proc.stderr.split())
    assert key in message and str(config) in message and why in message, message
    assert proc.stdout == ""


def test_bad_value_in_the_environment_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "max_pages = 10\n")
    env = clean_env(tmp_path, IMPORTER_CONFIG=str(config), IMPORTER_MAX_PAGES="-1")
    proc = importer("config", env=env, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    message = " ".join(proc.stderr.split())
    assert "IMPORTER_MAX_PAGES (in the environment)" in message, message
    assert str(config) not in message
