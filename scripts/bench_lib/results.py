"""What a section hands to the report: table rows and goals, already formatted."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench_lib.rounds import Series


@dataclass(frozen=True)
class Goal:
    figure: str
    measured: str
    target: str
    met: bool


@dataclass(frozen=True)
class Row:
    section: str
    contender: str
    rounds: str  # every round's seconds
    median: str
    rate: str  # throughput at the median
    quality: str


@dataclass
class SectionResult:
    rows: list[Row] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)  # for notes across sections

    def extend(self, other: SectionResult) -> None:
        self.rows.extend(other.rows)
        self.goals.extend(other.goals)
        self.notes.extend(other.notes)
        self.medians.update(other.medians)


def row(section: str, series: Series, rate: str, quality: str) -> Row:
    rounds = ", ".join(f"{s:.2f}" for s in series.seconds)
    return Row(section, series.name, rounds, f"{series.median:.2f} s", rate, quality)


def ratio_goal(figure: str, value: float, target: float, *, at_most: bool, extra: str = "") -> Goal:
    sign = "≤" if at_most else "≥"
    met = value <= target if at_most else value >= target
    return Goal(figure, f"{value:.2f}{extra}", f"{sign} {target:g}", met)
