"""Time and memory of sealing and opening one inline job of IMPORTER_MAX_INLINE_MB.

    .venv/bin/python scripts/payload_seal_time.py --mb 64

Prints the seconds `payload.encode` and `payload.decode_job` take for MB megabytes of
random content, and how far each raises this process's peak resident set (VmHWM) above
what the content itself holds.
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path

from importer import payload


def hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    args = parser.parse_args()
    ring = [("k1", secrets.token_bytes(32))]
    content = secrets.token_bytes(args.mb * 2**20)
    reset_hwm()
    base = hwm_mb()
    started = time.perf_counter()
    data = payload.encode("j-1", "/in/a.pdf", "ops@example.com", keyring=ring, content=content)
    sealed = time.perf_counter() - started
    seal_peak = hwm_mb() - base
    del content
    reset_hwm()
    base = hwm_mb()
    started = time.perf_counter()
    job = payload.decode_job(data, keyring=ring, ttl_seconds=60)
    opened = time.perf_counter() - started
    open_peak = hwm_mb() - base
    assert job.content is not None and len(job.content) == args.mb * 2**20
    print(f"encode {sealed:.3f} s, peak +{seal_peak:.0f} MB over the content")
    print(f"decode_job {opened:.3f} s, peak +{open_peak:.0f} MB over the job's data")


if __name__ == "__main__":
    main()
