"""The bodies of `submit`, `status`, `retry` and `requeue`: collaborators built here, once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from importer.config import Settings
from importer.db.engine import Database, open_database
from importer.errors import BadInput, ExitCode, GearmanUnavailable
from importer.gearman.client import GearmanIO
from importer.keyring import check_fleet_keys
from importer.languages import check_lang
from importer.notify import validate_address
from importer.requeue import requeue_stale, retry_batch
from importer.states import NotifyMode, Priority, TextLayerMode
from importer.status import DOCUMENTS_LIMIT, overview, with_documents
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
    inline: bool = False,
) -> int:
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
        **inline_options(settings, inline),
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
    if result.submitted == 0 and result.not_pdf == result.too_large == result.skipped == 0:
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
    }


def submit_with_progress(
    settings: Settings,
    db: object,
    gio: GearmanIO | None,
    paths: Sequence[str],
    opts: SubmitOptions,
    *,
    err: Console,
    quiet: bool,
) -> SubmitResult:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[seen]} files seen, {task.fields[sent]} queued"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=quiet,
    ) as bar:
        task = bar.add_task("submitting", seen=0, sent=0)
        return submit(
            db,  # type: ignore[arg-type]
            gio,
            settings.keyring(),
            paths,
            opts,
            roots=settings.roots,
            progress=lambda seen, sent: bar.update(task, seen=seen, sent=sent),
        )


def print_submit_result(
    result: SubmitResult, opts: SubmitOptions, *, as_json: bool, out: Console
) -> None:
    if as_json:
        out.print_json(data=result.as_json())
        return
    if opts.dry_run:
        for path in result.would_submit:
            out.print(path, highlight=False)
        out.print(
            f"dry run: {result.submitted} PDFs would be submitted, {result.skipped} skipped "
            f"(already imported), {result.not_pdf} named .pdf but not PDFs, "
            f"{result.ignored} other files ignored"
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
            f"\nfollow it with: importer status {result.batch_id or ''}",
        )
    )


def show_status(
    settings: Settings,
    batch: str | None,
    *,
    as_json: bool,
    out: Console,
    clear: bool = False,
    limit: int | None = DOCUMENTS_LIMIT,
) -> bool:
    """Print status once, a batch's first `limit` documents (None: all); returns whether
    everything shown has finished."""
    db = open_database(settings.resolved_database_url)
    report = overview(db, batch)
    if batch:
        gio = GearmanIO.from_settings(settings)
        try:
            report = with_documents(db, report, gio, limit=limit)
        finally:
            gio.close()
    if as_json:
        # json.dumps, not Rich's print_json, which takes seconds over a thousand documents;
        # ASCII only, so no control character of a file name reaches the terminal
        out.file.write(json.dumps(report.to_json(), indent=2, ensure_ascii=True) + "\n")
        return report.finished
    if clear:
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
        table.add_row(b.id, *(str(n) for n in counts), done_at, b.email)
    out.print(table)
    if batch:
        docs = Table(
            "path",
            "job id",
            "status",
            "progress",
            "error",
            title=f"documents of {batch}",
            box=box.SIMPLE_HEAD,
        )
        for d in report.documents or ():
            num, den = d.progress
            docs.add_row(
                d.path, d.job_id, d.status.value, f"{num}/{den}" if den else "", d.error or ""
            )
        out.print(docs)
        if report.documents_unlisted:
            out.print(f"… and {report.documents_unlisted:,} more; --all for every one")
    if report.rejected_jobs:
        out.print(
            f"{report.rejected_jobs} forged or invalid jobs rejected by workers", style="yellow"
        )
    return report.finished


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
