"""BENCHMARKS.md: the goals, every measurement, the machine, the versions, how to reproduce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from bench_lib.report_text import REPRODUCE, what
from bench_lib.results import Goal, Row, SectionResult


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(lines)


def goals_table(goals: Sequence[Goal]) -> str:
    return _table(
        ["figure", "measured", "goal", "met"],
        [[g.figure, g.measured, g.target, "yes" if g.met else "**no**"] for g in goals],
    )


def rows_table(rows: Sequence[Row]) -> str:
    return _table(
        ["set", "contender", "each round (s)", "median", "throughput", "accuracy"],
        [[r.section, r.contender, r.rounds, r.median, r.rate, r.quality] for r in rows],
    )


def render(
    result: SectionResult,
    *,
    command: str,
    rounds: int,
    minutes: float,
    machine: Mapping[str, str],
    versions: Mapping[str, str],
    corpus: str,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        f"Written by `{command}` on {when}: {rounds} alternating round(s), medians; the whole"
        f" run took {minutes:.1f} min. Regenerate it rather than editing it.",
        "## Goals",
        goals_table(result.goals) if result.goals else "(no goal measured in this run)",
        "## Measurements",
        rows_table(result.rows),
    ]
    if result.notes:
        parts += ["Notes:", "\n".join(f"- {note}" for note in result.notes)]
    parts += [
        "## Machine",
        _table(["", ""], list(machine.items())),
        "## Versions",
        _table(["", ""], list(versions.items())),
        "## The corpus",
        corpus,
        "## What is measured",
        what(),
        "## How to reproduce",
        REPRODUCE,
    ]
    return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"
