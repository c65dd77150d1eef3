"""Which token the dashboard asks for: IMPORTER_DASHBOARD_TOKEN, or one of the data dir's.

Loopback is no boundary between the users of one machine: any of them may connect to
127.0.0.1:8730. So the dashboard always wants a token. Unset, on loopback, one is made
once into the data dir (`dashboard_token`, mode 0600, in the 0700 data dir) and printed
at start inside a login URL, as Jupyter does; beyond loopback the operator must choose
one, to give to whoever may read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from importer.config import Settings, check_ours, make_private_dir
from importer.errors import BadInput, ConfigError
from importer.gearman.address import is_loopback

MIN_TOKEN_CHARACTERS = 16
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
TOKEN_FILE = "dashboard_token"


@dataclass(frozen=True)
class Token:
    value: str
    generated: bool  # the data dir's: shown in the login URL at start


def token_for(settings: Settings, listen: str) -> Token:
    """The token requests must carry; BadInput when the address is beyond loopback and no
    token is set, or the token set is too short."""
    secret = settings.dashboard_token
    token = secret.get_secret_value() if secret is not None else ""
    if not token and not is_loopback(listen):
        raise BadInput(
            f"--listen {listen} is beyond loopback: anyone who reaches it would read every"
            " imported page. Set IMPORTER_DASHBOARD_TOKEN (make one with"
            f" {MAKE_TOKEN}), or listen on 127.0.0.1"
        )
    if not token:
        return Token(generated_token(settings.data_dir), generated=True)
    if len(token) < MIN_TOKEN_CHARACTERS:
        raise BadInput(
            f"IMPORTER_DASHBOARD_TOKEN has {len(token)} characters: use"
            f" {MIN_TOKEN_CHARACTERS} or more (make one with {MAKE_TOKEN})"
        )
    return Token(token, generated=False)


def generated_token(data_dir: Path) -> str:
    """The data dir's token, made on first use (0600; the first of two racing starts wins)."""
    make_private_dir(data_dir)
    path = data_dir / TOKEN_FILE
    check_ours(path)
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink(missing_ok=True)
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARACTERS:
        raise ConfigError(
            f"{path} holds no token of {MIN_TOKEN_CHARACTERS} characters or more: remove it,"
            " and the next start makes a new one"
        )
    return token
