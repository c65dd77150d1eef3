"""File names full of markup are shown as they are: never read as Rich markup or HTML."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import SAMPLES, importer

ESC = "\x1b"
NAMES = ("[bold]y.pdf", "<b>z&amp;.pdf", f"r{ESC}[2J{ESC}]52;c;cHduZWQ={ESC}\\w.pdf")
SHOWN = {name: name.replace(ESC, "\\x1b") for name in NAMES}  # control characters escaped


def test_names_full_of_markup_print_as_they_are(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "[").mkdir(parents=True)
    shutil.copy(SAMPLES / "born_digital.pdf", inbox / "[" / "]x.pdf")  # inbox/[/]x.pdf
    for number, name in enumerate(NAMES):  # broken, so named in the summary as failed
        (inbox / name).write_bytes((SAMPLES / "broken.pdf").read_bytes() + bytes([number]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env["IMPORTER_DATA_DIR"] = str(tmp_path / "data")

    run = importer("run", str(inbox), "--email", "ops@example.com", "--workers", "1", env=env)
    assert run.returncode == 1, run.stderr  # the broken copies failed; nothing crashed
    assert "Traceback" not in run.stderr
    assert ESC not in run.stdout + run.stderr, "a file name wrote to the terminal"
    for name in NAMES:
        assert f"{inbox / SHOWN[name]}: corrupt PDF" in run.stdout, run.stdout

    batch = json.loads(importer("status", "--json", env=env, check=True).stdout)["batches"][0]
    shown = importer("status", batch["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert "[bold]y.pdf" in shown.stdout and "<b>z&amp;.pdf" in shown.stdout
    assert ESC not in shown.stdout and "\\x1b" in shown.stdout
    assert str(inbox / "[" / "]x.pdf") in shown.stdout.replace("\n", "")

    found = importer("search", "Library", env=env)
    assert found.returncode == 0, found.stderr
    assert "]x.pdf" in found.stdout

    missing = importer(
        "submit", str(inbox / f"[red]{ESC}[2Jgone.pdf"), "--email", "a@b.example", env=env
    )
    assert missing.returncode == 2
    assert ESC not in missing.stderr and "[red]\\x1b[2Jgone.pdf: no such file" in missing.stderr
