"""A worker whose virtual environment its document children cannot see: under the temp
dir (a document's /tmp is its own) or under an import root (hidden, the environment bound
back). Everything a child loads lazily must be loaded before its walls go up: Pillow's
PGM plugin (else no page is ever blank) and pypdf's filters (else an encrypted PDF reads
as corrupt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from tests import hostile
from tests.conftest import SAMPLES

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the walls are built as root here")

READ = """import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
import PIL
from workers import engine, isolation
from workers.document import DocumentError, PageResult
engine.configure(child_user=isolation.child_user("nobody"), hidden=sys.argv[3:])
pages = [p for p in engine.process_document(sys.argv[1]) if isinstance(p, PageResult)]
try:
    list(engine.process_document(sys.argv[2]))
    kind = None
except DocumentError as e:
    kind = type(e).__name__
print(json.dumps({"pil": PIL.__file__, "blank": [p.blank for p in pages], "kind": kind}))
"""


def _venv(where: Path) -> Path:
    """A virtual environment at `where` holding its own Pillow and pypdf (the rest, this
    project among it, from the test's own environment, behind them on sys.path)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = next(where.glob("lib/python3*/site-packages"))
    for name in ("PIL", "pillow.libs", "pypdf"):
        if (ours / name).exists():
            shutil.copytree(ours / name, theirs / name, symlinks=True)
    (theirs / "zz-tests.pth").write_text(f"import site; site.addsitedir({str(ours)!r})\n")
    return where / "bin" / "python"


@pytest.mark.parametrize("place", ["temp dir", "import root"])
def test_a_blank_page_is_blank_whatever_the_child_can_see(place: str, tmp_path: Path) -> None:
    blank = tmp_path / "blank.pdf"
    Image.new("L", (1700, 2200), 255).save(blank, "PDF", resolution=200)
    locked = hostile.encrypted(tmp_path / "locked.pdf", SAMPLES / "born_digital.pdf")
    base = Path(tempfile.mkdtemp(dir=None if place == "temp dir" else "/var/lib"))
    try:
        python = _venv(base / "venv")
        hidden = [str(base)] if place == "import root" else []
        proc = subprocess.run(
            [str(python), "-c", READ, str(blank), str(locked), *hidden],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
        )  # fmt: skip
    finally:
        shutil.rmtree(base)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["pil"].startswith(str(base)), seen  # the copy the child cannot see
    assert seen["blank"] == [True], proc.stderr
    assert seen["kind"] == "EncryptedPdf", proc.stderr
    assert "WARNING" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
