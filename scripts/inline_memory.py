"""Memory of inline payloads: peak RSS of gearmand and of a worker for a batch sent inline.

    .venv/bin/python scripts/inline_memory.py --files 40 --mb 8 --cap-mb 64

Makes FILES PDFs of MB megabytes (a sample PDF with random bytes after its end), starts a
private gearmand and one worker process, runs `importer submit --inline` with
IMPORTER_INLINE_IN_FLIGHT_MB=CAP, and prints the peak resident set (VmHWM) of gearmand,
of the worker process and of the submitter, with the same worker's peak for the same
batch read from shared storage (not inline) as its usual footprint.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from importer.gearman.server import GearmandProcess

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_pdfs" / "born_digital.pdf"


def hwm_mb(pid: int) -> float:
    """Peak resident set of a process, in MB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def make_files(inbox: Path, count: int, size: int) -> None:
    inbox.mkdir(parents=True)
    head = SAMPLE.read_bytes()
    for i in range(count):
        (inbox / f"doc{i:03}.pdf").write_bytes(head + secrets.token_bytes(size - len(head)))


def run_batch(tmp: Path, inbox: Path, cap_mb: int, inline: bool) -> dict[str, float]:
    data = tmp / ("data-inline" if inline else "data-plain")
    gearmand = GearmandProcess(data_dir=data / "gearmand")
    gearmand.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(
        IMPORTER_DATA_DIR=str(data),
        IMPORTER_GEARMAN_SERVERS=gearmand.address,
        IMPORTER_SECRET_KEYS="k1:" + secrets.token_hex(16),
        IMPORTER_ALLOWED_ROOTS=str(inbox),
        IMPORTER_INLINE_IN_FLIGHT_MB=str(cap_mb),
        IMPORTER_MAX_INLINE_MB="64",
    )
    importer = [sys.executable, "-m", "importer"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    extra = ["--inline"] if inline else []
    peaks = {"gearmand": 0.0, "worker": 0.0, "submit": 0.0}
    try:
        worker = subprocess.Popen([*importer, "worker", "--concurrency", "1"], env=env, **quiet)
        submit = subprocess.Popen(
            [*importer, "submit", str(inbox), "--email", "ops@example.com", *extra],
            env=env,
            **quiet,
        )
        started = time.monotonic()
        while True:
            assert gearmand.pid is not None
            peaks["gearmand"] = max(peaks["gearmand"], hwm_mb(gearmand.pid))
            peaks["submit"] = max(peaks["submit"], hwm_mb(submit.pid))
            for pid in children(worker.pid):
                peaks["worker"] = max(peaks["worker"], hwm_mb(pid))
            if submit.poll() is not None and (inline or _done(env)):
                break
            time.sleep(0.05)
        peaks["seconds"] = round(time.monotonic() - started, 1)
        worker.terminate()
        worker.wait(60)
    finally:
        gearmand.stop()
    return {k: round(v, 1) for k, v in peaks.items()}


def _done(env: dict[str, str]) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "importer", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    batches = json.loads(out.stdout)["batches"]
    return bool(batches) and all(b["finished_at"] for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--mb", type=int, default=8)
    parser.add_argument("--cap-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inline-memory-") as name:
        tmp = Path(name)
        inbox = tmp / "inbox"
        make_files(inbox, args.files, args.mb * 2**20)
        inline = run_batch(tmp, inbox, args.cap_mb, inline=True)
        plain = run_batch(tmp, inbox, args.cap_mb, inline=False)
    print(
        json.dumps(
            {
                "files": args.files,
                "file_mb": args.mb,
                "batch_mb": args.files * args.mb,
                "cap_mb": args.cap_mb,
                "inline_peak_mb": inline,
                "shared_storage_peak_mb": plain,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
