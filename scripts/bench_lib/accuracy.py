"""How close a contender's text is to what the pages say: speed must not cost accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rapidfuzz.distance import Levenshtein


def normalize(text: str) -> str:
    """Layout differences (line breaks, form feeds, runs of spaces) are not errors."""
    return " ".join(text.split())


def cer(texts: Mapping[Path, str], expected: Mapping[Path, str]) -> float:
    """Character error rate over all documents: edits needed / characters expected."""
    edits = sum(
        Levenshtein.distance(normalize(texts.get(path, "")), normalize(want))
        for path, want in expected.items()
    )
    total = sum(len(normalize(want)) for want in expected.values())
    return edits / total if total else 0.0


def similarity(texts: Mapping[Path, str], reference: Mapping[Path, str]) -> float:
    """1 - the character error rate of `texts` against `reference`, floored at 0."""
    return max(0.0, 1.0 - cer(texts, reference))
