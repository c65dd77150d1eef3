"""Terminal output that nothing from outside can steer.

File names, reasons and snippets come from the files and the people who name them: they
are printed as they are, never read as Rich markup (`markup=False`), and with every
control character shown as an escape (`\\x1b`), so a name holding ESC sequences cannot
clear the screen, retitle the terminal or write to its clipboard.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

# C0 controls but tab and newline, DEL, and the C1 controls (0x9b is a one-byte CSI).
_CONTROLS = {
    code: f"\\x{code:02x}"
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
    if code not in (0x09, 0x0A)
}


def visible(text: str) -> str:
    """The text with every control character written out as an escape."""
    return text.translate(_CONTROLS)


class SafeConsole(Console):
    """A Console for text from outside: no markup, no raw control characters."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(visible(text), **options)
