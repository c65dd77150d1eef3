"""Reading a JSON object that another process sent, trusting nothing of its shape.

The engine's child reads hostile PDFs and may be subverted by one; the fork server is a
separate process too. Their messages are read here: one JSON object, no NaN or
Infinity, exactly the fields its kind has (none missing, none unknown), each of the
one type it must have. Anything else is a MalformedMessage whose text is safe to log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

E = TypeVar("E", bound=Enum)


class MalformedMessage(ValueError):
    """A message that is not exactly one of the kinds its channel carries."""


def json_object(data: bytes, *, limit: int, what: str) -> dict[str, object]:
    """One JSON object from `data`, no longer than `limit` bytes."""
    if len(data) > limit:
        raise MalformedMessage(f"{what} of {len(data)} bytes is over {limit}")
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:  # bad UTF-8 and JSON are ValueErrors
        raise MalformedMessage(f"{what} is not JSON: {data[:60]!r}") from e
    if not isinstance(body, dict):
        raise MalformedMessage(f"{what} is not a JSON object: {data[:60]!r}")
    return body


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


class Fields:
    """One message's fields, each taken out with the type it must have."""

    def __init__(self, body: object, what: str, names: Iterable[str]) -> None:
        if not isinstance(body, dict):
            raise MalformedMessage(f"{what} is not a JSON object")
        expected = set(names)
        missing = sorted(expected - body.keys())
        if missing:
            raise MalformedMessage(f"{what} lacks {', '.join(missing)}")
        unknown = sorted(str(key) for key in body.keys() - expected)
        if unknown:
            raise MalformedMessage(f"{what} has unknown fields {', '.join(unknown)[:100]}")
        self.body: dict[str, object] = body
        self.what = what

    def integer(self, name: str, *, minimum: int | None = None) -> int:
        value = self.body[name]
        if type(value) is not int:  # not bool, although bool is an int
            raise self._wrong(name, "an integer")
        if minimum is not None and value < minimum:
            raise self._wrong(name, f"at least {minimum}")
        return value

    def number(self, name: str) -> float:
        value = self.body[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, "a number")
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            number = math.inf
        if not math.isfinite(number):  # and 1e999 reads as inf
            raise self._wrong(name, "a finite number")
        return number

    def optional_number(self, name: str) -> float | None:
        return None if self.body[name] is None else self.number(name)

    def optional_integer(self, name: str, *, minimum: int | None = None) -> int | None:
        return None if self.body[name] is None else self.integer(name, minimum=minimum)

    def boolean(self, name: str) -> bool:
        value = self.body[name]
        if not isinstance(value, bool):
            raise self._wrong(name, "true or false")
        return value

    def text(self, name: str) -> str:
        value = self.body[name]
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        return value

    def choice(self, name: str, enum: type[E]) -> E:
        """A member of `enum`, given by its value."""
        value = self.body[name]
        for member in enum:
            if type(value) is type(member.value) and value == member.value:
                return member
        choices = ", ".join(repr(m.value) for m in enum)
        raise self._wrong(name, f"one of {choices}")

    def integers(self, name: str, *, minimum: int = 0) -> tuple[int, ...]:
        values = self.body[name]
        if not isinstance(values, list) or not all(type(v) is int and v >= minimum for v in values):
            raise self._wrong(name, f"a list of integers of at least {minimum}")
        return tuple(values)

    def fields(self, name: str, names: Iterable[str]) -> Fields:
        """A nested object's fields."""
        return Fields(self.body[name], f"{self.what} {name}", names)

    def _wrong(self, name: str, expected: str) -> MalformedMessage:
        return MalformedMessage(
            f"{self.what} {name} must be {expected}, not {self.body[name]!r:.60}"
        )
