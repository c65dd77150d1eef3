"""`importer run`: the whole pipeline on one machine, started and stopped by one command."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from importer.commands import check_lang, print_submit_result, submit_with_progress
from importer.config import Settings
from importer.db.engine import Database, open_database
from importer.errors import ExitCode, GearmanUnavailable
from importer.gearman_io import GearmanIO
from importer.gearmand import GearmandProcess, free_port
from importer.notify import validate_address
from importer.outbox import deliver_pending
from importer.states import NotifyMode, TextLayerMode
from importer.status import documents, overview, unfinished
from importer.submit import SubmitOptions
from workers.supervisor import Supervisor, WorkerOptions

log = logging.getLogger(__name__)


def _gearmand_for(settings: Settings, stack: ExitStack, err: Console) -> Settings:
    """Use the configured gearmand if it answers; otherwise start a private one on loopback."""
    gio = GearmanIO.from_settings(settings)
    try:
        reachable = any(h.reachable for h in gio.ping())
    finally:
        gio.close()
    if reachable:
        return settings
    if settings.gearman_servers_explicit:
        raise GearmanUnavailable(
            f"IMPORTER_GEARMAN_SERVERS={settings.gearman_servers} does not answer: start it "
            "(`importer gearmand`), or unset the variable to let `run` start a private one"
        )
    proc = GearmandProcess(
        data_dir=settings.data_dir.resolve(),
        port=free_port(),
        job_retries=settings.gearmand_job_retries,
    )
    proc.start()
    stack.callback(proc.stop)
    proc.wait_ready()
    err.print(f"started a private gearmand on {proc.address} (queue in {settings.data_dir})")
    return settings.model_copy(update={"gearman_servers": proc.address})


def _roots_for(settings: Settings, paths: Sequence[str]) -> Settings:
    if settings.allowed_roots:
        return settings
    roots = []
    for raw in paths:
        p = Path(raw).resolve()
        roots.append(str(p if p.is_dir() else p.parent))
    return settings.model_copy(update={"allowed_roots": ":".join(roots)})


def _wait(db: Database, batch_id: str, total: int, err: Console, quiet: bool) -> None:
    with Progress(
        TextColumn("[bold]OCR[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("documents, {task.fields[pages]} pages"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task("ocr", total=total, pages=0)
        while True:
            b = overview(db, batch_id)["batches"][0]
            bar.update(task, completed=b["done"] + b["failed"], pages=b["pages_done"])
            if unfinished(db, batch_id) == 0:
                return
            time.sleep(0.1)


def run_all(
    settings: Settings,
    paths: Sequence[str],
    email: str,
    *,
    workers: int,
    lang: str,
    notify: NotifyMode,
    force: bool,
    as_json: bool,
    out: Console,
    err: Console,
    text_layer: TextLayerMode | None = None,
) -> int:
    opts = SubmitOptions(
        email=validate_address(email),
        lang=check_lang(lang),
        notify=notify,
        force=force,
        text_layer=text_layer or settings.text_layer,
    )
    for raw in paths:
        if not Path(raw).exists():
            from importer.errors import BadInput

            raise BadInput(f"{raw}: no such file or directory")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = _roots_for(settings, paths)
    settings.keyring()  # generate keys once, before workers race for them
    db = open_database(settings.resolved_database_url)
    started = time.monotonic()
    with ExitStack() as stack:
        settings = _gearmand_for(settings, stack, err)
        sup = Supervisor(
            settings,
            WorkerOptions(
                concurrency=workers,
                reaper_interval=5.0,
                log_level=min(logging.getLogger().getEffectiveLevel(), logging.WARNING),
            ),
        )
        sup.start()  # forked here, before any other thread exists
        thread = threading.Thread(target=sup.run, name="supervisor", daemon=True)
        thread.start()

        def stop_workers() -> None:
            sup.stopping.set()
            thread.join(120)

        stack.callback(stop_workers)
        gio = GearmanIO.from_settings(settings)
        stack.callback(gio.close)
        result = submit_with_progress(settings, db, gio, paths, opts, err=err, quiet=as_json)
        if not as_json:
            print_submit_result(result, opts, as_json=False, out=out)
        if result.batch_id is None:
            out.print("nothing to import")
            return int(ExitCode.ok)
        _wait(db, result.batch_id, result.submitted + result.not_pdf, err, quiet=as_json)
        deliver_pending(db, mail_url=settings.resolved_mail_url, mail_from=settings.mail_from)
    batch = overview(db, result.batch_id)["batches"][0]
    elapsed = time.monotonic() - started
    if as_json:
        out.print_json(json.dumps({**batch, "seconds": round(elapsed, 2)}))
    else:
        _print_summary(settings, batch, elapsed, out)
        for doc in documents(db, result.batch_id, None):
            if doc["status"] in ("failed", "dead"):
                out.print(f"  {doc['status']}: {doc['path']}: {doc['error']}", highlight=False)
    return int(ExitCode.ok if batch["failed"] == 0 else ExitCode.some_failed)


def _print_summary(
    settings: Settings, batch: dict[str, object], elapsed: float, out: Console
) -> None:
    out.print(
        f"\n[bold]batch {batch['id']}[/]: {batch['done']} of {batch['total']} documents imported, "
        f"{batch['pages_done']} pages, {batch['failed']} failed, in {elapsed:.1f} s"
    )
    out.print(f"details:  importer status {batch['id']}")
    out.print(
        f"text:     importer export {batch['id']} --format jsonl   (database: "
        f"{settings.resolved_database_url})"
    )
    mail = settings.resolved_mail_url
    if mail.startswith("maildir://"):
        out.print(f"e-mail:   delivered to the maildir {mail.removeprefix('maildir://')}/new/")
    else:
        out.print(f"e-mail:   sent through {mail.split('@')[-1]}")
