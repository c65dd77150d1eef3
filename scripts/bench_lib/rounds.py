"""Alternating rounds: every contender runs once per round, in a rotated order, so drift in
the machine (heat, page cache, a noisy neighbour) spreads over all of them alike."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Series:
    """One contender's measurements, a value per round."""

    name: str
    seconds: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)  # CER or similarity, per round
    facts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def median_of(self, fact: str) -> float:
        return statistics.median(self.facts[fact])

    @property
    def median_quality(self) -> float:
        return statistics.median(self.quality)

    def add_fact(self, name: str, value: float) -> None:
        self.facts.setdefault(name, []).append(value)


Step = Callable[[Series], None]


def alternate(contenders: Mapping[str, Step], rounds: int, label: str) -> dict[str, Series]:
    """Run every contender `rounds` times, rotating the order each round."""
    series = {name: Series(name) for name in contenders}
    names = list(contenders)
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            contenders[name](series[name])
            last = series[name].seconds[-1] if series[name].seconds else float("nan")
            log.info("%s round %d/%d: %s %.2f s", label, round_number + 1, rounds, name, last)
    return series
