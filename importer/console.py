"""Terminal output that nothing from outside can steer.

File names, reasons and snippets come from the files and the people who name them: they
are printed as they are, never read as Rich markup (`markup=False`), and with every
control character shown as an escape (`\\x1b`), so a name holding ESC sequences cannot
clear the screen, retitle the terminal or write to its clipboard. Bidi overrides,
zero-width characters and lone surrogates are escaped too (`\\u202e`): they could reorder
or hide what a line shows. A field that must stay on one line (a path, a snippet) goes
through `importer.report_text.printable`, which escapes newlines and tabs as well.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from importer.report_text import printable


def visible(text: str) -> str:
    """The text with its line breaks kept and, on each line, every control, bidi or
    invisible character (and a tab) written out as an escape."""
    return "\n".join(printable(line) for line in text.split("\n"))


class SafeConsole(Console):
    """A Console for text from outside: no markup, no raw control characters."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(visible(text), **options)
