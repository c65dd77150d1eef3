"""What another local user (uid 65534, as the attack was made) can reach of ours.

Each test acts through `setpriv --reuid=65534` against the real processes: the data dir
an operator made 0755, a rogue worker on our gearmand (the dashboard's: test_dashboard).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import SAMPLES, submit_json
from tests.other_user import as_nobody


def test_a_data_dir_made_0755_is_made_private_before_anything_is_written(
    shared_tmp: Path, env: dict[str, str]
) -> None:
    data = shared_tmp / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    env["IMPORTER_DATA_DIR"] = str(data)
    del env["IMPORTER_SECRET_KEYS"]  # generated into the data dir: everything is local
    folder = shared_tmp / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "born_digital.pdf", folder / "a.pdf")
    env["IMPORTER_ALLOWED_ROOTS"] = str(folder)
    submit_json(folder, env)
    assert os.stat(data).st_mode & 0o777 == 0o700
    stolen = as_nobody("cat", str(data / "secret_keys"))
    assert stolen.returncode != 0 and "Permission denied" in stolen.stderr
    listed = as_nobody("ls", str(data))
    assert listed.returncode != 0
