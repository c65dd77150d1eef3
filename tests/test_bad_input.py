"""Each bad input: a one-line message naming the cause and the fix, the documented exit code,
and no half-recorded batch."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from importer.db import Batch, open_database
from importer.gearman.address import free_port
from tests.conftest import importer, settings_from


def batches(env: dict[str, str]) -> int:
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Batch)) or 0


def test_missing_path(env: dict[str, str], tmp_path: Path) -> None:
    proc = importer("submit", str(tmp_path / "nope"), "--email", "a@example.com", env=env)
    assert proc.returncode == 2
    assert "nope: no such file or directory" in proc.stderr


def test_directory_without_pdfs(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    proc = importer("submit", str(folder), "--email", "a@example.com", env=env)
    assert proc.returncode == 2
    assert "no PDF found" in proc.stderr and "1 other files ignored" in proc.stderr
    assert batches(env) == 0


def test_invalid_email(env: dict[str, str], inbox: Path) -> None:
    for bad in ["not-an-address", "a@example.com\r\nBcc: x@evil.test", "a@b.com, c@d.com"]:
        proc = importer("submit", str(inbox), "--email", bad, env=env)
        assert proc.returncode == 2, bad
        assert "invalid e-mail address" in proc.stderr
    assert batches(env) == 0


def test_unreachable_gearmand(env: dict[str, str], inbox: Path) -> None:
    env["IMPORTER_GEARMAN_SERVERS"] = f"127.0.0.1:{free_port()}"
    proc = importer("submit", str(inbox), "--email", "a@example.com", env=env)
    assert proc.returncode == 3
    assert env["IMPORTER_GEARMAN_SERVERS"] in proc.stderr
    assert "importer gearmand" in proc.stderr
    assert batches(env) == 0


def test_unreachable_database(env: dict[str, str], inbox: Path) -> None:
    env["IMPORTER_DATABASE_URL"] = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    proc = importer("submit", str(inbox), "--email", "a@example.com", env=env)
    assert proc.returncode == 3
    assert "unreachable" in proc.stderr and "IMPORTER_DATABASE_URL" in proc.stderr


def test_bad_setting_names_the_key(env: dict[str, str], inbox: Path) -> None:
    env["IMPORTER_GEARMAN_SERVERS"] = "localhost"
    proc = importer("status", env=env)
    assert proc.returncode == 2
    assert "IMPORTER_GEARMAN_SERVERS" in proc.stderr


def test_config_file_keys(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "importer.toml"
    config.write_text('data_dir = "%s"\nmail_from = "ocr@example.com"\n' % (tmp_path / "cfgdata"))
    env.pop("IMPORTER_DATA_DIR")
    env["IMPORTER_CONFIG"] = str(config)
    proc = importer("status", "--json", env=env, check=True)
    assert json.loads(proc.stdout) == {"batches": [], "rejected_jobs": 0, "replayed_jobs": 0}
    assert (tmp_path / "cfgdata" / "importer.db").exists()
    config.write_text('gearman_server = "x"\n')
    proc = importer("status", env=env)
    assert proc.returncode == 2 and "IMPORTER_GEARMAN_SERVER" in proc.stderr


def test_dry_run_records_nothing(env: dict[str, str], inbox: Path) -> None:
    proc = importer(
        "submit", str(inbox), "--email", "a@example.com", "--dry-run", env=env, check=True
    )
    assert "born_digital.pdf" in proc.stdout and "would be submitted" in proc.stdout
    assert batches(env) == 0


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    for args in (
        ["worker", "--concurrency", "0"],
        ["submit"],
        ["bogus"],
        ["export", "--format", "xml"],
        ["requeue"],
    ):
        proc = importer(*args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_include_exclude_and_no_recursive(env: dict[str, str], inbox: Path) -> None:
    nested = inbox / "nested"
    nested.mkdir()
    (nested / "deep.pdf").write_bytes((inbox / "born_digital.pdf").read_bytes() + b"\n% deep")

    def would(*args: str) -> set[str]:
        proc = importer(
            "submit",
            str(inbox),
            "--email",
            "a@example.com",
            "--dry-run",
            *args,
            env=env,
            check=True,
        )
        return {Path(line).name for line in proc.stdout.splitlines() if line.endswith(".pdf")}

    everything = would()
    assert "deep.pdf" in everything and "scanned_memo.pdf" in everything
    assert "deep.pdf" not in would("--no-recursive")
    assert would("--include", "scanned_*") == {"scanned_letter.pdf", "scanned_memo.pdf"}
    assert "scanned_memo.pdf" not in would("--exclude", "*memo*")
    assert batches(env) == 0


def test_worker_max_jobs_stops_after_n(env: dict[str, str], inbox: Path) -> None:
    for p in inbox.iterdir():
        if p.name not in ("born_digital.pdf", "mixed.pdf"):
            p.unlink()
    importer("submit", str(inbox), "--email", "a@example.com", env=env, check=True)
    importer("worker", "--max-jobs", "1", env=env, check=True, timeout=120)
    status = json.loads(importer("status", "--json", env=env, check=True).stdout)
    assert status["batches"][0]["done"] == 1 and status["batches"][0]["queued"] == 1


def test_lang_that_is_not_a_language_spec(env: dict[str, str], inbox: Path) -> None:
    for bad in ("eng+", "eng deu", "../eng", "eng+eng"):
        proc = importer("submit", str(inbox), "--email", "a@example.com", "--lang", bad, env=env)
        assert proc.returncode == 2, bad
        assert f"--lang {bad!r}" in proc.stderr and "e.g. eng+deu" in proc.stderr, proc.stderr
    assert batches(env) == 0
