"""Acting as another local user, as the attacks on loopback were made: uid 65534, no group
of ours (`setpriv`, util-linux)."""

from __future__ import annotations

import subprocess

NOBODY_UID = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY_UID}", f"--regid={NOBODY_UID}", "--clear-groups"]
# Debian's interpreter: the test venv may lie where uid 65534 cannot read.
SYSTEM_PYTHON = "/usr/bin/python3"


def as_nobody(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command as uid 65534 and wait for it."""
    return subprocess.run(
        [*AS_NOBODY, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
