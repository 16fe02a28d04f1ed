"""A finite number in a range: the one check behind every number a user or caller gives.

Settings, task files, batch files, store URLs and the store's own arguments all take
numbers. Each names its range once as a `Range`, which both decides (`allows`) and says
what is allowed (`allowed`), so a NaN, an infinity or a `true` (a bool is an int in
Python) is refused the same way everywhere and every message reads alike. Cheap to
import: the entry point imports settings, which imports this.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pytest_roadmap.errors import shown


def plain(number: float) -> str:
    """A bound as a person writes it: 0.01, 86400, 1000000 (not 1e+06 or 86400.0)."""
    if isinstance(number, int) or number.is_integer():
        return str(int(number))
    text = f"{number:f}".rstrip("0").rstrip(".")
    return text if float(text) == number else repr(number)


@dataclass(frozen=True)
class Range:
    """Which numbers are allowed: finite, an int or a float (never a bool), within bounds.

    `low` and `high` are inclusive unless `low_open` / `high_open`; None leaves that side
    open. `integer` takes only ints; `whole` also takes a float without a fraction (JSON
    files may write 5.0). `unit` goes into the words: "a number of seconds from 0 to 60".
    `note` follows them in parentheses: "(0: no limit)". `noun` replaces "a number of ..."
    where it says too little ("a share").
    """

    low: float | None = None
    high: float | None = None
    integer: bool = False
    whole: bool = False
    low_open: bool = False
    high_open: bool = False
    unit: str = ""
    note: str = ""
    noun: str = ""

    def allows(self, value: object) -> bool:
        """Whether `value` is a number this range takes."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        # An int too big for a float still compares exactly: no float() before the bounds.
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return not self.whole or isinstance(value, int) or value.is_integer()

    @property
    def kind(self) -> str:
        """ "a number", "an integer", "a whole number of seconds"..."""
        if self.noun:
            return self.noun
        kind = "an integer" if self.integer else "a whole number" if self.whole else "a number"
        return f"{kind} of {self.unit}" if self.unit else kind

    @property
    def allowed(self) -> str:
        """What the range takes, in words: "an integer from 1 to 5", "a number > 0"."""
        low, high = self.low, self.high
        if low is not None and high is not None and not (self.low_open or self.high_open):
            words = f"{self.kind} from {plain(low)} to {plain(high)}"
        else:
            bounds = []
            if low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {plain(low)}")
            if high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {plain(high)}")
            words = " ".join([self.kind, " and ".join(bounds)]) if bounds else self.kind
        return f"{words} ({self.note})" if self.note else words

    def check(self, value: object, what: str, error: type[Exception] = ValueError) -> float:
        """`value` if the range takes it; else raise `error`: "<what> must be ..., got ...".

        `what` names the setting, file or field, so the line stands on its own.
        """
        if not self.allows(value):
            raise error(f"{what} must be {self.allowed}, got {shown(value)}")
        return value  # type: ignore[return-value]  # allows() saw an int or a float


# Kept as strings: `re` compiles them on first use (this module is imported by every run).
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION = rf"(?:{_NUMBER}(?:ms|s|m|h))+"
_DURATION_PART = rf"({_NUMBER})(ms|s|m|h)"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float | None:
    """Seconds from a number of seconds ("90", "1.5") or a duration as people and Go write
    one ("250ms", "45m", "1h30m", "6m0s"); None if `text` is neither. The settings read
    `--roadmap-deadline` with it, the learned pace a rate-limit header's reset."""
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if not re.fullmatch(_DURATION, text):
        return None
    return sum(float(n) * _UNITS[unit] for n, unit in re.findall(_DURATION_PART, text))
