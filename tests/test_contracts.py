"""Strings one part writes and another reads: outbox keys, job outcomes, the status JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from importer.db import Document, open_database
from importer.db.engine import Database
from importer.db.models import Batch, Outbox, RejectedJob
from importer.db.outbox_key import BadOutboxKey, MailKind, OutboxKey
from importer.states import DocStatus, JobOutcome
from importer.status import (
    BatchStatus,
    DocumentStatus,
    ReviewDocument,
    StatusReport,
    documents,
    overview,
    with_documents,
)
from tests.conftest import SAMPLES, importer, settings_from
from tests.test_messages import example
from workers.job import Outcome

CLOSED = datetime(2026, 1, 1, 12, 30, 5, 123456, tzinfo=UTC)

# Outbox keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        OutboxKey.document("j-5f0c2a9e1b7d4c3a8e6f0b1d"),
        OutboxKey.batch("20260101-120000-a1b2c3", CLOSED),
        OutboxKey(MailKind.batch, "20260101-120000-a1b2c3"),
    ],
    ids=str,
)
def test_outbox_key_round_trip(key: OutboxKey) -> None:
    assert OutboxKey.decode(key.encode()) == key


def test_outbox_keys_as_stored() -> None:
    """The text in the column, as rows already stored have it."""
    assert OutboxKey.document("j-1").encode() == "doc:j-1"
    batch = OutboxKey.batch("b-1", CLOSED)
    assert batch.encode() == f"batch:b-1:{CLOSED.timestamp():.6f}" == "batch:b-1:1767270605.123456"
    import importer.db.outbox_key as module

    lines = [line.split()[0] for line in (module.__doc__ or "").splitlines() if line.strip()]
    examples = [text for text in lines if text.startswith(("doc:", "batch:"))]
    assert len(examples) == 3
    for text in examples:
        assert OutboxKey.decode(text).encode() == text


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("doc", "is not kind:id"),
        ("doc:", "is not kind:id"),
        ("mail:j-1", "unknown kind 'mail'"),
        ("batch:b-1:yesterday", "no valid close time"),
        ("batch::1767270605.123456", "no valid close time"),
        ("doc:" + "j" * 200, "is not kind:id"),
    ],
)
def test_malformed_outbox_keys_are_refused(text: str, error: str) -> None:
    with pytest.raises(BadOutboxKey, match=error):
        OutboxKey.decode(text)


def test_only_a_batch_key_has_a_close_time() -> None:
    with pytest.raises(BadOutboxKey):
        OutboxKey(MailKind.document, "j-1", "1767270605.123456")


# The job payload -------------------------------------------------------------------------


def test_a_payload_from_the_submitter_opens_in_the_worker(env: dict[str, str]) -> None:
    """`importer submit` encodes, gearmand carries, the worker's decode_job opens: the
    facts the worker gets are the ones the database recorded."""
    import subprocess

    from importer import payload
    from tests.test_sealed_jobs import ROGUE

    target = SAMPLES / "born_digital.pdf"
    batch = json.loads(
        importer("submit", str(target), "--email", "ops@example.com", "--json", env=env).stdout
    )["batch_id"]
    taken = subprocess.run(
        ["/usr/bin/python3", "-c", ROGUE, env["IMPORTER_GEARMAN_SERVERS"]],
        capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    job = payload.decode_job(taken, keyring=settings_from(env).keyring(), ttl_seconds=60)
    doc = json.loads(importer("status", batch, "--json", env=env, check=True).stdout)
    recorded = doc["documents"][0]
    assert (job.payload.job_id, job.payload.file) == (recorded["job_id"], recorded["path"])
    assert job.payload.email == "ops@example.com" and job.content is None
    assert taken.startswith(b'{"iat":') and b"\n" in taken


def test_the_payload_docstring_examples_have_the_fields_encode_writes() -> None:
    from importer import payload

    lines = [line.strip() for line in (payload.__doc__ or "").splitlines()]
    header = json.loads(next(line for line in lines if line.startswith('{"iat"')))
    private = json.loads(next(line for line in lines if line.startswith('{"email"')))
    data = payload.encode("j-1", "/data/in/a.pdf", "ops@example.com", keyring=[("k1", b"s" * 32)])
    assert set(header) == set(json.loads(data.partition(b"\n")[0]))
    assert header["v"] == payload.VERSION and set(private) == {"file", "email"}


# Job outcomes ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(JobOutcome))
@pytest.mark.parametrize("detail", ["", "3 pages", "no progress: page 2 (IMPORTER_X)"])
def test_outcome_round_trip(status: JobOutcome, detail: str) -> None:
    outcome = Outcome(status, detail)
    assert Outcome.decode(outcome.encode()) == outcome


def test_outcome_docstring_examples_decode() -> None:
    lines = example(Outcome).decode().splitlines()
    assert [Outcome.decode(line.encode()).status for line in lines] == [
        JobOutcome.done,
        JobOutcome.retry,
        JobOutcome.dropped,
    ]
    assert Outcome(JobOutcome.done, "3 pages").encode() == b"done: 3 pages"


@pytest.mark.parametrize("data", [b"finished: 3 pages", b"", b"done: ", b"\xff"])
def test_what_is_not_an_outcome_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        Outcome.decode(data)


# The status JSON -------------------------------------------------------------------------

CREATED = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)


def seed(db: Database) -> None:
    """A batch in every state, a finished one, and refused jobs."""
    with db.session() as s:
        s.add(
            Batch(
                id="b-old", email="old@example.com", total=1, created_at=CREATED, finished_at=CLOSED
            )
        )
        s.add(Batch(id="b-new", email="ops@example.com", total=5, created_at=CLOSED))
        rows = [
            ("b-old", "/in/0.pdf", DocStatus.done, 2, 2, None, 1),
            ("b-new", "/in/a.pdf", DocStatus.done, 3, 3, None, 1),
            ("b-new", "/in/b.pdf", DocStatus.failed, None, 0, "not a PDF", 0),
            ("b-new", "/in/c.pdf", DocStatus.dead, 5, 2, "out of memory (gave up)", 3),
            ("b-new", "/in/d.pdf", DocStatus.running, 4, 1, None, 1),
            ("b-new", "/in/e.pdf", DocStatus.queued, None, 0, None, 0),
        ]
        kinds = {2: "not-pdf", 3: "out-of-memory"}
        review = {1: 2}  # pages marked for review
        # searchable PDFs (--archive): shown once done, so d.pdf's stays hidden while it runs
        archives = {1: "/archive/a.pdf", 4: "/archive/d.pdf"}
        for n, (batch, path, status, pages, done, error, attempts) in enumerate(rows):
            s.add(
                Document(
                    batch_id=batch,
                    path=path,
                    sha256=f"{n:064d}",
                    status=status,
                    job_id=f"j-{n}",
                    pages=pages,
                    pages_done=done,
                    error=error,
                    attempts=attempts,
                    error_kind=kinds.get(n),
                    pages_review=review.get(n, 0),
                    archive=archives.get(n),
                )
            )
        s.add_all(
            [
                RejectedJob(reason="forged", kind="rejected"),
                RejectedJob(reason="forged", kind="rejected"),
                RejectedJob(reason="document already finished", kind="replayed"),
            ]
        )
        s.add(Outbox(key="doc:j-1", batch_id="b-new", recipient="ops@example.com"))


NEW_BATCH = {
    "id": "b-new",
    "email": "ops@example.com",
    "total": 5,
    "queued": 1,
    "running": 1,
    "done": 1,
    "failed": 2,
    "dead": 1,
    "pages_done": 6,
    "created_at": "2026-01-01T12:30:05.123456+00:00",
    "finished_at": None,
}
OLD_BATCH = {
    "id": "b-old",
    "email": "old@example.com",
    "total": 1,
    "queued": 0,
    "running": 0,
    "done": 1,
    "failed": 0,
    "dead": 0,
    "pages_done": 2,
    "created_at": "2026-01-01T12:00:00.250000+00:00",
    "finished_at": "2026-01-01T12:30:05.123456+00:00",
}


def doc_json(
    n: int,
    status: str,
    progress: list[int],
    attempts: int,
    error: str | None,
    kind: str | None = None,
    review: int = 0,
    archive: str | None = None,
) -> dict:
    return {
        "path": f"/in/{'-abcde'[n]}.pdf",
        "job_id": f"j-{n}",
        "status": status,
        "progress": progress,
        "attempts": attempts,
        "error": error,
        "error_kind": kind,
        "pages_review": review,
        "archive": archive,
    }


NEW_DOCUMENTS = [
    doc_json(1, "done", [3, 3], 1, None, review=2, archive="/archive/a.pdf"),
    doc_json(2, "failed", [0, 0], 0, "not a PDF", "not-pdf"),
    doc_json(3, "dead", [2, 5], 3, "out of memory (gave up)", "out-of-memory"),
    doc_json(4, "running", [1, 4], 1, None),
    doc_json(5, "queued", [0, 0], 0, None),
]
# with the batch named: its pages for review, and the documents that have them
NAMED_BATCH = {**NEW_BATCH, "pages_review": 2}
REVIEW = {"review": [{"path": "/in/a.pdf", "job_id": "j-1", "pages_review": 2}], "review_total": 1}


def assert_same_json(got: object, expected: object) -> None:
    """Equal, and with the keys in the same order (the printed text is what is checked)."""
    assert json.dumps(got) == json.dumps(expected)


def test_status_json_keys_and_values(database_url: str) -> None:
    db = open_database(database_url)
    seed(db)
    report = overview(db)
    assert_same_json(
        report.to_json(),
        {"batches": [NEW_BATCH, OLD_BATCH], "rejected_jobs": 2, "replayed_jobs": 1},
    )
    one = overview(db, "b-new")
    with_docs = with_documents(db, one, None, limit=None)
    assert with_docs.documents == documents(db, "b-new", None)
    assert_same_json(
        with_docs.to_json(),
        {
            "batches": [NAMED_BATCH],
            "rejected_jobs": 2,
            "replayed_jobs": 1,
            **REVIEW,
            "documents": NEW_DOCUMENTS,
            "documents_total": 5,
        },
    )
    assert StatusReport.from_json(json.loads(json.dumps(with_docs.to_json()))) == with_docs
    assert StatusReport.from_json(report.to_json()) == report
    assert not report.finished and overview(db, "b-old").finished


def test_status_json_as_the_command_prints_it(env: dict[str, str]) -> None:
    seed(open_database(settings_from(env).resolved_database_url))
    printed = importer("status", "--json", env=env, check=True).stdout
    assert_same_json(
        json.loads(printed),
        {"batches": [NEW_BATCH, OLD_BATCH], "rejected_jobs": 2, "replayed_jobs": 1},
    )
    printed = importer("status", "b-new", "--json", env=env, check=True).stdout
    assert_same_json(
        json.loads(printed),
        {
            "batches": [NAMED_BATCH],
            "rejected_jobs": 2,
            "replayed_jobs": 1,
            **REVIEW,
            "documents": NEW_DOCUMENTS,
            "documents_total": 5,
        },
    )
    table = importer("status", "b-new", env=env, check=True).stdout
    assert "b-new" in table and "/in/c.pdf" in table and "2/5" in table
    assert "2 forged or invalid jobs rejected by workers" in table


@pytest.mark.parametrize("cls", [BatchStatus, DocumentStatus, ReviewDocument])
def test_status_docstring_examples_read_back(
    cls: type[BatchStatus] | type[DocumentStatus] | type[ReviewDocument],
) -> None:
    body = json.loads(example(cls))
    assert_same_json(cls.from_json(body).to_json(), body)
