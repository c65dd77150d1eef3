"""The mail section: `importer run` with a maildir against the same run with a mail server
that accepts connections and never answers (issue 19: the run held for minutes).

Eight documents, one e-mail each (`--notify each`): the scanned letter of sample_pdfs/,
OCR'd (a page in about a second), or with `--quick` the born-digital sample. The silent
server is a socket in this process; the ratio of the medians is the goal (≤ 2).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from bench_lib.contenders import fresh_dir, timed_run
from bench_lib.corpus import Doc
from bench_lib.machine import ROOT
from bench_lib.procs import BenchError
from bench_lib.results import SectionResult, ratio_goal, row
from bench_lib.rounds import Series

DOCUMENTS = 8


@contextlib.contextmanager
def silent_smtp() -> Iterator[int]:
    """A port that accepts connections and says nothing, for as long as the block runs."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        for sock in held:
            sock.close()


def _corpus(work: Path, quick: bool) -> list[Doc]:
    sample = ROOT / "sample_pdfs" / ("born_digital.pdf" if quick else "scanned_letter.pdf")
    folder = fresh_dir(work / "mail-corpus")
    docs = []
    for number in range(DOCUMENTS):
        path = folder / f"letter-{number}.pdf"
        path.write_bytes(sample.read_bytes() + f"\n%{number}\n".encode())
        docs.append(Doc(path, 1, ""))
    return docs


def mail_section(work: Path, rounds: int, workers: int, quick: bool) -> SectionResult:
    docs = _corpus(work, quick)
    folder = docs[0].path.parent
    maildir, silent = Series("run, maildir"), Series("run, silent SMTP server")
    with silent_smtp() as port:
        for _ in range(rounds):
            for series, env in (
                (maildir, {}),
                (silent, {"IMPORTER_MAIL_URL": f"smtp://127.0.0.1:{port}"}),
            ):
                data = fresh_dir(work / "runs" / "mail-data")
                seconds, summary, _ = timed_run(
                    folder, docs, data, workers, ("--notify", "each"), env
                )
                mail = summary["mail"]
                if series is silent and mail["delivered"]:
                    raise BenchError(f"a silent server cannot have been delivered to: {mail}")
                if series is maildir and mail["waiting"]:
                    raise BenchError(f"the maildir run left e-mail waiting: {mail}")
                series.seconds.append(seconds)
    ratio = silent.median / maildir.median
    result = SectionResult()
    for series in (maildir, silent):
        result.rows.append(row("mail", series, f"{DOCUMENTS} e-mails", ""))
    result.goals.append(
        ratio_goal("run with a silent mail server / with a maildir", ratio, 2.0, at_most=True)
    )
    result.notes.append(
        f"mail: {DOCUMENTS} documents, --notify each, {workers} workers,"
        f" IMPORTER_MAIL_DEADLINE_SECONDS at its default; silent/maildir = {ratio:.2f}"
    )
    return result
