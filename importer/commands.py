"""The bodies of `submit`, `status`, `retry` and `requeue`: collaborators built here, once."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from importer.archive_names import check_archive_dir
from importer.config import Settings
from importer.db.engine import Database, open_database
from importer.errors import BadInput, ExitCode, GearmanUnavailable
from importer.gearman.client import GearmanIO
from importer.keyring import check_fleet_keys
from importer.languages import check_lang
from importer.live_progress import (
    PROGRESS_EVERY,
    SubmitDisplay,
    Tracker,
    block,
    read_progress,
    summary_line,
)
from importer.notify import validate_address
from importer.report_text import printable
from importer.requeue import requeue_stale, retry_batch
from importer.states import NotifyMode, Priority, TextLayerMode
from importer.status import DOCUMENTS_LIMIT, StatusReport, overview, with_documents
from importer.submit import SubmitOptions, SubmitResult, resolve_args, submit


def require_reachable(gio: GearmanIO, settings: Settings) -> None:
    health = gio.ping()
    if not any(h.reachable for h in health):
        detail = "; ".join(f"{h.address}: {h.error}" for h in health)
        raise GearmanUnavailable(
            f"no gearmand answers at {settings.gearman_servers} ({detail}): start one with "
            "`importer gearmand`, or set IMPORTER_GEARMAN_SERVERS"
        )


def check_keys(settings: Settings, db: Database, err: Console) -> None:
    """Refuse a host whose signing keys disagree with the fleet's; say what only warns."""
    for warning in check_fleet_keys(db, settings.keyring()):
        err.print(f"warning: {warning}", style="yellow")


def do_submit(
    settings: Settings,
    paths: Sequence[str],
    email: str,
    *,
    recursive: bool,
    include: Sequence[str],
    exclude: Sequence[str],
    priority: Priority,
    lang: str,
    notify: NotifyMode,
    force: bool,
    dry_run: bool,
    as_json: bool,
    out: Console,
    err: Console,
    text_layer: TextLayerMode | None = None,
    archive: Path | None = None,
    inline: bool = False,
    wait: bool = False,
) -> int:
    if wait and not inline:
        raise BadInput(
            "--wait keeps an --inline submit until its batch is done; without --inline the"
            " workers read the files themselves: follow the batch with `importer status"
            " BATCH --watch`"
        )
    opts = SubmitOptions(
        email=validate_address(email),
        recursive=recursive,
        include=include,
        exclude=exclude,
        priority=priority,
        lang=check_lang(lang),
        notify=notify,
        text_layer=text_layer or settings.text_layer,
        force=force,
        dry_run=dry_run,
        inline_until_finished=wait,
        **inline_options(settings, inline),
        **archive_options(settings, archive, dry_run=dry_run),
    )
    resolve_args(paths, settings.roots)
    db = open_database(settings.resolved_database_url)
    check_keys(settings, db, err)
    gio = None
    if not dry_run:
        gio = GearmanIO.from_settings(settings)
        require_reachable(gio, settings)
    try:
        result = submit_with_progress(settings, db, gio, paths, opts, err=err, quiet=as_json)
    finally:
        if gio is not None:
            gio.close()
    print_submit_result(result, opts, as_json=as_json, out=out)
    refused = result.not_pdf + result.too_large + result.bad_name + result.refused
    if result.submitted == 0 and refused == result.skipped == 0:
        raise BadInput(
            f"no PDF found in {', '.join(paths)} ({result.ignored} other files ignored): "
            "check the path, or --include/--exclude"
        )
    return int(ExitCode.ok)


def inline_options(settings: Settings, inline: bool) -> dict[str, Any]:
    """SubmitOptions' inline fields (`submit/run --inline`) from the settings."""
    return {
        "inline": inline,
        "max_inline_mb": settings.max_inline_mb,
        "inline_in_flight_mb": settings.inline_in_flight_mb,
        "max_file_mb": settings.max_file_mb,
    }


def archive_options(settings: Settings, archive: Path | None, *, dry_run: bool) -> dict[str, Any]:
    """SubmitOptions' archive field (`submit/run --archive`, IMPORTER_ARCHIVE_DIR), checked
    writable (a dry run records nothing and writes nothing: it is not made)."""
    directory = archive or settings.archive_dir
    if directory is None or dry_run:
        return {}
    return {"archive_dir": check_archive_dir(directory)}


def submit_with_progress(
    settings: Settings,
    db: object,
    gio: GearmanIO | None,
    paths: Sequence[str],
    opts: SubmitOptions,
    *,
    err: Console,
    quiet: bool,
    every: float = PROGRESS_EVERY,
) -> SubmitResult:
    with SubmitDisplay(err, every, quiet=quiet) as progress:
        return submit(
            db,  # type: ignore[arg-type]
            gio,
            settings.keyring(),
            paths,
            opts,
            roots=settings.roots,
            progress=progress,
            notice=lambda text: err.print(text, highlight=False),  # stderr, even with --json
        )


def print_submit_result(
    result: SubmitResult, opts: SubmitOptions, *, as_json: bool, out: Console
) -> None:
    if as_json:
        out.print_json(data=result.as_json())
        return
    if opts.dry_run:
        for path in result.would_submit:
            out.print(printable(path), highlight=False)
        out.print(
            f"dry run: {result.submitted} PDFs would be submitted, {result.skipped} skipped "
            f"(already imported), {result.not_pdf} named .pdf but not PDFs, "
            f"{result.ignored} other files ignored"
            + (f", {result.bad_name} with names not valid UTF-8" if result.bad_name else "")
        )
        return
    out.print(
        Text.assemble(
            "batch ",
            (result.batch_id or "", "bold"),
            f": {result.submitted} documents queued, {result.skipped} skipped (already"
            f" imported), {result.not_pdf} not PDFs (recorded as failed), {result.ignored}"
            f" other files ignored",
            f", {result.too_large} over IMPORTER_MAX_INLINE_MB (recorded as failed)"
            if result.too_large
            else "",
            f", {result.refused} refused unread (a link, not a regular file, or over"
            " IMPORTER_MAX_FILE_MB; recorded as failed)"
            if result.refused
            else "",
            f", {result.bad_name} with names not valid UTF-8 (recorded as failed)"
            if result.bad_name
            else "",
            f"\nfollow it with: importer status {result.batch_id or ''}",
        )
    )


def show_status(
    settings: Settings,
    batch: str | None,
    *,
    as_json: bool,
    out: Console,
    limit: int | None = DOCUMENTS_LIMIT,
    tracker: Tracker | None = None,
) -> bool:
    """Print status once, a batch's first `limit` documents (None: all); returns whether
    everything shown has finished. With a `tracker` (`--watch` on a terminal) the screen
    is cleared first, and each unfinished batch shows its rate, ETA and running documents."""
    db = open_database(settings.resolved_database_url)
    report = overview(db, batch)
    blocks = []
    if batch or tracker is not None:
        gio = GearmanIO.from_settings(settings)
        try:
            if batch:
                report = with_documents(db, report, gio, limit=limit)
            if tracker is not None:
                now = time.monotonic()
                for b in report.batches:
                    if b.finished_at is None:
                        p = read_progress(db, b.id, gio)
                        blocks.append(block(p, tracker.observe(p, now), named=True))
        finally:
            gio.close()
    if as_json:
        # json.dumps, not Rich's print_json, which takes seconds over a thousand documents;
        # ASCII only, so no control character of a file name reaches the terminal
        out.file.write(json.dumps(report.to_json(), indent=2, ensure_ascii=True) + "\n")
        return report.finished
    if tracker is not None:
        out.clear()
    table = Table(title="batches", box=box.SIMPLE_HEAD)
    table.add_column("batch", no_wrap=True)
    for name in ("total", "queued", "running", "done", "failed", "pages"):
        table.add_column(name, justify="right")
    table.add_column("finished", no_wrap=True)
    table.add_column("email", overflow="fold")
    for b in report.batches:
        counts = (b.total, b.queued, b.running, b.done, b.failed, b.pages_done)
        done_at = b.finished_at.strftime("%H:%M:%S") if b.finished_at else "-"
        table.add_row(printable(b.id), *(str(n) for n in counts), done_at, printable(b.email))
    out.print(table)
    for shown in blocks:
        out.print(shown)
    if batch:
        docs = Table(
            "path",
            "job id",
            "status",
            "progress",
            "error",
            title=f"documents of {printable(batch)}",
            box=box.SIMPLE_HEAD,
        )
        for d in report.documents or ():
            num, den = d.progress
            docs.add_row(
                printable(d.path),
                printable(d.job_id),
                d.status.value,
                f"{num}/{den}" if den else "",
                printable(d.error or ""),
            )
        out.print(docs)
        if report.documents_unlisted:
            out.print(f"… and {report.documents_unlisted:,} more; --all for every one")
        _print_review(report, batch, out)
    if report.rejected_jobs:
        out.print(
            f"{report.rejected_jobs} forged or invalid jobs rejected by workers", style="yellow"
        )
    return report.finished


WATCH_SECONDS = 2.0  # `status --watch` redraws (or reads, off a terminal) this often


def watch_status(
    settings: Settings,
    batch: str | None,
    *,
    as_json: bool,
    out: Console,
    err: Console,
    limit: int | None,
    every: float = PROGRESS_EVERY,
) -> None:
    """`status --watch` until everything shown has finished: redrawn on a terminal; any
    other output gets a plain line per unfinished batch every `every` seconds (on stderr
    with --json), then the final status once (with --json, the only thing on stdout)."""
    tracker = Tracker()
    if out.is_terminal and not as_json:
        while not show_status(
            settings, batch, as_json=False, out=out, limit=limit, tracker=tracker
        ):
            time.sleep(WATCH_SECONDS)
        return
    lines = err if as_json else out
    db = open_database(settings.resolved_database_url)
    next_line = time.monotonic() + every
    while True:
        report = overview(db, batch)
        if report.finished:
            break
        now = time.monotonic()
        for b in report.batches:
            if b.finished_at is None:
                p = read_progress(db, b.id, None)
                estimate = tracker.observe(p, now)
                if now >= next_line:
                    lines.print(summary_line(p, estimate), highlight=False, soft_wrap=True)
        if now >= next_line:
            next_line = now + every
        time.sleep(min(WATCH_SECONDS, every))
    show_status(settings, batch, as_json=as_json, out=out, limit=limit)


def _print_review(report: StatusReport, batch: str, out: Console) -> None:
    """The batch's pages marked for review, and the documents that have them."""
    pages = report.batches[0].pages_review if report.batches else None
    if not pages or not report.review:
        return
    documents = report.review_total or len(report.review)
    table = Table(
        "path",
        "job id",
        "pages",
        title=f"{pages} pages need review, in {documents} documents"
        f" (importer export {batch} --review lists them)",
        box=box.SIMPLE_HEAD,
    )
    for r in report.review:
        table.add_row(printable(r.path), printable(r.job_id), str(r.pages_review))
    out.print(table)
    if documents > len(report.review):
        out.print(f"… and {documents - len(report.review):,} more; --all for every one")


def do_retry(settings: Settings, batch: str) -> int:
    db = open_database(settings.resolved_database_url)
    overview(db, batch)  # a clear error for an unknown batch
    gio = GearmanIO.from_settings(settings)
    try:
        return retry_batch(
            db, gio, settings.keyring(), batch, inline_cap_bytes=settings.inline_in_flight_mb << 20
        )
    finally:
        gio.close()


def do_requeue(settings: Settings) -> str:
    db = open_database(settings.resolved_database_url)
    gio = GearmanIO.from_settings(settings)
    try:
        r = requeue_stale(
            db,
            gio,
            settings.keyring(),
            max_attempts=settings.max_attempts,
            inline_cap_bytes=settings.inline_in_flight_mb << 20,
        )
    finally:
        gio.close()
    return (
        f"requeued {r.enqueued}: {r.lease_expired} with an expired lease, {r.never_enqueued} "
        f"never sent, {r.lost_by_gearmand} lost by gearmand; {r.dead} out of attempts (dead)"
    )
