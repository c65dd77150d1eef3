"""The `importer` command. Exceptions become exit codes here and nowhere else."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from importer.config import REAPER_SECONDS, Settings, load_settings
from importer.console import SafeConsole, visible
from importer.errors import BadInput, ExitCode, ImporterError
from importer.states import NotifyMode, Priority, TextLayerMode

app = typer.Typer(
    help=(
        "Bulk PDF OCR import on the Gearman job server.\n\n"
        "Start here: `importer run ./pdfs --email you@example.com` does everything on this "
        "machine (a private gearmand, local workers, SQLite, e-mail to a maildir). "
        "For several machines, run `importer gearmand`, `importer worker` and "
        "`importer submit` separately against the same database and gearmand."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
certs_app = typer.Typer(help="Certificates for mutual TLS between gearmand and its clients.")
app.add_typer(certs_app, name="certs")
keys_app = typer.Typer(help="Signing keys for job payloads (IMPORTER_SECRET_KEYS).")
app.add_typer(keys_app, name="keys")
mail_app = typer.Typer(
    help="The outbox: e-mails decided when documents and batches finish, delivered by the"
    " courier of every `importer worker` (and of `importer run`) through IMPORTER_MAIL_URL."
)
app.add_typer(mail_app, name="mail")

# Piped output gets room for its tables instead of 80 squeezed columns.
# File names, reasons and snippets come from outside: printed as they are (importer.console).
out = SafeConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = SafeConsole(stderr=True, soft_wrap=True)

Paths = Annotated[list[str], typer.Argument(help="Files or directories of PDFs.")]
Email = Annotated[str, typer.Option("--email", help="Who gets the summary e-mail.")]
Lang = Annotated[str, typer.Option("--lang", help="Tesseract languages, e.g. eng+deu.")]
NoRecursive = Annotated[bool, typer.Option("--no-recursive", help="Only the top level.")]
Include = Annotated[
    list[str] | None,
    typer.Option("--include", help="Only names matching this glob (repeatable)."),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="Skip names matching this glob (repeatable)."),
]
Notify = Annotated[
    NotifyMode, typer.Option("--notify", help="One e-mail per batch, per document, or none.")
]
Force = Annotated[bool, typer.Option("--force", help="Import again files already imported.")]
Inline = Annotated[
    bool,
    typer.Option(
        "--inline",
        help="Send each file's bytes inside its job, for workers that cannot see this disk"
        " (files up to IMPORTER_MAX_INLINE_MB). submit returns once every job is on gearmand;"
        " a batch over IMPORTER_INLINE_IN_FLIGHT_MB keeps it until the rest is sent.",
    ),
]
Archive = Annotated[
    Path | None,
    typer.Option(
        "--archive",
        help="Also write each document's searchable PDF (its pages, with an invisible text"
        " layer on those OCRed) under DIR, named by its path under PATH (by its sha256 with"
        " --inline). Default: IMPORTER_ARCHIVE_DIR, else none.",
        metavar="DIR",
        show_default=False,
    ),
]
TextLayer = Annotated[
    TextLayerMode | None,
    typer.Option(
        "--text-layer",
        help="auto: keep each page's real text layer, OCR pages without one (a scan, a page"
        " whose fonts map to no characters, a scan with a stamped line); ocr: OCR every page,"
        " to redo a bad earlier OCR; keep: never OCR a page that has any text."
        " Default: IMPORTER_TEXT_LAYER, else auto.",
        show_default=False,
    ),
]

ProgressEvery = Annotated[
    float,
    typer.Option(
        "--progress-every",
        min=0.1,
        metavar="SECONDS",
        help="When output is not a terminal: a plain progress line every SECONDS.",
    ),
]


def _settings() -> Settings:
    return load_settings()


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
) -> None:
    _setup_logging(verbose)


@app.command()
def submit(
    paths: Paths,
    email: Email,
    no_recursive: NoRecursive = False,
    include: Include = None,
    exclude: Exclude = None,
    priority: Annotated[Priority, typer.Option("--priority")] = Priority.normal,
    lang: Lang = "eng",
    notify: Notify = NotifyMode.batch,
    text_layer: TextLayer = None,
    archive: Archive = None,
    force: Force = False,
    inline: Inline = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="With --inline: stay until the batch has finished, sending again from here"
            " what comes back (a failed attempt, a worker that died).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be submitted.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {batch_id, submitted, skipped}.")
    ] = False,
) -> None:
    """Walk PATHs, record a batch, and queue one OCR job per PDF on gearmand."""
    from importer.commands import do_submit

    code = do_submit(
        _settings(),
        paths,
        email,
        recursive=not no_recursive,
        include=include or [],
        exclude=exclude or [],
        priority=priority,
        lang=lang,
        notify=notify,
        text_layer=text_layer,
        archive=archive,
        force=force,
        inline=inline,
        wait=wait,
        dry_run=dry_run,
        as_json=as_json,
        out=out,
        err=err,
    )
    raise typer.Exit(code)


@app.command()
def watch(
    dirs: Annotated[list[str], typer.Argument(help="Folders that PDFs are dropped into.")],
    email: Email,
    settle: Annotated[
        float,
        typer.Option(
            "--settle",
            min=0,
            metavar="SECONDS",
            help="A file is taken once its size and modification time have not changed for"
            " SECONDS and, if it starts as a PDF, its end (%%EOF) is there: a scan still"
            " being written is not read.",
        ),
    ] = 5.0,
    poll: Annotated[
        float | None,
        typer.Option(
            "--poll",
            min=0.1,
            metavar="SECONDS",
            help="Look every SECONDS instead of listening to inotify. Chosen by itself (every"
            " 30 s) for a folder on NFS, SMB/CIFS, sshfs or another network or FUSE file"
            " system, where inotify does not see files written by other hosts.",
            show_default=False,
        ),
    ] = None,
    batch_every: Annotated[
        float,
        typer.Option(
            "--batch-every",
            min=0,
            metavar="MINUTES",
            help="Close the batch MINUTES after it opened: each batch gets its one e-mail"
            " when its documents are done, and the next file opens a new one (0: a batch"
            " per pass).",
        ),
    ] = 60.0,
    batch_files: Annotated[
        int | None,
        typer.Option(
            "--batch-files",
            min=1,
            metavar="N",
            help="Also close the batch once it holds N documents.",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One pass, then exit (for cron): files still changing are left for the"
            " next run; the batch stays open across runs until --batch-every.",
        ),
    ] = False,
    no_recursive: NoRecursive = False,
    include: Include = None,
    exclude: Exclude = None,
    lang: Lang = "eng",
    notify: Notify = NotifyMode.batch,
    text_layer: TextLayer = None,
) -> None:
    """Import PDFs dropped into folders (a scanner's share) without a command for each.

    Skipped as by submit: files already imported (the same sha256), --include/--exclude.

    The same links and IMPORTER_ALLOWED_ROOTS as submit: files are read only under DIRs.

    Its decisions are in the database: restarted, it sends no file twice, misses none.

    Progress and every skip are logged to stderr.

    Example, a batch a day: importer watch /srv/scans --email office@example.com
    --batch-every 1440

    From cron, every 10 minutes: importer watch /srv/scans --email office@example.com --once"""
    from importer.commands import inline_options
    from importer.languages import check_lang
    from importer.notify import validate_address
    from importer.submit import SubmitOptions
    from importer.watch.command import WatchOptions, do_watch

    settings = _settings()
    logging.getLogger("importer").setLevel(
        min(logging.getLogger().getEffectiveLevel(), logging.INFO)
    )
    opts = WatchOptions(
        submit=SubmitOptions(
            email=validate_address(email),
            recursive=not no_recursive,
            include=include or [],
            exclude=exclude or [],
            lang=check_lang(lang),
            notify=notify,
            text_layer=text_layer or settings.text_layer,
            **inline_options(settings, False),
        ),
        settle=settle,
        poll=poll,
        batch_every=batch_every,
        batch_files=batch_files,
        once=once,
    )
    raise typer.Exit(do_watch(settings, dirs, opts, err=err))


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Worker processes.")
    ] = 1,
    burst: Annotated[bool, typer.Option("--burst", help="Exit 0 once the queue is empty.")] = False,
    max_jobs: Annotated[
        int | None, typer.Option("--max-jobs", min=1, help="Each process exits after N jobs.")
    ] = None,
    reaper_interval: Annotated[
        float,
        typer.Option(
            "--reaper-interval", min=1.0, help="Seconds between passes that requeue stale work."
        ),
    ] = REAPER_SECONDS,
    allow_any_path: Annotated[
        bool,
        typer.Option(
            "--allow-any-path",
            help="Read any path the database names, without IMPORTER_ALLOWED_ROOTS.",
        ),
    ] = False,
) -> None:
    """Run OCR workers: take `import` jobs from every configured gearmand.

    Workers read only files under IMPORTER_ALLOWED_ROOTS (the directories imports come
    from, ':'-separated); without it they refuse to start unless --allow-any-path."""
    from workers.supervisor import Supervisor, WorkerOptions, install_supervisor_signals

    settings = _settings()
    if not settings.roots and not allow_any_path:
        raise BadInput(
            "IMPORTER_ALLOWED_ROOTS is not set: a worker would read any path the database"
            " names. Set it to the directories imports come from (':'-separated, the same as"
            " on the submitting host), or pass --allow-any-path"
        )
    _check_database(settings)
    sup = Supervisor(
        settings,
        WorkerOptions(
            concurrency=concurrency,
            burst=burst,
            max_jobs=max_jobs,
            reaper_interval=reaper_interval,
            log_level=min(logging.getLogger().getEffectiveLevel(), logging.INFO),
        ),
    )
    install_supervisor_signals(sup)
    err.print(f"importer worker: {concurrency} process(es) on {settings.gearman_servers}")
    raise typer.Exit(sup.run())


@app.command()
def run(
    paths: Paths,
    email: Email,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Worker processes (default: cores).")
    ] = os.cpu_count() or 1,
    lang: Lang = "eng",
    notify: Notify = NotifyMode.batch,
    text_layer: TextLayer = None,
    archive: Archive = None,
    force: Force = False,
    inline: Inline = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final status as JSON.")
    ] = False,
    progress_every: ProgressEvery = 10.0,
) -> None:
    """Everything on this machine: gearmand (private if none), workers, submit, wait, summary."""
    from importer.run import run_all

    raise typer.Exit(
        run_all(
            _settings(),
            paths,
            email,
            workers=workers,
            lang=lang,
            notify=notify,
            text_layer=text_layer,
            archive=archive,
            force=force,
            inline=inline,
            as_json=as_json,
            out=out,
            err=err,
            progress_every=progress_every,
        )
    )


@app.command()
def status(
    batch: Annotated[str | None, typer.Argument(help="A batch id: show its documents.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Until finished: redraw every 2 s with rates, ETA and running documents"
            " (off a terminal, a line every --progress-every seconds, then the final status).",
        ),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="With a BATCH: show its first N documents (1,000)."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="With a BATCH: show every one of its documents.")
    ] = False,
    progress_every: ProgressEvery = 10.0,
) -> None:
    """How far batches (or one batch's documents) have got."""
    from importer.commands import show_status, watch_status
    from importer.status import DOCUMENTS_LIMIT

    if every and limit is not None:
        raise BadInput("--limit and --all exclude each other: give one of them")
    settings = _settings()
    shown = None if every else limit or DOCUMENTS_LIMIT
    if watch:
        watch_status(
            settings, batch, as_json=as_json, out=out, err=err, limit=shown, every=progress_every
        )
    else:
        show_status(settings, batch, as_json=as_json, out=out, limit=shown)


@app.command()
def export(
    batch: Annotated[str | None, typer.Argument(help="Only this batch.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl, csv or txt.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
    review: Annotated[
        bool,
        typer.Option(
            "--review",
            help="The pages that need review instead (batch_id, job_id, path, page, confidence).",
        ),
    ] = False,
) -> None:
    """Write imported text: jsonl (batch_id, path, sha256, status, pages, text, error, job_id)."""
    from importer.db.engine import open_database
    from importer.export import write
    from importer.review import write as write_review

    if fmt not in ("jsonl", "csv", "txt"):
        raise ImporterError(f"--format {fmt!r}: use jsonl, csv or txt")
    db = open_database(_settings().resolved_database_url)
    writer = write_review if review else write
    if output:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            n = writer(db, handle, fmt, batch)
        err.print(f"{n} {'pages' if review else 'documents'} written to {output}")
    else:
        writer(db, sys.stdout, fmt, batch)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help='Words and "quoted phrases"; every one must match.')],
    batch: Annotated[str | None, typer.Option("--batch", help="Only this batch.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most N pages.")] = 20,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a list of {path, batch_id, document_id, page, rank, snippet, matches}.",
        ),
    ] = False,
) -> None:
    """Full-text search over imported pages, best match first (among the first 1,000 found).

    Every word must be on the page: importer search invoice 2023

    "Quoted phrases" match side by side, in order: importer search '"annual report" 2022'

    Case and accents do not matter: muller finds Müller.

    Nothing else is syntax: * - : ( ) OR NOT are words or spaces."""
    from importer.db.engine import open_database
    from importer.search import search as find
    from importer.search_terminal import show

    db = open_database(_settings().resolved_database_url)
    show(find(db, query, batch_id=batch, limit=limit), query, out, as_json=as_json)


@app.command()
def retry(batch: str) -> None:
    """Queue a batch's failed and dead documents again, with fresh attempts."""
    from importer.commands import do_retry

    n = do_retry(_settings(), batch)
    out.print(f"{n} documents of batch {batch} queued again")


@app.command()
def requeue(
    stale: Annotated[
        bool, typer.Option("--stale", help="Expired leases, never-sent and lost jobs.")
    ] = False,
) -> None:
    """Recover work gearmand lost or a dead worker held (the reaper, once)."""
    from importer.commands import do_requeue

    if not stale:
        raise ImporterError("say what to requeue: `importer requeue --stale`")
    out.print(do_requeue(_settings()))


@app.command()
def doctor(
    lang: Annotated[str, typer.Option("--lang", help="Languages that must be installed.")] = "eng",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check tools, services, languages and exposure.

    Exits 0 when every check passes (warnings included), 1 when a check fails or finds
    exposure (doctor's own meaning of 1), 2 for a bad --lang or setting."""
    from importer.doctor import run_doctor

    raise typer.Exit(run_doctor(_settings(), lang=lang, as_json=as_json, out=out))


@app.command()
def dashboard(
    listen: Annotated[
        str,
        typer.Option(
            "--listen", help="Address to listen on; beyond loopback IMPORTER_DASHBOARD_TOKEN."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8730,
    tls_cert: Annotated[
        Path | None,
        typer.Option("--tls-cert", help="Serve https with this certificate (with --tls-key)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The key of --tls-cert.")
    ] = None,
) -> None:
    """Read-only web UI: batches with live progress, failures, gearmand, search, /metrics."""
    from importer.dashboard.serve import serve, tls_files

    tls = tls_files(tls_cert, tls_key)
    raise typer.Exit(serve(_settings(), listen, port, err=err, tls=tls))


@app.command()
def gearmand(
    listen: Annotated[str, typer.Option("--listen", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 4730,
    tls: Annotated[bool, typer.Option("--tls", help="Mutual TLS in front (stunnel).")] = False,
    certs: Annotated[
        Path | None, typer.Option("--certs", help="Directory from `importer certs init`.")
    ] = None,
    insecure_listen: Annotated[
        bool,
        typer.Option(
            "--insecure-listen-anywhere",
            help="Allow a non-loopback address without TLS (private container networks only).",
        ),
    ] = False,
) -> None:
    """Run gearmand in the foreground: loopback, capped retries, a persistent queue."""
    settings = _settings()
    if tls:
        from importer.gearman.foreground import run_tls_foreground

        if certs is None:
            raise ImporterError(
                "--tls needs --certs DIR (create one with `importer certs init DIR`)"
            )
        err.print(f"importer gearmand: mutual TLS on {listen}:{port} (certificates in {certs})")
        raise typer.Exit(run_tls_foreground(settings, certs, listen, port))
    from importer.gearman.address import is_loopback

    if not is_loopback(listen) and not insecure_listen:
        raise ImporterError(
            f"--listen {listen} without --tls would let anyone who reaches port {port} submit jobs "
            "and read the queue: add --tls --certs DIR (see SECURITY.md)"
        )
    from importer.gearman.foreground import run_foreground

    err.print(f"importer gearmand: {listen}:{port}, queue and log in {settings.data_dir}")
    raise typer.Exit(run_foreground(settings, listen, port))


@certs_app.command("init")
def certs_init(
    directory: Path,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Extra name or IP for the server certificate."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing CA.")] = False,
) -> None:
    """Create a private CA, a server certificate and a client certificate in DIRECTORY."""
    from importer.certs import init_ca_dir

    paths = init_ca_dir(directory, hosts=host or [], force=force)
    out.print(f"certificates written to {directory}: {paths}")


@certs_app.command("client")
def certs_client(directory: Path, name: str) -> None:
    """Issue another client certificate NAME.pem / NAME.key from the CA in DIRECTORY."""
    from importer.certs import issue_client

    pem, key = issue_client(directory, name)
    out.print(f"client certificate {pem}, key {key}")


@keys_app.command("new")
def keys_new() -> None:
    """Print a new random kid:secret. Give the same IMPORTER_SECRET_KEYS to every host;
    to rotate, put the new key first (knew:…,kold:…) everywhere, then drop the old one
    once no job signed with it is queued."""
    from importer.keyring import new_key

    out.print(new_key(), highlight=False)


@mail_app.command("flush")
def mail_flush(
    batch: Annotated[
        str | None, typer.Argument(help="Only this batch's e-mails (default: all).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print {"tried", "delivered", "server_down", "outbox": {"delivered",'
            ' "waiting", "untried", "reason"}}.',
        ),
    ] = False,
) -> None:
    """Deliver every e-mail waiting in the outbox now, without waiting out its backoff.

    Use it after `importer run` said e-mails are waiting (the mail server did not answer
    or refused them), once the server is fixed. Each try is bounded by
    IMPORTER_MAIL_DEADLINE_SECONDS; the flush stops at a server that does not answer.
    An e-mail a worker's courier is sending right now is left to it: none goes twice.
    Exit 0: nothing left waiting; 1: some refused (the reason is printed); 3: the mail
    server did not answer.
    """
    from importer.db.engine import open_database
    from importer.mail_flush import flush
    from importer.outbox_report import flush_lines

    settings = _settings()
    flushed = flush(settings, open_database(settings.resolved_database_url), batch)
    if as_json:
        out.print_json(data=flushed.to_json())
    else:
        for line in flush_lines(flushed, settings.resolved_mail_url):
            out.print(line, highlight=False)
    raise typer.Exit(int(flushed.exit_code))


@app.command()
def config(
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"IMPORTER_…": {"value", "source"}}.')
    ] = False,
) -> None:
    """The effective configuration and where each value came from (environment, the file
    IMPORTER_CONFIG names, or default), secrets masked."""
    from importer.config_report import config_report, config_table

    report = config_report(_settings())
    if as_json:
        out.print_json(data=report)
    else:
        out.print(config_table(report))


def _check_database(settings: Settings) -> None:
    """The database is reachable and current, and this host holds the fleet's keys."""
    from importer.commands import check_keys
    from importer.db.engine import open_database

    db = open_database(settings.resolved_database_url)
    try:
        check_keys(settings, db, err)
    finally:
        db.engine.dispose()


def main() -> None:
    # The data dir holds every page's text, signed payloads and keys: whatever the
    # importer (and the gearmand it starts) creates is for its own user only.
    os.umask(0o077)
    try:
        code = app(standalone_mode=False)
    except ImporterError as e:
        err.print(Text.assemble(("error:", "bold red"), " ", visible(e.message)), highlight=False)
        sys.exit(int(e.exit_code))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:
        # Usage errors: typer's (vendored) click exceptions all carry show() and exit_code.
        show = getattr(e, "show", None)
        if callable(show) and isinstance(getattr(e, "exit_code", None), int):
            show()
            sys.exit(int(ExitCode.bad_input))
        raise
    sys.exit(code if isinstance(code, int) else 0)
