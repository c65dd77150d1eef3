"""`submit --archive DIR`: the directory checked, and each document's archive name.

The name is chosen at submit and recorded on the document (`documents.archive`, unique):
the file's path relative to the PATH it was found under, or its sha256 for an inline
job (whose worker may not know the submitter's tree). A name that another document holds,
or that already exists in DIR, gets a number (`letter-2.pdf`), so no import ever replaces
another document's archive; the workers write exactly the recorded name
(`workers.archive_file`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import select

from importer.db.engine import Database
from importer.db.models import Document
from importer.errors import BadInput
from importer.states import DocStatus

SUFFIX = ".pdf"


def written(archive: str | None, status: DocStatus) -> str | None:
    """A document's archive as reports show it: its path once the document is done (the
    name is recorded at submit, the file written only then)."""
    return archive if status == DocStatus.done else None


def check_archive_dir(raw: str | os.PathLike[str]) -> str:
    """The archive directory, made if missing, as its real path (no link in it: the
    dashboard opens archives without following any); BadInput naming it when this user
    cannot write a file in it."""
    directory = os.path.realpath(os.fspath(raw))
    fix = "choose another --archive DIR (or IMPORTER_ARCHIVE_DIR), or make it writable"
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise BadInput(f"--archive {directory} is not a directory: {fix}")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".importer-check-"):
            pass
    except NotADirectoryError as e:
        raise BadInput(f"--archive {directory} is not a directory: {fix}") from e
    except OSError as e:
        raise BadInput(f"--archive {directory} is not writable ({e.strerror or e}): {fix}") from e
    return directory


class ArchiveNames:
    """Names documents' archives under one directory, for one submit."""

    def __init__(self, db: Database, directory: str, confine: Sequence[Path], *, inline: bool):
        self.db = db
        self.directory = directory
        self.confine = sorted(confine, key=lambda root: len(root.parts), reverse=True)
        self.inline = inline

    def relative(self, path: str, sha256: str) -> str:
        """The name under DIR before any number is added."""
        if self.inline:
            return sha256 + SUFFIX
        real = Path(path)
        for root in self.confine:  # the deepest PATH that holds it
            if real == root:
                name = real.name
                break
            if real.is_relative_to(root):
                name = str(real.relative_to(root))
                break
        else:
            name = real.name
        return name if name.lower().endswith(SUFFIX) else name + SUFFIX

    def assign(self, files: Iterable[tuple[str, str]]) -> list[str]:
        """A free archive path for each (path, sha256), in order."""
        wanted = [os.path.join(self.directory, self.relative(p, s)) for p, s in files]
        taken = self._recorded(wanted)
        names: list[str] = []
        for first in wanted:
            stem, suffix = os.path.splitext(first)
            name, n = first, 1
            while name in taken or os.path.lexists(name):
                n += 1
                name = f"{stem}-{n}{suffix}"
                taken |= self._recorded([name])
            taken.add(name)
            names.append(name)
        return names

    def _recorded(self, names: Sequence[str]) -> set[str]:
        """Those of `names` that documents already hold."""
        if not names:
            return set()
        with self.db.session() as s:
            found = s.scalars(select(Document.archive).where(Document.archive.in_(names)))
            return {name for name in found if name is not None}
