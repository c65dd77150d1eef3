"""A search snippet cut into plain and matched pieces, for the template to escape and mark.

The pieces are text, never markup: the template wraps matched pieces in <mark> and Jinja
escapes every character of every piece.
"""

from __future__ import annotations

from collections.abc import Sequence


def pieces(snippet: str, matches: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """(text, matched) in order; offsets out of range, empty or overlapping are clipped.

    >>> pieces("the <b>cat</b> sat", [(7, 10)])
    [('the <b>', False), ('cat', True), ('</b> sat', False)]
    """
    out: list[tuple[str, bool]] = []
    at = 0
    for start, end in sorted(matches):
        start, end = max(start, at), min(end, len(snippet))
        if start >= end:
            continue
        if start > at:
            out.append((snippet[at:start], False))
        out.append((snippet[start:end], True))
        at = end
    if at < len(snippet):
        out.append((snippet[at:], False))
    return out
