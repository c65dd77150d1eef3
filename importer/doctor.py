"""`importer doctor`: is everything installed, reachable, and not exposed?

Each check says what it found and, when something is wrong, how to fix it. Exposure is
judged from this host's own listening sockets (/proc/net/tcp*), not from a port scan.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from importer import dashboard_probe
from importer.config import Settings
from importer.db.engine import open_database
from importer.errors import ImporterError
from importer.gearman.address import Server, is_loopback
from importer.gearman.admin import AdminRefused, admin_command
from importer.gearman.client import FUNCTION, GearmanIO
from importer.gearman.connection import ServerError
from importer.languages import check_lang, install_command, missing_languages, parse_languages
from importer.mail import mail_url_warnings
from importer.payload import Keyring, is_our_worker
from workers import ocr
from workers.tools import ToolError, ToolNotFound, run_tool

if TYPE_CHECKING:
    from workers.isolation import ChildUser
    from workers.walls import Hiding, Missing

OK, WARN, FAIL, EXPOSED = "ok", "warn", "fail", "exposed"
# doctor's own exit status when a check fails or finds exposure: the tools, services and
# files it looks at are a mix (ExitCode's 2 and 3 each name one kind), and the table says which.
CHECK_FAILED = 1
TOOL_SECONDS = 20.0
POPPLER = ("pdfinfo", "pdftotext", "pdftoppm", "pdfimages")


@dataclass(frozen=True)
class Check:
    name: str
    state: str
    detail: str
    fix: str = ""


def _tool(argv: list[str]) -> str:
    """The first line a program says about itself (stdout, else stderr), run by the
    workers' tools layer: with a timeout, logged, failures raised as `ToolError`."""
    proc = run_tool(argv, timeout=TOOL_SECONDS)
    said = (proc.stdout.strip() or proc.stderr.strip()).decode("utf-8", "replace")
    return said.splitlines()[0] if said else argv[0]


def check_tools(lang: str) -> list[Check]:
    """Tesseract, the languages `lang` names (and osd), and poppler; `BadInput` for a
    `lang` that is not a language spec."""
    return [*_tesseract(parse_languages(check_lang(lang))), *_poppler()]


def _tesseract(names: tuple[str, ...]) -> list[Check]:
    try:
        version = _tool(["tesseract", "--version"])
        installed = ocr.list_languages(timeout=TOOL_SECONDS)
    except ToolNotFound:
        return [Check("tesseract", FAIL, "not installed", "apt-get install tesseract-ocr")]
    except ToolError as e:
        return [Check("tesseract", FAIL, str(e), "apt-get install --reinstall tesseract-ocr")]
    missing = missing_languages(names, installed)
    return [
        Check("tesseract", OK, version),
        Check(
            "languages",
            FAIL if missing else OK,
            f"missing {', '.join(missing)}" if missing else f"{'+'.join(names)} and osd installed",
            install_command(missing) if missing else "",
        ),
    ]


def _poppler() -> list[Check]:
    checks, versions = [], {}
    for tool in POPPLER:
        try:
            versions[tool] = _tool([tool, "-v"])
        except ToolNotFound:
            checks.append(Check(tool, FAIL, "not installed", "apt-get install poppler-utils"))
        except ToolError as e:
            checks.append(Check(tool, FAIL, str(e), "apt-get install --reinstall poppler-utils"))
    return checks or [Check("poppler", OK, versions["pdftoppm"])]


def check_services(settings: Settings, gio: GearmanIO) -> list[Check]:
    checks = []
    for h in gio.ping():
        if h.reachable:
            checks.append(Check(f"gearmand {h.address}", OK, f"version {h.version}"))
        else:
            checks.append(
                Check(
                    f"gearmand {h.address}",
                    FAIL,
                    f"unreachable: {h.error}",
                    "start it with `importer gearmand` or fix IMPORTER_GEARMAN_SERVERS",
                )
            )
    try:
        db = open_database(settings.resolved_database_url)
        checks.append(Check("database", OK, db.safe_url))
        db.engine.dispose()
    except ImporterError as e:
        checks.append(Check("database", FAIL, e.message, "fix IMPORTER_DATABASE_URL"))
    mail = settings.resolved_mail_url
    if mail.startswith("maildir://"):
        folder = Path(mail.removeprefix("maildir://"))
        parent = folder if folder.exists() else folder.parent
        writable = os.access(parent, os.W_OK) if parent.exists() else True
        checks.append(
            Check(
                "mail",
                OK if writable else FAIL,
                f"maildir {folder}",
                "" if writable else f"make {parent} writable",
            )
        )
    else:
        checks.append(Check("mail", OK, mail.rsplit("@", 1)[-1]))
    return checks


def _listening(proc_net: Path = Path("/proc/net")) -> list[tuple[str, int, int]]:
    """(address, port, inode) of every listening TCP socket on this host."""
    found = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = proc_net / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            if width == 8:
                addr = str(ipaddress.IPv4Address(raw[::-1]))
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                addr = str(ipaddress.IPv6Address(b"".join(words)))
            found.append((addr, int(hex_port, 16), int(fields[9])))
    return found


def _socket_owners() -> dict[int, str]:
    """Socket inode -> the command name of the process holding it (where we may look)."""
    owners: dict[int, str] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owners[int(target[8:-1])] = comm
        except OSError:
            continue
    return owners


def check_exposure(settings: Settings, gio: GearmanIO) -> list[Check]:
    checks = _listeners(settings) + _transport(settings) + _registrations(settings, gio)
    checks += _file_modes(settings) + _mail_transport(settings) + _dashboard()
    checks += _isolation(settings)
    if not settings.roots:
        checks.append(
            Check(
                "allowed roots",
                WARN,
                "IMPORTER_ALLOWED_ROOTS is not set: `importer worker` refuses to start (or, with"
                " --allow-any-path, reads any path the database names)",
                "set IMPORTER_ALLOWED_ROOTS to the directories imports come from",
            )
        )
    if not any(c.state in (WARN, EXPOSED) for c in checks):
        checks.append(
            Check(
                "exposure",
                OK,
                "gearmand on loopback or behind TLS; files private; no dashboard open to others",
            )
        )
    return checks


def _dashboard() -> list[Check]:
    """A dashboard that shows /metrics without its token on an address beyond loopback."""
    answers = dashboard_probe.probe()
    open_ = [a for a in answers if a.status == 200]
    checks = [
        Check(
            "dashboard exposure",
            EXPOSED,
            f"{a.url} answers without a token: whoever reaches it reads the archive's"
            " counts, and through the same gate its pages' text",
            "set IMPORTER_DASHBOARD_TOKEN for `importer dashboard` (Prometheus sends it:"
            " deploy/prometheus.yml), or serve it on 127.0.0.1 alone, with no proxy in front",
        )
        for a in open_
    ]
    if answers and not open_:
        said = ", ".join(f"{a.url} ({a.status})" for a in answers)
        checks.append(Check("dashboard exposure", OK, f"without a token: {said}"))
    return checks


def _isolation(settings: Settings) -> list[Check]:
    """Which walls stand around the process that parses a PDF, on this host: each tried
    as the fork server builds it; a wall reported here is one that was just built."""
    from workers import isolation, walls

    try:
        user = isolation.child_user(settings.child_user)
    except ValueError as e:
        fix = "set IMPORTER_CHILD_USER to an unprivileged user"
        return [Check("isolation", FAIL, str(e), fix)]
    found, missing = walls.available(user, [*settings.roots, settings.data_dir.resolve()])
    stand = [
        "worker processes non-dumpable",
        "children: isolated interpreter, private cwd, resource limits, allowlisted environment",
        f"children run as {user.name}" if user else "children run as the worker's user",
    ]
    if found.network:
        stand.append("no network")
    if found.namespaces:
        stand.append("each its own processes, /tmp, /run and IPC")
    if found.own_user:
        stand.append("each its own process limit, no capabilities")
    checks = [_walls_check(stand, missing, user, settings.weak_isolation)]
    if found.namespaces:
        checks.append(_hiding_check(found.hiding))
    return checks


def _walls_check(
    stand: list[str], missing: list[Missing], user: ChildUser | None, weak: bool
) -> Check:
    from workers import walls

    if missing:
        gaps = "; ".join(m.warning() for m in missing)
        if weak:
            detail = f"{walls.WEAK_SETTING}=1: workers serve without walls: {gaps}"
            return Check("isolation", FAIL, f"{detail} (standing: {'; '.join(stand)})", walls.FIX)
        detail = f"workers refuse to start: {gaps} (standing: {'; '.join(stand)})"
        return Check("isolation", FAIL, detail, walls.FIX)
    if weak:
        detail = f"{walls.WEAK_SETTING}=1 is set though every wall stands: {'; '.join(stand)}"
        return Check("isolation", FAIL, detail, f"unset {walls.WEAK_SETTING}")
    if user is None:
        fix = "run workers as root, so children drop to IMPORTER_CHILD_USER"
        return Check("isolation", WARN, "; ".join(stand), fix)
    return Check("isolation", OK, "; ".join(stand))


def _hiding_check(hiding: Hiding) -> Check:
    """Which import roots and data dir each document is kept from, and which it is not."""
    seen = [f"hidden: {', '.join(hiding.hidden)}"] if hiding.hidden else []
    if hiding.kept:
        seen.append(f"bound back read-only inside them: {', '.join(hiding.kept)}")
    if hiding.covered:
        seen.append(f"under the document's own /tmp or /run: {', '.join(hiding.covered)}")
    if hiding.unhidden:
        said = "; ".join(f"{path} is NOT hidden ({why})" for path, why in hiding.unhidden)
        fix = "keep import roots and the data dir out of /, /usr, /etc and the like"
        return Check("hidden roots", WARN, "; ".join([said, *seen]), fix)
    return Check("hidden roots", OK, "; ".join(seen) or "no root or data dir to hide")


def _listeners(settings: Settings) -> list[Check]:
    """A gearmand socket beyond loopback, found by its owner or, when the owner cannot be
    seen (another user's process), by a configured gearmand port that answers plain text."""
    checks = []
    owners = _socket_owners()
    ports = {port for _, port in settings.servers}
    for addr, port, inode in _listening():
        if is_loopback(addr):
            continue
        owned = owners.get(inode) == "gearmand"
        if not owned and (port not in ports or not _answers_plain_gearman(addr, port)):
            continue  # not gearmand's port, or TLS in front of it (SECURITY.md)
        checks.append(
            Check(
                "gearmand exposure",
                EXPOSED,
                f"gearmand listens on {addr}:{port} without TLS: anyone who reaches it can "
                "list functions, submit jobs and register workers",
                "bind it to 127.0.0.1 and put `importer gearmand --tls` in front (SECURITY.md)",
            )
        )
    return checks


def _answers_plain_gearman(addr: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the socket answers gearmand's plain-text `version` (TLS in front does not)."""
    host = "127.0.0.1" if addr in ("0.0.0.0", "::") else addr
    try:
        admin_command(Server(host, port), "version", timeout=timeout)
    except AdminRefused:
        return True
    except ServerError:
        return False
    return True


def _transport(settings: Settings) -> list[Check]:
    checks = []
    for host, port in settings.servers:
        if not is_loopback(host) and not settings.tls:
            checks.append(
                Check(
                    "gearmand transport",
                    EXPOSED,
                    f"{host}:{port} is reached in plain text",
                    "set IMPORTER_TLS_CA/CERT/KEY and run `importer gearmand --tls` there",
                )
            )
    return checks


def _registrations(settings: Settings, gio: GearmanIO) -> list[Check]:
    """Functions and workers gearmand knows that are not ours; a failed question is a warning."""
    checks = []
    try:
        functions = gio.admin_status()
        workers = gio.admin_workers()
    except ImporterError as e:
        return [
            Check(
                "gearmand registrations",
                WARN,
                f"could not list gearmand's functions and workers: {e.message}",
                "check IMPORTER_GEARMAN_SERVERS and IMPORTER_TLS_*; rogue workers go unseen",
            )
        ]
    foreign = sorted(f for f in functions if f.encode() != FUNCTION)
    if foreign:
        checks.append(
            Check(
                "functions",
                WARN,
                f"functions that are not ours: {', '.join(foreign)}",
                "find who registered them (`gearadmin --workers`)",
            )
        )
    try:
        ring = settings.keyring()
    except ImporterError as e:
        return [*checks, Check("signing keys", FAIL, e.message)]
    rogue = [w for w in workers if _is_rogue_worker(w, ring)]
    if rogue:
        checks.append(
            Check(
                "workers",
                EXPOSED,
                f"{len(rogue)} worker(s) for `import` that are not ours: {rogue[:3]}",
                "firewall gearmand's port and use --tls; rotate IMPORTER_SECRET_KEYS",
            )
        )
    return checks + _held(settings)


def _held(settings: Settings) -> list[Check]:
    """Jobs a worker took at gearmand and never claimed (the reaper sent them again): by whom."""
    from importer.requeue import held_jobs

    try:
        db = open_database(settings.resolved_database_url)
        try:
            count, newest = held_jobs(db)
        finally:
            db.engine.dispose()
    except Exception as e:  # noqa: BLE001 - the services check reports the database itself
        return [Check("held jobs", WARN, f"could not read the database: {str(e)[:200]}")]
    if not count:
        return []
    who = "; ".join(f"{j.unique} at {j.at:%Y-%m-%d %H:%M} by {j.worker}" for j in newest)
    return [
        Check(
            "held jobs",
            EXPOSED,
            f"{count} job(s) taken at gearmand and never claimed, sent again; newest: {who}",
            "a worker that is not ours takes jobs: firewall gearmand's port and use --tls",
        )
    ]


def _file_modes(settings: Settings) -> list[Check]:
    """Keys, the data dir and what it holds (every page's text, signed payloads), the
    database file and the config file: none may be open to other users."""
    checks = []
    for path, kind in _private_files(settings):
        owner = path.lstat().st_uid
        if owner != os.geteuid() or path.is_symlink():
            checks.append(
                Check(
                    kind,
                    EXPOSED,
                    f"{path} belongs to uid {owner}, not to this user, or is a link",
                    f"remove it and let the importer create it (or chown it to uid {os.geteuid()})",
                )
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            private = "700" if path.is_dir() else "600"
            checks.append(
                Check(
                    kind,
                    EXPOSED,
                    f"{path} is open to other users ({mode:o})",
                    f"chmod {private} {path}",
                )
            )
    return checks


def _private_files(settings: Settings) -> list[tuple[Path, str]]:
    keys = [settings.data_dir / "secret_keys"]
    if settings.tls_key is not None:
        keys += [settings.tls_key, *settings.tls_key.parent.glob("*.key")]
    data = [
        settings.data_dir,
        *settings.data_dir.glob("*.sqlite*"),
        *settings.data_dir.glob("*.db*"),
    ]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        data += [database, *database.parent.glob(database.name + "-*")]
    config = os.environ.get("IMPORTER_CONFIG")
    if config:
        data.append(Path(config))
    found = {p: "key files" for p in keys if p.exists()}
    found.update({p: "data files" for p in data if p.exists() and p not in found})
    return sorted(found.items())


def _mail_transport(settings: Settings) -> list[Check]:
    try:
        return [
            Check(
                "mail transport",
                EXPOSED,
                warning,
                "use ?starttls=true or smtps:// in IMPORTER_MAIL_URL",
            )
            for warning in mail_url_warnings(settings.resolved_mail_url)
        ]
    except ImporterError as e:
        return [Check("mail transport", FAIL, e.message)]


_WORKER_LINE = re.compile(r"^(?:\S+:\d+ )?\d+ (?P<ip>\S+) (?P<client>\S+) :(?P<functions>.*)$")


def _is_rogue_worker(line: str, keyring: Keyring) -> bool:
    """A worker for our function whose client id was not made with our keys."""
    m = _WORKER_LINE.match(line.strip())
    if not m or FUNCTION.decode() not in m["functions"].split():
        return False
    return not is_our_worker(m["client"], keyring)


def run_doctor(settings: Settings, *, lang: str, as_json: bool, out: Console) -> int:
    gio = GearmanIO.from_settings(settings)
    try:
        checks = check_tools(lang) + check_services(settings, gio) + check_exposure(settings, gio)
    finally:
        gio.close()
    if as_json:
        out.print_json(data=[asdict(c) for c in checks])
    else:
        table = Table("check", "state", "detail", "fix", title="importer doctor")
        colour = {OK: "green", WARN: "yellow", FAIL: "red", EXPOSED: "bold red"}
        for c in checks:
            table.add_row(c.name, Text(c.state, style=colour[c.state]), c.detail, c.fix)
        out.print(table)
    bad = {c.state for c in checks} & {FAIL, EXPOSED}
    return CHECK_FAILED if bad else 0
