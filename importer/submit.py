"""`importer submit`: walk, record, enqueue, in pipelined groups.

Every file is opened once with the worker's confined open (`importer.opening`: no symbolic
link in any component, a regular file with one name, really under the PATHs given, a FIFO
or device refused without blocking), and sniffed, measured and hashed through that one
descriptor; an inline batch's jobs are read from it too when they go at once. A file over
the size cap is refused from its `fstat`, before a byte is hashed.

Files are classified by their first bytes, not their names. A group of files is hashed,
checked for earlier imports, inserted in one transaction and sent to gearmand in one
pipelined round trip, so submission never waits on a round trip per file. The round trip
runs on a background thread while the next group is read, hashed and recorded; one group
is in flight at a time, so memory stays flat in the number of files.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from importer import payload
from importer.archive_names import ArchiveNames
from importer.db.engine import Database
from importer.db.lifecycle import close_batch_if_done
from importer.db.models import Batch, Document, utcnow
from importer.errors import BadInput, GearmanUnavailable, ImporterError
from importer.gearman.client import GROUP_SIZE, GearmanIO, JobSpec
from importer.gearman.send import store_handles
from importer.inline_feed import InlineFeed, inline_sender_lease
from importer.opening import Refused, open_confined, open_directory, sha256_of
from importer.reasons import ErrorKind
from importer.states import DocStatus, NotifyMode, Priority, TextLayerMode

log = logging.getLogger(__name__)

SNIFF_BYTES = 1024
PDF_MAGIC = b"%PDF-"
NOT_PDF = "not a PDF (the file does not start with %PDF-)"
BAD_NAME = (
    "the file name is not valid UTF-8 (shown with its bytes escaped as \\x..): rename the"
    " file to a UTF-8 name and submit it again"
)


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
    inline: bool = False  # each job carries its file's bytes (importer.inline)
    max_inline_mb: int = 64  # IMPORTER_MAX_INLINE_MB
    inline_in_flight_mb: int = 256  # IMPORTER_INLINE_IN_FLIGHT_MB
    inline_until_finished: bool = False  # --wait: stay the batch's sender until it finishes
    max_file_mb: int = 512  # IMPORTER_MAX_FILE_MB: larger files are refused unread
    archive_dir: str | None = None  # --archive DIR, checked (importer.archive_names)

    @property
    def max_read_bytes(self) -> int:
        """Files larger than this are refused from their fstat, never hashed."""
        limit = self.max_file_mb
        if self.inline:
            limit = min(limit, self.max_inline_mb)
        return limit * 2**20


@dataclass
class SubmitResult:
    batch_id: str | None
    submitted: int = 0
    skipped: int = 0  # already imported (same sha256), unless --force
    ignored: int = 0  # not PDFs and not named .pdf
    not_pdf: int = 0  # named .pdf but not a PDF: recorded as failed
    too_large: int = 0  # over IMPORTER_MAX_INLINE_MB with --inline: recorded as failed
    bad_name: int = 0  # PDFs whose names are not valid UTF-8: recorded as failed
    refused: int = 0  # refused by the confined open or over IMPORTER_MAX_FILE_MB: failed
    would_submit: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {"batch_id": self.batch_id, "submitted": self.submitted, "skipped": self.skipped}


@dataclass(frozen=True)
class Candidate:
    path: str
    size: int
    sha256: str  # "" when the file was not hashed (refused, or over the size cap)
    is_pdf: bool
    refused: tuple[str, ErrorKind] | None = None  # by the confined open
    fd: int | None = None  # the open file, kept for an inline batch's first send

    @property
    def comparable(self) -> bool:
        """Whether it takes part in the duplicate check: a PDF that was hashed."""
        return self.is_pdf and bool(self.sha256)


def too_large_reason(path: str, size: int, limit_mb: int) -> str:
    return (
        f"{path} is {size:,} bytes, over IMPORTER_MAX_FILE_MB={limit_mb}: refused unread;"
        " split the file, or raise IMPORTER_MAX_FILE_MB (for submitter and workers)"
    )


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def new_job_id() -> str:
    return "j-" + secrets.token_hex(12)


def stored_path(path: str) -> str:
    """The path as the database holds it (text): a name that is not valid UTF-8 (read
    with surrogateescape) has its undecodable bytes written out, `/in/\\xff\\xfe.pdf`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def valid_name(path: str) -> bool:
    """Whether the path is text: no undecodable byte carried as a lone surrogate."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _matches(path: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


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


def walk(
    paths: Sequence[str], opts: SubmitOptions, roots: Sequence[Path]
) -> tuple[list[Path], Iterator[str]]:
    """The resolved PATHs (the only places files are read from) and the resolved regular
    files to consider, in a stable order (each directory's files by name, then its
    subdirectories by name), holding one directory listing at a time."""
    args = resolve_args(paths, roots)
    confine = [real for real, _ in args]

    def files() -> Iterator[str]:
        for real, is_dir in args:
            if is_dir:
                yield from _walk_dir(str(real), opts, confine)
            else:
                yield str(real)

    return confine, files()


def _walk_dir(top: str, opts: SubmitOptions, confine: Sequence[Path]) -> Iterator[str]:
    # `top` is resolved and each directory is listed through a descriptor opened without
    # following links, so a plain file's path is already its real path under the PATHs:
    # only symbolic links need resolving. (The file itself is opened confined again.)
    stack = [top]
    while stack:
        current = stack.pop()
        try:
            fd = open_directory(current)
        except Refused as e:
            log.warning("%s, skipped", e.reason)
            continue
        except OSError as e:
            log.warning("%s: cannot list (%s), skipped", current, e.strerror)
            continue
        try:
            with os.scandir(fd) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as e:
            log.warning("%s: cannot list (%s), skipped", current, e.strerror)
            continue
        finally:
            os.close(fd)
        subdirs: list[str] = []
        for entry in entries:
            path = os.path.join(current, entry.name)
            if entry.is_dir(follow_symlinks=False):
                if opts.recursive:
                    subdirs.append(path)
                continue
            if opts.include and not _matches(path, entry.name, opts.include):
                continue
            if opts.exclude and _matches(path, entry.name, opts.exclude):
                continue
            if entry.is_symlink():
                real = os.path.realpath(path)
                if not os.path.isfile(real):
                    continue
                if not within(Path(real), confine):
                    log.warning("%s: link to %s outside the PATHs given, skipped", path, real)
                    continue
                yield real
            elif entry.is_file(follow_symlinks=False):
                yield path
        stack.extend(reversed(subdirs))


def inspect(path: str, confine: Sequence[Path], max_bytes: int, *, keep: bool) -> Candidate | None:
    """Open one file confined, then sniff and hash it through that descriptor (kept open
    in the result when `keep`); None when it cannot be read. A file the confined open
    refuses comes back refused, unread; one over `max_bytes` sniffed, never hashed."""
    try:
        fd = open_confined(path, confine, None)
    except Refused as e:
        log.warning("%s", e.reason)
        return Candidate(path, 0, "", False, refused=(e.reason, e.kind))
    except OSError as e:
        log.warning("%s: cannot read (%s), skipped", path, e.strerror)
        return None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, SNIFF_BYTES, 0)
        sha256 = ""
        if size <= max_bytes:
            sha256, size = sha256_of(fd)
    except OSError as e:
        os.close(fd)
        log.warning("%s: cannot read (%s), skipped", path, e.strerror)
        return None
    if not keep:
        os.close(fd)
    return Candidate(path, size, sha256, PDF_MAGIC in head, fd=fd if keep else None)


def _close(candidates: Iterable[Candidate]) -> None:
    for c in candidates:
        if c.fd is not None:
            os.close(c.fd)


def _inspected(
    group: list[str],
    seen: int,
    confine: Sequence[Path],
    opts: SubmitOptions,
    result: SubmitResult,
    progress: Callable[[int, int], None] | None,
) -> list[Candidate]:
    """The group's readable files, hashed; `progress` after each one, so that the files
    per second show while a group of large files is read. An inline batch's stay open
    (the caller closes them, `_close`): its first send reads the descriptor hashed."""
    out: list[Candidate] = []
    keep = opts.inline and not opts.dry_run
    try:
        for number, path in enumerate(group, start=seen + 1):
            candidate = inspect(path, confine, opts.max_read_bytes, keep=keep)
            if candidate is not None:
                out.append(candidate)
            if progress:
                progress(number, result.submitted)
    except BaseException:
        _close(out)
        raise
    return out


def _groups(items: Iterable[str], size: int) -> Iterator[list[str]]:
    group: list[str] = []
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
    notice: Callable[[str], None] | None = None,
) -> SubmitResult:
    """Record a batch and enqueue its documents; `progress(files_seen, submitted)` as it goes,
    `notice(text)` for what the person who submits should know (an inline batch that must
    be fed: this process stays until it is all sent).

    If gearmand goes away part-way, the jobs it accepted stay queued (with their handles),
    the rest of the batch is marked failed for `importer retry`, and GearmanUnavailable
    says how many were queued; a batch of which no job was accepted is removed.
    """
    confine, files = walk(paths, opts, roots)
    return submit_files(db, gio, keyring, confine, files, opts, progress=progress, notice=notice)


def submit_files(
    db: Database | None,
    gio: GearmanIO | None,
    keyring: payload.Keyring,
    confine: Sequence[Path],
    files: Iterable[str],
    opts: SubmitOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    notice: Callable[[str], None] | None = None,
    into: str | None = None,
) -> SubmitResult:
    """`submit` for files already walked (`walk`), read only under `confine`.

    With `into`, the files join that batch, whose row the caller made (`importer watch`):
    its total is left unset, so it stays open until the caller closes it, and when
    gearmand goes away its earlier documents stay, whatever this call got sent.
    """
    result = SubmitResult(batch_id=None if opts.dry_run else into or new_batch_id())
    if opts.dry_run or db is None:
        _dry_run(db, files, confine, opts, result, progress)
        return result
    assert gio is not None and result.batch_id is not None
    pipeline = _Pipeline(db, gio, keyring, opts, result, confine, joined=into is not None)
    seen = 0
    try:
        for group in _groups(files, GROUP_SIZE):
            candidates = _inspected(group, seen, confine, opts, result, progress)
            seen += len(group)
            try:
                keep = _classify(db, candidates, opts, result, batch_id=pipeline.batch_id)
                result.not_pdf += sum(not c.is_pdf and c.refused is None for c in keep)
                if keep:
                    pipeline.add(keep)
            finally:
                _close(candidates)
            if progress:
                progress(seen, result.submitted)
        pipeline.finish(
            None if progress is None else lambda sent: progress(seen, sent), notice=notice
        )
    except GearmanUnavailable as e:
        pipeline.abandon(e, seen)  # raises
    finally:
        pipeline.close()
    if not pipeline.batch_id:
        result.batch_id = None
    return result


def _dry_run(
    db: Database | None,
    files: Iterable[str],
    confine: Sequence[Path],
    opts: SubmitOptions,
    result: SubmitResult,
    progress: Callable[[int, int], None] | None,
) -> None:
    seen_hashes: set[str] = set()
    seen = 0
    for group in _groups(files, GROUP_SIZE):
        candidates = _inspected(group, seen, confine, opts, result, progress)
        seen += len(group)
        keep = _classify(db, candidates, opts, result, seen_hashes=seen_hashes)
        result.not_pdf += sum(not c.is_pdf and c.refused is None for c in keep)
        result.refused += sum(c.refused is not None or (c.is_pdf and not c.sha256) for c in keep)
        pdfs = [c for c in keep if c.comparable]
        sent = [c.path for c in pdfs if valid_name(c.path)]
        result.bad_name += len(pdfs) - len(sent)
        result.would_submit.extend(sent)
        result.submitted += len(sent)
        if progress:
            progress(seen, result.submitted)


def _classify(
    db: Database | None,
    candidates: list[Candidate],
    opts: SubmitOptions,
    result: SubmitResult,
    *,
    batch_id: str | None = None,
    seen_hashes: set[str] | None = None,
) -> list[Candidate]:
    """Drop files that are not PDFs by name or content, and duplicates unless --force.

    A duplicate is a PDF with the sha256 of one imported before (done), of one earlier in
    this batch (in the database, so nothing grows with the number of files), or of one
    earlier in `seen_hashes` (a dry run, which records nothing).
    """
    keep: list[Candidate] = []
    group_hashes: set[str] = set()
    seen = group_hashes if seen_hashes is None else seen_hashes
    for c in candidates:
        if not c.is_pdf and not c.path.lower().endswith(".pdf"):
            result.ignored += 1
        elif c.comparable and c.sha256 in seen and not opts.force:
            result.skipped += 1
        else:
            if c.comparable:
                seen.add(c.sha256)
            keep.append(c)
    hashes = [c.sha256 for c in keep if c.comparable]
    if opts.force or db is None or not hashes:
        return keep
    # Looked up by hash alone (ix_documents_sha256_status) and judged here: given "done or
    # in this batch", a planner may read the whole batch through its own index instead,
    # once for every group of files.
    with db.session() as s:
        found = s.execute(
            select(Document.sha256, Document.status, Document.batch_id).where(
                Document.sha256.in_(hashes)
            )
        ).all()
    imported = {
        sha256
        for sha256, status, batch in found
        if status == DocStatus.done or (batch_id is not None and batch == batch_id)
    }
    result.skipped += sum(1 for c in keep if c.comparable and c.sha256 in imported)
    return [c for c in keep if not (c.comparable and c.sha256 in imported)]


@dataclass
class _InFlight:
    future: Future[dict[str, str]]
    ids: dict[str, int]  # job id -> document id


class _Pipeline:
    """Records groups on this thread and sends them on one background thread.

    The database is used from this thread only (SQLite connections stay on their thread);
    the sender only talks to gearmand, through a GearmanIO no one else uses meanwhile.
    Group k's handles are stored in the transaction that records group k+2.
    """

    def __init__(
        self,
        db: Database,
        gio: GearmanIO,
        keyring: payload.Keyring,
        opts: SubmitOptions,
        result: SubmitResult,
        confine: Sequence[Path] = (),
        *,
        joined: bool = False,
    ) -> None:
        self.db = db
        self.gio = gio
        self.keyring = keyring
        self.opts = opts
        self.result = result
        self.joined = joined  # adding to an open batch that someone else closes
        # set once the batch row exists
        self.batch_id: str | None = result.batch_id if joined else None
        self.accepted = 0  # jobs gearmand accepted, handles stored or not
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="submit-send")
        self._in_flight: _InFlight | None = None
        self._handles: list[tuple[int, str]] = []  # accepted, not yet stored
        self._recorded: dict[str, int] = {}  # recorded, not yet handed to the sender
        self.inline = InlineFeed(db, gio, keyring, opts, result) if opts.inline else None
        self.archive = (
            ArchiveNames(db, opts.archive_dir, confine, inline=opts.inline)
            if opts.archive_dir
            else None
        )

    def add(self, keep: list[Candidate]) -> None:
        """Record and sign a group, collect the group in flight, then send this one.

        Signing happens here, not on the sender, so that gearmand, the slowest part, gets
        the next group as soon as it has answered the last.
        """
        jobs = self._record(keep)
        if self.inline is not None:  # sent from the database, within the cap
            self._recorded = {}
            opened = {stored_path(c.path): c.fd for c in keep if c.fd is not None}
            self.result.submitted += self.inline.recorded(len(jobs), opened)
            return
        specs = [
            JobSpec(
                unique=job_id,
                data=payload.encode(job_id, path, self.opts.email, keyring=self.keyring),
                priority=self.opts.priority,
            )
            for job_id, path in jobs
        ]
        self._collect()
        self._dispatch(specs)

    def _record(self, keep: list[Candidate]) -> list[tuple[str, str]]:
        # Largest files go first: gearmand hands jobs out in order, and starting the longest
        # documents early keeps every worker busy until the end instead of leaving one
        # finishing a big file alone (longest-processing-time-first).
        keep = sorted(keep, key=lambda c: c.size, reverse=True)
        now = utcnow()
        batch_id = self.result.batch_id
        refusals = [self._refusal(c) for c in keep]
        archives = self._archives(keep, refusals)
        rows: list[dict[str, Any]] = [
            {
                "batch_id": batch_id,
                "path": stored_path(c.path),
                "size": c.size,
                "sha256": c.sha256,
                "job_id": new_job_id(),
                "status": DocStatus.queued if refused is None else DocStatus.failed,
                "error": None if refused is None else refused[0],
                "error_kind": None if refused is None else refused[1].value,
                "enqueued_at": now if refused is None and self.inline is None else None,
                "finished_at": None if refused is None else now,
                "archive": archive,
            }
            for c, refused, archive in zip(keep, refusals, archives, strict=True)
        ]
        table: Any = Document.__table__
        with self.db.session() as s:
            if self.batch_id is None:
                s.add(
                    Batch(
                        id=batch_id,
                        email=self.opts.email,
                        notify=self.opts.notify,
                        lang=self.opts.lang,
                        priority=self.opts.priority,
                        text_layer=self.opts.text_layer,
                        inline=self.opts.inline,
                        inline_sender_until=inline_sender_lease(self.opts.inline),
                        archive_dir=self.opts.archive_dir,
                    )
                )
                s.flush()
            returned = s.connection().execute(
                insert(table).returning(table.c.id, table.c.job_id), rows
            )
            ids = {job_id: doc_id for doc_id, job_id in returned}
            store_handles(s, self._handles)
        self.batch_id = batch_id
        self._handles = []
        jobs = [(r["job_id"], r["path"]) for r in rows if r["status"] == DocStatus.queued]
        self._recorded = {job_id: ids[job_id] for job_id, _ in jobs}
        return jobs

    def _archives(
        self, keep: list[Candidate], refusals: list[tuple[str, ErrorKind] | None]
    ) -> list[str | None]:
        """Each queued document's archive name (--archive), None for the rest."""
        if self.archive is None:
            return [None] * len(keep)
        pairs = zip(keep, refusals, strict=True)
        queued = [(stored_path(c.path), c.sha256) for c, r in pairs if r is None]
        names = iter(self.archive.assign(queued))
        return [None if r is not None else next(names) for r in refusals]

    def _dispatch(self, specs: list[JobSpec]) -> None:
        if not specs:
            return
        future = self._sender.submit(self.gio.submit_background, specs)
        self._in_flight = _InFlight(future, self._recorded)
        self._recorded = {}

    def _collect(self) -> None:
        """Wait for the group in flight; keep the handles of what gearmand accepted.

        On a GearmanUnavailable the accepted part of the group is kept and its rejected rest
        joins the recorded-but-unsent documents, which abandon() marks failed.
        """
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        try:
            handles = flight.future.result()
        except GearmanUnavailable as e:
            accepted: dict[str, str] = getattr(e, "accepted", {})
            self._take(flight.ids, accepted)
            self._recorded.update({j: d for j, d in flight.ids.items() if j not in accepted})
            raise
        self._take(flight.ids, handles)

    def _take(self, ids: dict[str, int], handles: dict[str, str]) -> None:
        taken = [(ids[j], handle) for j, handle in handles.items() if j in ids]
        self._handles.extend(taken)
        self.accepted += len(taken)
        self.result.submitted += len(taken)

    def _refusal(self, c: Candidate) -> tuple[str, ErrorKind] | None:
        """Why a kept file is recorded failed at once, and its kind, if it is."""
        if c.refused is not None:
            self.result.refused += 1
            return c.refused
        if not c.is_pdf:
            return NOT_PDF, ErrorKind.not_pdf
        if not valid_name(c.path):  # no job: a worker could not be told these bytes
            self.result.bad_name += 1
            return BAD_NAME, ErrorKind.bad_name
        if self.inline is not None:
            reason = self.inline.refusal(c.size)
            if reason is not None:
                return reason, ErrorKind.too_large_inline
        if c.size > self.opts.max_file_mb * 2**20:
            self.result.refused += 1
            return too_large_reason(c.path, c.size, self.opts.max_file_mb), ErrorKind.over_limit
        return None

    def finish(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        """Collect the last group; store the handles and the batch's totals; an inline
        batch's documents are then sent as jobs finish (`InlineFeed.serve`)."""
        self._collect()
        if self.batch_id is None:
            return
        if self.inline is not None:
            self.result.submitted = self.inline.queued
        totals: dict[str, Any] = {
            "total": self.result.submitted
            + self.result.not_pdf
            + self.result.too_large
            + self.result.bad_name
            + self.result.refused,
            "skipped": self.result.skipped,
        }
        if self.joined:
            totals = {"skipped": Batch.skipped + self.result.skipped}
        with self.db.session() as s:
            store_handles(s, self._handles)
            s.execute(update(Batch).where(Batch.id == self.batch_id).values(**totals))
        self._handles = []
        if self.inline is not None:
            self.inline.serve(self.batch_id, progress, notice)
        if not self.joined:
            close_batch_if_done(self.db, self.batch_id)

    def abandon(self, error: GearmanUnavailable, files_seen: int) -> None:
        """gearmand went away: keep what it accepted, mark the rest failed, and raise.

        A batch of which gearmand accepted nothing is deleted (no worker can meet one of its
        jobs); otherwise it stays, with the right total, so it finishes and sends its e-mail
        once the queued documents are done, and `importer retry` can send the rest.
        """
        batch_id = self.batch_id
        if batch_id is None:
            raise error
        unsent = list(self._recorded.values())
        if self.inline is not None:
            self.accepted += self.inline.sent
            unsent = self.inline.unsent(batch_id)
        with self.db.session() as s:
            store_handles(s, self._handles)
            if self.accepted == 0 and not self.joined:
                s.execute(delete(Document).where(Document.batch_id == batch_id))
                s.execute(delete(Batch).where(Batch.id == batch_id))
            else:
                now = utcnow()
                for first in range(0, len(unsent), GROUP_SIZE):
                    s.execute(
                        update(Document)
                        .where(Document.id.in_(unsent[first : first + GROUP_SIZE]))
                        .values(
                            status=DocStatus.failed,
                            error="not enqueued: gearmand was unreachable; "
                            f"run `importer retry {batch_id}`",
                            error_kind=ErrorKind.not_enqueued.value,
                            enqueued_at=None,
                            finished_at=now,
                        )
                    )
                if not self.joined:
                    total = s.scalar(
                        select(func.count())
                        .select_from(Document)
                        .where(Document.batch_id == batch_id)
                    )
                    s.execute(
                        update(Batch)
                        .where(Batch.id == batch_id)
                        .values(total=total or 0, skipped=self.result.skipped)
                    )
        self._handles, self._recorded = [], {}
        if self.accepted == 0 and not self.joined:
            self.batch_id = self.result.batch_id = None
            raise GearmanUnavailable(
                f"gearmand accepted no job of this submit, so nothing was recorded: {error.message}"
            ) from error
        if not self.joined:
            close_batch_if_done(self.db, batch_id)
        raise GearmanUnavailable(
            f"gearmand went away during the submit, after {files_seen} files were read: "
            f"{self.accepted} documents of batch {batch_id} were queued, {len(unsent)} were "
            f"not (marked failed); once gearmand is back, run `importer retry {batch_id}` "
            f"to send them. ({error.message})"
        ) from error

    def close(self) -> None:
        """Wait for any send still in flight (after an unexpected error) and stop the thread.

        Its handles are stored if the database allows; if not, the documents stay queued
        and marked enqueued, and the reaper's lost-job check finds them if need be.
        """
        flight = self._in_flight
        if flight is not None:
            try:
                self._collect()
                with self.db.session() as s:
                    store_handles(s, self._handles)
            except (ImporterError, SQLAlchemyError) as e:  # already failing: keep that error
                log.warning("handles of the last group not stored: %s", e)
        self._sender.shutdown(wait=True)
        if self.inline is not None and self.batch_id is not None:
            self.inline.leave(self.batch_id)
