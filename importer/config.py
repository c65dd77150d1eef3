"""Settings: IMPORTER_* environment variables, or the same keys in importer.toml.

Nothing is read at import time; `load_settings()` is called by the CLI's commands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from importer.errors import ConfigError
from importer.gearman.address import is_loopback, split_address
from importer.states import TextLayerMode

log = logging.getLogger(__name__)

ENV_PREFIX = "IMPORTER_"
MIN_SECRET_BYTES = 32
# Seconds between the reaper's passes (`importer worker --reaper-interval`): each pass requeues
# expired leases, jobs gearmand lost, and documents due for another attempt. A cut-off
# host's document runs again within a lease (60 s) and one interval: inside 90 s.
REAPER_SECONDS = 10.0


class Settings(BaseSettings):
    """Every key, with the default that the embedded setup runs on."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    data_dir: Path = Path("./importer-data")
    database_url: str = ""  # default: sqlite:///<data_dir>/importer.db
    gearman_servers: str = "127.0.0.1:4730"
    mail_url: str = ""  # default: maildir://<data_dir>/mail
    mail_from: str = "importer@localhost"
    # The longest one try at delivering an e-mail may wait on the mail server (every SMTP
    # step, and all of them together); also how long `importer run` waits for its e-mail
    # once its documents are done. What is not delivered by then waits in the outbox.
    mail_deadline_seconds: float = Field(default=10.0, gt=0, le=3600)
    secret_keys: str = ""  # "kid:secret,..." newest first; generated when unset
    allowed_roots: str = ""  # ":"-separated; empty means "the paths given to submit"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    # Limits and timing (see README, "Configuration").
    job_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    page_timeout_seconds: float = Field(default=120.0, gt=0)
    document_timeout_seconds: float = Field(default=3600.0, gt=0)
    max_file_mb: int = Field(default=512, gt=0)
    max_pages: int = Field(default=5000, gt=0)
    max_page_megapixels: float = Field(default=200.0, gt=0)
    child_memory_mb: int = Field(default=4096, gt=0)
    child_cpu_seconds: int = Field(default=3600, gt=0)
    max_attempts: int = Field(default=3, gt=0)
    lease_seconds: int = Field(default=60, gt=0)  # renewed every quarter of it
    gearmand_job_retries: int = Field(default=3, gt=0)
    ocr_dpi: int = Field(default=300, ge=72, le=600)
    text_layer: TextLayerMode = TextLayerMode.auto  # the default of submit/run --text-layer
    archive_dir: Path | None = None  # the default of submit/run --archive: searchable PDFs
    child_user: str = "nobody"  # whom PDF-reading children run as when workers run as root
    # Workers serve without the document walls this host refuses (SECURITY.md): a failure
    # that `importer doctor` and /metrics report; without it such a worker refuses to start.
    weak_isolation: bool = False
    max_inline_mb: int = Field(default=64, gt=0)  # largest file submit --inline sends in a job
    # Bytes of inline jobs on gearmand (queued or running) at once: gearmand holds every
    # queued job's data in memory, and a worker several copies of the job it runs.
    inline_in_flight_mb: int = Field(default=256, gt=0)
    # Pages OCR read with a mean word confidence below this (0-100) are marked for review.
    review_confidence: float = Field(default=60.0, ge=0, le=100)
    # required by `importer dashboard` beyond loopback; when set, required on loopback too
    dashboard_token: SecretStr | None = None

    @field_validator("gearman_servers")
    @classmethod
    def _servers_parse(cls, value: str) -> str:
        for item in _split(value, ","):
            split_address(item, default_port=None)  # raises ValueError, naming the entry
        if not _split(value, ","):
            raise ValueError("no server given (example: 127.0.0.1:4730)")
        return value

    @field_validator("secret_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        kids = [item.partition(":")[0] for item in _split(value, ",")]
        if value.strip() and not kids:
            raise ValueError("no key given (make one with: importer keys new)")
        if len(set(kids)) != len(kids):
            raise ValueError("each key id may appear once (kid:secret,kid2:secret2)")
        for item in _split(value, ","):
            kid, sep, secret = item.partition(":")
            if not sep or not kid or len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"each key is kid:secret with a secret of {MIN_SECRET_BYTES} bytes or more"
                    " (make one with: importer keys new)"
                )
        return value

    # Derived values -----------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'importer.db').resolve()}"

    @property
    def resolved_mail_url(self) -> str:
        if self.mail_url:
            return self.mail_url
        return f"maildir://{(self.data_dir / 'mail').resolve()}"

    @property
    def servers(self) -> list[tuple[str, int]]:
        entries = _split(self.gearman_servers, ",")
        return [split_address(entry, default_port=None) for entry in entries]

    @property
    def gearman_servers_explicit(self) -> bool:
        """Whether the operator named gearmand, so `run` must not start a private one."""
        return "gearman_servers" in self.model_fields_set

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca and self.tls_cert and self.tls_key)

    @property
    def roots(self) -> list[Path]:
        return [Path(p).resolve() for p in _split(self.allowed_roots, ":")]

    @property
    def everything_local(self) -> bool:
        """SQLite in the data dir and gearmand on loopback: no other host takes part."""
        url = self.resolved_database_url
        if not url.startswith("sqlite:///"):
            return False
        database = Path(url.removeprefix("sqlite:///")).resolve()
        in_data_dir = database.is_relative_to(self.data_dir.resolve())
        return in_data_dir and all(is_loopback(host) for host, _ in self.servers)

    def keyring(self) -> list[tuple[str, bytes]]:
        """Signing keys, newest first. Generated into the data dir only when everything is
        local; a host that shares the database or gearmand must be given the fleet's."""
        if not self.secret_keys and not self.everything_local:
            raise ConfigError(
                "IMPORTER_SECRET_KEYS is required when the database or gearmand is shared"
                " with other hosts: make a key once with `importer keys new` and give the same"
                " value to every host"
            )
        if not self.secret_keys:
            make_private_dir(self.data_dir)
            check_ours(self.data_dir / "secret_keys")
        text = self.secret_keys or _generated_keys(self.data_dir)
        ring = []
        for item in _split(text, ","):
            kid, _, secret = item.partition(":")
            ring.append((kid, secret.encode()))
        return ring


def _split(value: str, sep: str) -> list[str]:
    return [part.strip() for part in value.split(sep) if part.strip()]


def check_ours(*paths: Path) -> None:
    """Each path that exists is this user's own and no symbolic link: a data dir or key
    planted by another user would hand them the keys and every page's text."""
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            raise ConfigError(
                f"{path} belongs to another user (uid {info.st_uid}) or is a symbolic link:"
                " the importer keeps its keys and text only in what it created; remove it,"
                " or point IMPORTER_DATA_DIR elsewhere"
            )


def make_private_dir(path: Path) -> None:
    """Create a directory only its owner can enter (the data dir holds text and keys), or
    make an existing one of ours so: a data dir made 0755 by hand (or by an older release)
    would leave the database, the mail and the queue readable by every local user.

    ConfigError when it belongs to another user or is a symbolic link (`check_ours`).
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_ours(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        log.warning("%s was mode %o, open to other local users: made it 0700", path, mode)


def _generated_keys(data_dir: Path) -> str:
    path = data_dir / "secret_keys"
    if not path.exists():
        line = f"k1:{secrets.token_urlsafe(32)}"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(line + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins when several processes start at once
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def _toml_values(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(
            f"IMPORTER_CONFIG names {path}, which does not exist: "
            "create it or unset IMPORTER_CONFIG"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    values = {}
    for key, value in raw.items():
        name = key.lower().removeprefix(ENV_PREFIX.lower())
        values[name] = value
    return values


def load_settings(**overrides: Any) -> Settings:
    """Build settings from importer.toml (if IMPORTER_CONFIG names one), then the environment.

    The environment wins over the file; explicit overrides win over both.
    """
    file_values: dict[str, Any] = {}
    config_path = os.environ.get("IMPORTER_CONFIG")
    if config_path:
        file_values = _toml_values(Path(config_path))
    env_names = {
        k.lower().removeprefix(ENV_PREFIX.lower()) for k in os.environ if k.startswith(ENV_PREFIX)
    }
    init = {k: v for k, v in file_values.items() if k not in env_names}
    init.update(overrides)
    try:
        return Settings(**init)
    except ValidationError as e:
        first = e.errors()[0]
        key = ENV_PREFIX + "_".join(str(p) for p in first["loc"]).upper()
        if first["type"] == "extra_forbidden":
            raise ConfigError(
                f"unknown setting {key} (in {config_path or 'the environment'}): "
                "see the README's Configuration table for the keys"
            ) from e
        name = str(first["loc"][0]) if first["loc"] else ""
        where = config_path if name in file_values and name not in env_names else "the environment"
        raise ConfigError(f"{key} (in {where}): {first['msg']}") from e
