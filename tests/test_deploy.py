"""The systemd units in deploy/ start commands that exist, restart, read their settings,
and (the worker) keep the document walls and the drain intact."""

from __future__ import annotations

import configparser
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from workers.supervisor import DRAIN_SECONDS

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = ["importer-gearmand.service", "importer-worker@.service", "importer-watch.service"]
WORKER = "importer-worker@.service"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of a unit file, each option with every value it is given, in order.

    A small parser rather than configparser: systemd allows an option more than once
    (an empty value resets a list), `%` specifiers and `\\` continuation lines.
    """
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def last(unit: Unit, key: str, section: str = "Service") -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def seconds(span: str) -> float:
    """A systemd time span ("90", "90s", "1min 30s", "infinity") in seconds."""
    if span == "infinity":
        return float("inf")
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


def truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "yes", "true", "on")


@functools.cache
def help_text(command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "importer", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, f"`importer {command} --help` failed: {result.stderr}"
    return result.stdout


@pytest.fixture(params=UNITS)
def unit(request: pytest.FixtureRequest) -> tuple[str, Unit]:
    return request.param, parse_unit(DEPLOY / request.param)


def test_exec_start_runs_an_existing_command_with_existing_flags(unit: tuple[str, Unit]) -> None:
    name, parsed = unit
    starts = parsed.get("Service", {}).get("ExecStart", [])
    assert starts, f"{name}: no ExecStart"
    for line in starts:
        check_command(name, shlex.split(line.lstrip("-@:+!")))


def check_command(name: str, argv: list[str]) -> None:
    """`argv` runs the importer script with a subcommand and flags it has."""
    assert Path(argv[0]).name == "importer", f"{name}: {argv[0]} is not the importer script"
    command = argv[1]
    assert not command.startswith("-"), f"{name}: no subcommand in {argv!r}"
    text = help_text(command)  # an unknown command fails with exit code 2
    for arg in argv[2:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{name}: `importer {command}` has no {flag}"
            )


def test_settings_come_from_an_environment_file(unit: tuple[str, Unit]) -> None:
    name, parsed = unit
    files = [v for v in parsed["Service"].get("EnvironmentFile", []) if v]
    assert files, f"{name}: no EnvironmentFile"
    assert all(f.lstrip("-").startswith("/etc/importer/") for f in files), files


def test_restarts_on_failure(unit: tuple[str, Unit]) -> None:
    name, parsed = unit
    assert last(parsed, "Restart") in ("on-failure", "always", "on-abnormal"), (
        f"{name}: Restart= is not set to restart after a crash"
    )


def test_stop_signal_reaches_the_main_process_only(unit: tuple[str, Unit]) -> None:
    """With systemd's default KillMode=control-group every worker process would get a
    SIGTERM from systemd besides the supervisor's, and a second one stops mid-page."""
    name, parsed = unit
    assert last(parsed, "KillMode") == "mixed", f"{name}: KillMode is not mixed"
    assert last(parsed, "KillSignal") in (None, "SIGTERM", "TERM", "15")


def test_worker_keeps_the_document_walls() -> None:
    """Options that take away what workers/isolation.py needs: namespaces, mount, setuid to
    IMPORTER_CHILD_USER, a writable /proc/sys/user in the document's user namespace."""
    parsed = parse_unit(DEPLOY / WORKER)
    service = parsed["Service"]
    assert last(parsed, "User") in (None, "root"), "workers must run as root"
    assert not truthy(last(parsed, "PrivateUsers")), "PrivateUsers= unmaps the child user"
    assert last(parsed, "RestrictNamespaces") in (None, "", "no"), "it forbids unshare"
    assert not [v for v in service.get("SystemCallFilter", []) if v], "it filters unshare/mount"
    assert not truthy(last(parsed, "ProtectKernelTunables")), "/proc/sys/user must be writable"
    assert last(parsed, "ProtectSystem") != "strict", "the documents' directories are in /tmp"
    caps = last(parsed, "CapabilityBoundingSet")
    if caps is not None:
        assert {"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"} <= set(caps.split()), caps


def test_worker_stop_timeout_covers_the_drain() -> None:
    parsed = parse_unit(DEPLOY / WORKER)
    timeout = last(parsed, "TimeoutStopSec")
    assert timeout is not None, "TimeoutStopSec is not set (systemd's default is 90 s)"
    assert seconds(timeout) >= DRAIN_SECONDS + 10, (
        f"TimeoutStopSec={timeout} kills the supervisor before its {DRAIN_SECONDS:.0f} s drain"
    )


def test_worker_instance_is_the_concurrency() -> None:
    parsed = parse_unit(DEPLOY / WORKER)
    (start,) = parsed["Service"]["ExecStart"]
    argv = shlex.split(start)
    assert argv[argv.index("--concurrency") + 1] == "%i"


def test_parse_and_span_helpers() -> None:
    assert seconds("1min 30s") == 90
    assert seconds("90") == 90
    assert seconds("infinity") == float("inf")


# supervisord: the same commands, settings and stop behaviour as the systemd units ----------

SUPERVISORD = DEPLOY / "supervisord-importer.conf"
UNIT_OF = {"importer-gearmand": "importer-gearmand.service", "importer-worker": WORKER}
SIGNALS = {"15": "TERM", "SIGTERM": "TERM", "TERM": "TERM"}


def supervisord_programs() -> dict[str, configparser.SectionProxy]:
    """The [program:x] sections; supervisord's own %(name)s expansions stay as written."""
    parser = configparser.RawConfigParser(strict=True)  # a duplicate section or key fails
    parser.read_string(SUPERVISORD.read_text(), source=SUPERVISORD.name)
    return {
        section.removeprefix("program:"): parser[section]
        for section in parser.sections()
        if section.startswith("program:")
    }


def importer_argv(command: str) -> tuple[list[str], list[str]]:
    """The argv a program's command ends up running, and the files its shell sources:
    `sh -c 'set -a; . FILE; exec importer ...'` (supervisord has no EnvironmentFile)."""
    argv = shlex.split(command)
    if Path(argv[0]).name != "sh":
        return argv, []
    assert argv[1] == "-c" and len(argv) == 3, argv
    steps = [shlex.split(step) for step in argv[2].split(";")]
    sourced = [step[step.index(".") + 1] for step in steps if "." in step]
    assert steps[-1][0] == "exec", f"{command!r}: importer is not exec'd, signals miss it"
    return steps[-1][1:], sourced


def supervisord_env(value: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def test_supervisord_programs_match_the_units() -> None:
    programs = supervisord_programs()
    assert set(programs) == set(UNIT_OF), programs
    for name, program in programs.items():
        unit = parse_unit(DEPLOY / UNIT_OF[name])
        argv, sourced = importer_argv(program["command"])
        check_command(name, argv)
        (start,) = unit["Service"]["ExecStart"]
        unit_argv = shlex.split(start)
        assert argv[:2] == unit_argv[:2], (argv, unit_argv)  # the same importer subcommand
        flags = [arg for arg in argv if arg.startswith("--")]
        assert flags == [arg for arg in unit_argv if arg.startswith("--")], (name, argv)
        files = [f.lstrip("-") for f in unit["Service"]["EnvironmentFile"] if f]
        assert sourced == files, (name, sourced, files)
        assert supervisord_env(program.get("environment", "")) == dict(
            item.split("=", 1) for item in unit["Service"].get("Environment", [])
        )
        assert program.get("user") == last(unit, "User"), name
        assert int(program.get("umask", "022"), 8) == int(last(unit, "UMask") or "022", 8), name
        # KillMode=mixed: SIGTERM to importer alone, SIGKILL to all that is left.
        stop = SIGNALS[program.get("stopsignal", "TERM")]
        assert stop == SIGNALS[last(unit, "KillSignal") or "TERM"], name
        assert not truthy(program.get("stopasgroup")), f"{name}: stopasgroup signals every child"
        assert truthy(program.get("killasgroup")), f"{name}: children outlive a kill"
        assert float(program["stopwaitsecs"]) == seconds(last(unit, "TimeoutStopSec") or "90")
        assert program.get("autorestart") in ("unexpected", "true"), name


def test_supervisord_worker_drains_and_numbers_its_processes() -> None:
    worker = supervisord_programs()["importer-worker"]
    assert float(worker["stopwaitsecs"]) >= DRAIN_SECONDS + 10, "killed before the drain ends"
    if int(worker.get("numprocs", "1")) > 1:
        assert "%(process_num)" in worker["process_name"], "numprocs needs numbered names"


def test_watch_unit_watches_a_folder_for_an_address() -> None:
    parsed = parse_unit(DEPLOY / "importer-watch.service")
    (start,) = parsed["Service"]["ExecStart"]
    argv = shlex.split(start)
    assert argv[1] == "watch", argv
    assert "--email" in argv and not argv[2].startswith("-"), f"no folder or address: {argv}"
    assert "remote-fs.target" in " ".join(parsed["Unit"].get("After", [])), (
        "a watched network share must be mounted before the watch starts"
    )
