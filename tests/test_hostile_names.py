"""File names that forge lines or are not text: one line per entry, the rest of the batch
goes on. A name holding a newline and bidi or zero-width characters is shown escaped by
`run`, `status BATCH` and `search`; a name that is not valid UTF-8 is recorded failed
(`bad-name`) with its bytes escaped, and never sent to a worker."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sqlalchemy import select

from importer.db.engine import open_database
from importer.db.models import Document
from tests.conftest import SAMPLES, importer, settings_from

FORGED_LINE = "/srv/payroll/forged"
# directories whose names end a line, then a path of their own: a line of its own if printed
# a good PDF: done, so it shows in search hits and the status table
DONE_NAME = f"x.pdf  page 1 …\n{FORGED_LINE}.pdf  page 9 \u202ecod\u200b.pdf"
DONE_SHOWN = f"x.pdf  page 1 …\\n{FORGED_LINE}.pdf  page 9 \\u202ecod\\u200b.pdf"
# a broken PDF: failed, so it shows in run's failure list
FAILED_NAME = f"y.pdf: corrupt\n  failed: {FORGED_LINE}\t\u2066z.pdf"
FAILED_SHOWN = f"y.pdf: corrupt\\n  failed: {FORGED_LINE}\\t\\u2066z.pdf"
BAD_NAME = b"\xff\xfe.pdf"  # not valid UTF-8


def _starts_with(cell: str, prefix: str) -> bool:
    """A table cell holds `prefix` at its start, or the part of it the table had room for."""
    shown = cell.removesuffix("…")
    return shown.startswith(prefix) or (cell.endswith("…") and prefix.startswith(shown))


def _lines_forging(output: str) -> list[str]:
    """Lines that start where a forged entry would: with the forged path."""
    return [line for line in output.splitlines() if line.lstrip(" │|").startswith(FORGED_LINE)]


def test_forged_and_undecodable_names(tmp_path: Path, gearmand) -> None:  # type: ignore[no-untyped-def]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, sample in ((DONE_NAME, "born_digital.pdf"), (FAILED_NAME, "broken.pdf")):
        (inbox / name).parent.mkdir(parents=True)
        shutil.copy(SAMPLES / sample, inbox / name)
    with open(os.fsencode(inbox) + b"/" + BAD_NAME, "wb") as bad:
        bad.write(b"%PDF-1.4\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(IMPORTER_DATA_DIR=str(tmp_path / "data"), COLUMNS="400", NO_COLOR="1")

    dry = importer("submit", str(inbox), "--email", "a@example.com", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert not _lines_forging(dry.stdout), dry.stdout
    assert "2 PDFs would be submitted" in dry.stdout, dry.stdout
    assert "1 with names not valid UTF-8" in dry.stdout

    run = importer("run", str(inbox), "--email", "ops@example.com", "--workers", "1", env=env)
    assert run.returncode == 1, run.stdout + run.stderr  # some failed; nothing crashed
    assert "Traceback" not in run.stderr
    assert not _lines_forging(run.stdout + run.stderr), run.stdout
    failures = [line for line in run.stdout.splitlines() if line.startswith("  failed: ")]
    assert len(failures) == 2, run.stdout  # one line each, the forged one included
    assert any(f"{inbox}/{FAILED_SHOWN}: " in line for line in failures), failures
    bad_shown = f"{inbox}/\\xff\\xfe.pdf"
    assert any(
        line.startswith(f"  failed: {bad_shown}: the file name is not valid UTF-8")
        and "rename the file" in line
        for line in failures
    ), failures

    listed = importer("status", "--json", env=env, check=True)
    batch = json.loads(listed.stdout)["batches"][0]
    assert (batch["done"], batch["failed"]) == (1, 2)
    shown = json.loads(importer("status", batch["id"], "--json", env=env, check=True).stdout)
    by_path = {d["path"]: d for d in shown["documents"]}
    assert by_path[bad_shown]["status"] == "failed"
    assert by_path[bad_shown]["error_kind"] == "bad-name"
    assert by_path[str(inbox / DONE_NAME)]["status"] == "done"  # the name kept as it is

    table = importer("status", batch["id"], env=env, check=True).stdout
    assert not _lines_forging(table), table
    rows = [line for line in table.splitlines() if " j-" in line]  # one per document
    # each row starts with its path (cut with "…" where the table's width ends)
    assert len(rows) == 3 and all(_starts_with(line.split()[0], str(inbox)) for line in rows)
    for name in (DONE_SHOWN, FAILED_SHOWN):  # a long path may wrap within its cell
        assert name.split(" ")[-1] in table and "\\n/srv/payroll/forged" in table, table
    assert "\u202e" not in table and "\u2066" not in table and "\u200b" not in table

    found = importer("search", "Library", env=env, check=True).stdout
    assert not _lines_forging(found), found
    assert any(DONE_SHOWN in line and "page 1" in line for line in found.splitlines()), found

    exported = importer("export", batch["id"], "--format", "jsonl", env=env, check=True)
    paths = {json.loads(line)["path"] for line in exported.stdout.splitlines()}
    assert bad_shown in paths and str(inbox / DONE_NAME) in paths

    # a worker is only ever sent a path that is the file's own bytes: the bad one got no job
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        bad = s.execute(select(Document).where(Document.path == bad_shown)).scalar_one()
        assert (bad.gearman_handle, bad.enqueued_at, bad.started_at) == (None, None, None)
        assert bad.attempts == 0
        sent = s.scalars(select(Document.path).where(Document.enqueued_at.is_not(None))).all()
    assert all(os.path.exists(os.fsencode(p)) for p in sent) and len(sent) == 2

    _retry_leaves_the_bad_name(env, gearmand.address, batch["id"], bad_shown)


def _retry_leaves_the_bad_name(env: dict[str, str], server: str, batch: str, bad: str) -> None:
    """retry sends the broken PDF again, never the name no worker could open."""
    retried = importer("retry", batch, env={**env, "IMPORTER_GEARMAN_SERVERS": server}, check=True)
    assert f"1 documents of batch {batch} queued again" in retried.stdout, retried.stdout
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        assert s.scalar(select(Document.status).where(Document.path == bad)) == "failed"
