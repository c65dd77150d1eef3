"""End to end through real services: submit -> gearmand -> workers -> database -> e-mail."""

from __future__ import annotations

import json
import mailbox
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from importer.db import Document, Page, open_database
from importer.states import DocStatus, PageSource
from tests.conftest import SAMPLES, cer, importer, settings_from, submit_json
from tests.mail_parts import plain_text

CLEAN = ["scanned_letter", "scanned_memo", "born_digital", "mixed"]


def expected_pages(name: str) -> list[str]:
    return (SAMPLES / f"{name}.txt").read_text().split("\f")


@pytest.mark.slow
def test_batch_imports_text_and_mails_once(
    inbox: Path, env: dict[str, str], database_url: str
) -> None:
    env["IMPORTER_DATABASE_URL"] = database_url
    env["IMPORTER_ALLOWED_ROOTS"] = str(inbox)
    (inbox / "fake.pdf").write_text("a text file with a PDF's name\n")
    result = submit_json(inbox, env)
    pdfs = sorted(p.name for p in inbox.glob("*.pdf"))
    assert result["submitted"] == len(pdfs) - 1  # fake.pdf is named .pdf but is not one
    assert result["skipped"] == 0

    importer("worker", "--burst", "--concurrency", "2", env=env, check=True, timeout=600)

    db = open_database(database_url)
    with db.session() as s:
        docs = {Path(d.path).stem: d for d in s.scalars(select(Document))}
        pages = {
            (Path(path).stem, p.number): p
            for p, path in s.execute(select(Page, Document.path).join(Document))
        }
    assert docs["fake"].status == DocStatus.failed
    assert "not a PDF" in (docs["fake"].error or "")
    assert docs["broken"].status == DocStatus.failed
    assert "PDF" in (docs["broken"].error or "")
    for name in CLEAN + ["rotated"]:
        assert docs[name].status == DocStatus.done, (name, docs[name].error)
        expected = expected_pages(name)
        assert docs[name].pages_done == len(expected)
        got = [pages[(name, n)].text for n in range(1, len(expected) + 1)]
        limit = 0.05 if name == "rotated" else 0.02
        rate = cer("\f".join(expected), "\f".join(got))
        assert rate <= limit, f"{name}: character error rate {rate:.3%}"
    # born-digital pages come from the text layer, not OCR
    assert {pages[("born_digital", n)].source for n in range(1, 3)} == {PageSource.text_layer}
    assert all(
        p.confidence is not None for (name, _), p in pages.items() if name.startswith("scanned")
    )

    # exactly one summary e-mail for the batch, in the default maildir
    box = mailbox.Maildir(Path(env["IMPORTER_DATA_DIR"]) / "mail", create=False)
    messages = list(box)
    assert len(messages) == 1
    body = plain_text(messages[0])
    assert messages[0]["To"] == "ops@example.com"
    assert "fake.pdf" in body and "not a PDF" in body and "broken.pdf" in body

    status = json.loads(importer("status", "--json", env=env, check=True).stdout)
    batch = status["batches"][0]
    assert batch["id"] == result["batch_id"]
    assert batch["done"] == len(pdfs) - 2 and batch["failed"] == 2
    assert batch["finished_at"] is not None

    # a second submission of the same files skips what is done
    again = submit_json(inbox, env)
    assert again["skipped"] == len(pdfs) - 2
    assert again["submitted"] == 1  # broken.pdf failed, so it is tried again


def test_export_jsonl_has_the_documented_keys(inbox: Path, env: dict[str, str]) -> None:
    for p in inbox.iterdir():
        if p.name not in ("born_digital.pdf", "broken.pdf"):
            p.unlink()
    submit_json(inbox, env)
    importer("worker", "--burst", env=env, check=True)
    lines = importer("export", "--format", "jsonl", env=env, check=True).stdout.splitlines()
    records = {Path(r["path"]).name: r for r in map(json.loads, lines)}
    assert set(records) == {"born_digital.pdf", "broken.pdf"}
    keys = {"batch_id", "path", "sha256", "status", "pages", "text", "error", "job_id", "archive"}
    assert all(set(r) == keys for r in records.values())
    born = records["born_digital.pdf"]
    assert born["text"].count("\f") == born["pages"] - 1
    assert cer(expected_pages("born_digital")[0], born["text"].split("\f")[0]) <= 0.02
    hits = json.loads(
        importer("search", born["text"].split()[3], "--json", env=env, check=True).stdout
    )
    assert any(h["path"].endswith("born_digital.pdf") for h in hits)


def test_status_shows_live_page_progress(tmp_path: Path, env: dict[str, str]) -> None:
    """While a long scanned document is OCRed, status reports its page from gearmand."""
    from pypdf import PdfReader, PdfWriter

    src = PdfReader(SAMPLES / "scanned_letter.pdf")
    writer = PdfWriter()
    for _ in range(8):
        for page in src.pages:
            writer.add_page(page)
    folder = tmp_path / "long"
    folder.mkdir()
    with open(folder / "long.pdf", "wb") as handle:
        writer.write(handle)
    batch = submit_json(folder, env)["batch_id"]
    worker = __import__("subprocess").Popen(
        [__import__("sys").executable, "-m", "importer", "worker", "--burst"], env=env
    )
    try:
        seen: list[list[int]] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            out = json.loads(importer("status", str(batch), "--json", env=env, check=True).stdout)
            doc = out["documents"][0]
            if doc["status"] == "running" and doc["progress"][0] > 0:
                seen.append(doc["progress"])
            if doc["status"] == "done":
                break
            time.sleep(0.3)
        assert seen, "no progress was visible while the document ran"
        num, den = seen[0]
        assert 0 < num < den == len(src.pages) * 8
        assert doc["status"] == "done" and doc["progress"] == [den, den]
    finally:
        worker.wait(timeout=120)


def test_payload_from_submitter_reaches_worker_through_gearmand(
    inbox: Path, env: dict[str, str]
) -> None:
    """The submitter's signing code and the worker's verifying code meet over a real gearmand."""
    import gearman  # type: ignore[import-untyped]

    from importer import payload

    target = inbox / "born_digital.pdf"
    batch = submit_json(target, env)["batch_id"]
    settings = settings_from(env)
    received: list[object] = []

    class Once(gearman.GearmanWorker):  # type: ignore[misc]
        def after_job(self) -> bool:
            return False

    w = Once([env["IMPORTER_GEARMAN_SERVERS"]])

    def on_job(_w: object, job: object) -> bytes:
        received.append(
            payload.decode(
                job.data,
                keyring=settings.keyring(),  # type: ignore[attr-defined]
                ttl_seconds=60,
            )
        )
        received.append(job.unique)  # type: ignore[attr-defined]
        return b"ok"

    w.register_task(b"import", on_job)
    w.work(poll_timeout=5)
    job, unique = received
    db = open_database(settings.resolved_database_url)
    with db.session() as s:
        doc = s.scalars(select(Document).where(Document.batch_id == batch)).one()
    assert job.file == str(target) and job.email == "ops@example.com"  # type: ignore[attr-defined]
    assert job.job_id == doc.job_id == unique.decode()  # type: ignore[attr-defined]


def test_notify_each_over_real_smtp(inbox: Path, env: dict[str, str], smtp_server) -> None:  # type: ignore[no-untyped-def]
    """--notify each: one e-mail per document, received by a real SMTP server."""
    for p in inbox.iterdir():
        if p.name not in ("born_digital.pdf", "broken.pdf"):
            p.unlink()
    env["IMPORTER_MAIL_URL"] = f"smtp://{smtp_server.host}:{smtp_server.port}"
    submit_json(inbox, env, "--notify", "each")
    importer("worker", "--burst", "--concurrency", "2", env=env, check=True)
    received = smtp_server.received
    assert len(received) == 2
    assert all(r.rcpt_tos == ["ops@example.com"] for r in received)
    bodies = [plain_text(r.message) for r in received]
    assert sum("born_digital.pdf" in b for b in bodies) == 1
    assert sum("broken.pdf" in b for b in bodies) == 1


def test_batch_mail_over_real_smtp(inbox: Path, env: dict[str, str], smtp_server) -> None:  # type: ignore[no-untyped-def]
    for p in inbox.iterdir():
        if p.name not in ("born_digital.pdf", "scanned_memo.pdf", "broken.pdf"):
            p.unlink()
    env["IMPORTER_MAIL_URL"] = f"smtp://{smtp_server.host}:{smtp_server.port}"
    batch = submit_json(inbox, env)["batch_id"]
    importer("worker", "--burst", "--concurrency", "2", env=env, check=True)
    assert len(smtp_server.received) == 1
    message = smtp_server.received[0].message
    assert str(batch) in message["Subject"]
    body = plain_text(message)
    assert "broken.pdf" in body and "importer retry" in body


def page_sources(env: dict[str, str], batch_id: str) -> list[PageSource]:
    db = open_database(settings_from(env).resolved_database_url)
    with db.session() as s:
        query = select(Page.source).join(Document).where(Document.batch_id == batch_id)
        return list(s.scalars(query.order_by(Page.number)))


def test_workers_follow_the_batch_text_layer_mode(env: dict[str, str]) -> None:
    """Each batch keeps the mode it was submitted with, whatever the worker's settings."""
    pdf = str(SAMPLES / "born_digital.pdf")
    ocr = submit_json(Path(pdf), env, "--text-layer", "ocr")
    env["IMPORTER_TEXT_LAYER"] = "keep"  # the submit default, for the next batch only
    kept = submit_json(Path(pdf), env, "--force")
    env["IMPORTER_TEXT_LAYER"] = "ocr"  # a worker's own setting changes nothing
    importer("worker", "--burst", env=env, check=True)
    assert page_sources(env, str(ocr["batch_id"])) == [PageSource.ocr] * 3
    assert page_sources(env, str(kept["batch_id"])) == [PageSource.text_layer] * 3
    bad = importer("submit", pdf, "--email", "a@b.example", "--text-layer", "fast", env=env)
    assert bad.returncode == 2 and "--text-layer" in bad.stderr
