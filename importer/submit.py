"""`importer submit`: walk, record, enqueue, in pipelined groups.

Files are classified by their first bytes, not their names. A group of files is hashed,
checked for earlier imports, inserted in one transaction and sent to gearmand in one
pipelined round trip, so submission never waits on a round trip per file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from importer import payload
from importer.db.engine import Database
from importer.db.lifecycle import close_batch_if_done
from importer.db.models import Batch, Document, utcnow
from importer.errors import BadInput, GearmanUnavailable
from importer.gearman_io import GearmanIO
from importer.requeue import send
from importer.states import DocStatus, NotifyMode, Priority, TextLayerMode

log = logging.getLogger(__name__)

GROUP = 500
SNIFF_BYTES = 1024
PDF_MAGIC = b"%PDF-"


@dataclass(frozen=True)
class SubmitOptions:
    email: str
    recursive: bool = True
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    priority: Priority = Priority.normal
    lang: str = "eng"
    notify: NotifyMode = NotifyMode.batch
    text_layer: TextLayerMode = TextLayerMode.auto
    force: bool = False
    dry_run: bool = False


@dataclass
class SubmitResult:
    batch_id: str | None
    submitted: int = 0
    skipped: int = 0  # already imported (same sha256), unless --force
    ignored: int = 0  # not PDFs and not named .pdf
    not_pdf: int = 0  # named .pdf but not a PDF: recorded as failed
    would_submit: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"batch_id": self.batch_id, "submitted": self.submitted, "skipped": self.skipped}


@dataclass(frozen=True)
class Candidate:
    path: str
    size: int
    sha256: str
    is_pdf: bool


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def new_job_id() -> str:
    return "j-" + secrets.token_hex(12)


def within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(str(path), p) for p in patterns)


def resolve_args(paths: Sequence[str], roots: Sequence[Path]) -> list[tuple[Path, bool]]:
    """Check every argument before anything is recorded: (resolved path, is a directory)."""
    resolved: list[tuple[Path, bool]] = []
    for raw in paths:
        given = Path(raw)
        if not given.exists():
            raise BadInput(f"{raw}: no such file or directory")
        real = given.resolve()
        if roots and not within(real, roots):
            raise BadInput(
                f"{raw} resolves to {real}, outside IMPORTER_ALLOWED_ROOTS "
                f"({':'.join(map(str, roots))}): move the files or add a root"
            )
        resolved.append((real, given.is_dir()))
    return resolved


def walk(paths: Sequence[str], opts: SubmitOptions, roots: Sequence[Path]) -> Iterator[Path]:
    """Resolved regular files to consider, in a stable order."""
    for real, is_dir in resolve_args(paths, roots):
        if not is_dir:
            yield real
            continue
        walker = os.walk(real, followlinks=False)
        for top, dirs, files in walker:
            dirs.sort()
            if not opts.recursive:
                dirs.clear()
            for name in sorted(files):
                path = Path(top, name)
                if opts.include and not _matches(path, opts.include):
                    continue
                if opts.exclude and _matches(path, opts.exclude):
                    continue
                real_file = path.resolve()
                if not real_file.is_file():
                    continue
                if roots and not within(real_file, roots):
                    log.warning(
                        "%s: link to %s outside the allowed roots, skipped", path, real_file
                    )
                    continue
                yield real_file


def inspect(path: Path) -> Candidate | None:
    """Sniff and hash one file in a single read; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
            digest.update(head)
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            size = handle.tell()
    except OSError as e:
        log.warning("%s: cannot read (%s), skipped", path, e.strerror)
        return None
    return Candidate(str(path), size, digest.hexdigest(), PDF_MAGIC in head)


def _groups(items: Iterable[Path], size: int) -> Iterator[list[Path]]:
    group: list[Path] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def submit(
    db: Database | None,
    gio: GearmanIO | None,
    keyring: payload.Keyring,
    paths: Sequence[str],
    opts: SubmitOptions,
    *,
    roots: Sequence[Path] = (),
    progress: Callable[[int, int], None] | None = None,
) -> SubmitResult:
    """Record a batch and enqueue its documents; `progress(files_seen, submitted)` as it goes."""
    files = walk(paths, opts, roots)
    result = SubmitResult(batch_id=None if opts.dry_run else new_batch_id())
    seen_hashes: set[str] = set()
    seen = 0
    batch_created = False
    try:
        for group in _groups(files, GROUP):
            candidates = [c for c in map(inspect, group) if c is not None]
            seen += len(group)
            keep = _classify(db, candidates, opts, seen_hashes, result)
            result.not_pdf += sum(not c.is_pdf for c in keep)
            if opts.dry_run:
                result.would_submit.extend(c.path for c in keep if c.is_pdf)
                result.submitted += sum(c.is_pdf for c in keep)
            elif keep:
                assert db is not None and gio is not None and result.batch_id is not None
                if not batch_created:
                    _create_batch(db, result.batch_id, opts)
                    batch_created = True
                result.submitted += _record_and_send(db, gio, keyring, result.batch_id, keep)
            if progress:
                progress(seen, result.submitted)
    except GearmanUnavailable:
        if batch_created and db is not None and result.batch_id:
            _abandon_unsent(db, result.batch_id, result.submitted)
        raise
    if not opts.dry_run and db is not None and result.batch_id:
        if not batch_created:
            result.batch_id = None
        else:
            with db.session() as s:
                s.execute(
                    update(Batch)
                    .where(Batch.id == result.batch_id)
                    .values(total=result.submitted + result.not_pdf, skipped=result.skipped)
                )
            close_batch_if_done(db, result.batch_id)
    return result


def _classify(
    db: Database | None,
    candidates: list[Candidate],
    opts: SubmitOptions,
    seen_hashes: set[str],
    result: SubmitResult,
) -> list[Candidate]:
    keep: list[Candidate] = []
    for c in candidates:
        if not c.is_pdf and not c.path.lower().endswith(".pdf"):
            result.ignored += 1
        elif c.is_pdf and c.sha256 in seen_hashes and not opts.force:
            result.skipped += 1
        else:
            seen_hashes.add(c.sha256)
            keep.append(c)
    if opts.force or db is None or not keep:
        return keep
    with db.session() as s:
        imported = set(
            s.scalars(
                select(Document.sha256).where(
                    Document.sha256.in_([c.sha256 for c in keep if c.is_pdf]),
                    Document.status == DocStatus.done,
                )
            )
        )
    result.skipped += sum(1 for c in keep if c.is_pdf and c.sha256 in imported)
    return [c for c in keep if not (c.is_pdf and c.sha256 in imported)]


def _create_batch(db: Database, batch_id: str, opts: SubmitOptions) -> None:
    with db.session() as s:
        s.add(
            Batch(
                id=batch_id,
                email=opts.email,
                notify=opts.notify,
                lang=opts.lang,
                priority=opts.priority,
                text_layer=opts.text_layer,
            )
        )


def _record_and_send(
    db: Database, gio: GearmanIO, keyring: payload.Keyring, batch_id: str, keep: list[Candidate]
) -> int:
    """Insert one group's rows, then send its PDFs in one pipelined round trip.

    Largest files go first: gearmand hands jobs out in order, and starting the longest
    documents early keeps every worker busy until the end instead of leaving one
    finishing a big file alone (longest-processing-time-first).
    """
    now = utcnow()
    keep = sorted(keep, key=lambda c: c.size, reverse=True)
    rows = [
        {
            "batch_id": batch_id,
            "path": c.path,
            "size": c.size,
            "sha256": c.sha256,
            "job_id": new_job_id(),
            "status": DocStatus.queued if c.is_pdf else DocStatus.failed,
            "error": None if c.is_pdf else "not a PDF (the file does not start with %PDF-)",
            "enqueued_at": now if c.is_pdf else None,
            "finished_at": None if c.is_pdf else now,
        }
        for c in keep
    ]
    with db.session() as s:
        s.execute(insert(Document), rows)
        ids = list(
            s.scalars(
                select(Document.id)
                .where(
                    Document.job_id.in_(
                        [r["job_id"] for r in rows if r["status"] == DocStatus.queued]
                    )
                )
                .order_by(Document.id)
            )
        )
    return send(db, gio, ids, keyring) if ids else 0


def _abandon_unsent(db: Database, batch_id: str, sent: int) -> None:
    """gearmand went away mid-submit: delete an empty batch, or mark what was not sent."""
    with db.session() as s:
        if sent == 0:
            s.execute(delete(Document).where(Document.batch_id == batch_id))
            s.execute(delete(Batch).where(Batch.id == batch_id))
            return
        s.execute(
            update(Document)
            .where(
                Document.batch_id == batch_id,
                Document.status == DocStatus.queued,
                Document.enqueued_at.is_(None),
            )
            .values(
                status=DocStatus.failed,
                error="not enqueued: gearmand was unreachable; run `importer retry` for this batch",
                finished_at=utcnow(),
            )
        )
