"""The naive submitter the importer's is measured against: one round trip and one committed
row per file. Run as its own process, as `importer submit` is.

Usage: python -m bench_lib.naive_submit DIR SQLITE_DB HOST:PORT   (prints the count)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import gearman

KEY = b"bench-naive-key"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS documents (id INTEGER PRIMARY KEY, path TEXT NOT NULL,"
    " sha256 TEXT NOT NULL, job_id TEXT NOT NULL UNIQUE, status TEXT NOT NULL)"
)


def files(root: Path) -> Iterator[Path]:
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(top, name)


def main(argv: list[str]) -> int:
    root, db_path, server = Path(argv[1]), argv[2], argv[3]
    db = sqlite3.connect(db_path)
    db.execute(SCHEMA)
    db.commit()
    client = gearman.GearmanClient([server])
    count = 0
    for path in files(root):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        job_id = "j-" + secrets.token_hex(12)
        db.execute(
            "INSERT INTO documents (path, sha256, job_id, status) VALUES (?, ?, ?, 'queued')",
            (str(path), digest, job_id),
        )
        db.commit()
        body = json.dumps({"job": job_id, "file": str(path), "email": "bench@example.com"})
        signature = hmac.new(KEY, body.encode(), hashlib.sha256).hexdigest()
        data = json.dumps({"body": body, "sig": signature}).encode()
        client.submit_job(
            b"import", data, unique=job_id.encode(), background=True, wait_until_complete=False
        )
        count += 1
    client.shutdown()
    db.close()
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
