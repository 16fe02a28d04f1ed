"""validation.Range: the one check behind "a finite number in a range"."""

from __future__ import annotations

import math

import pytest

from pytest_roadmap.errors import SettingError
from pytest_roadmap.validation import Range, plain


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, True, False, "1", None, [1], b"1", 1 + 0j]
)
def test_what_is_never_a_number(value: object) -> None:
    assert not Range().allows(value)
    assert not Range(integer=True).allows(value)


def test_bounds_are_inclusive_unless_open() -> None:
    closed = Range(0, 1)
    assert closed.allows(0) and closed.allows(1) and closed.allows(0.5)
    assert not closed.allows(-1e-9) and not closed.allows(1.0000001)
    half_open = Range(0, 1, low_open=True, high_open=True)
    assert not half_open.allows(0) and not half_open.allows(1) and half_open.allows(0.5)
    assert Range(low=5).allows(10**400) and not Range(high=5).allows(10**400)


def test_integer_takes_ints_and_whole_takes_whole_floats() -> None:
    assert Range(integer=True).allows(3) and not Range(integer=True).allows(3.0)
    assert Range(whole=True).allows(3.0) and Range(whole=True).allows(3)
    assert not Range(whole=True).allows(3.5)


@pytest.mark.parametrize(
    ("allowed", "words"),
    [
        (Range(0.01, 1_000_000), "a number from 0.01 to 1000000"),
        (Range(1, 5, integer=True), "an integer from 1 to 5"),
        (Range(1, 1000, whole=True), "a whole number from 1 to 1000"),
        (Range(0.1, 86400, unit="seconds"), "a number of seconds from 0.1 to 86400"),
        (Range(0, low_open=True, unit="seconds"), "a number of seconds > 0"),
        (Range(1, integer=True), "an integer >= 1"),
        (Range(0, 1, low_open=True), "a number > 0 and <= 1"),
        (Range(0, 9, integer=True, note="0: no limit"), "an integer from 0 to 9 (0: no limit)"),
        (Range(0, 1, noun="a share", note="0.2 is 20%"), "a share from 0 to 1 (0.2 is 20%)"),
        (Range(), "a number"),
    ],
)
def test_the_words_say_what_is_allowed(allowed: Range, words: str) -> None:
    assert allowed.allowed == words


def test_check_names_the_value_and_raises_the_callers_error() -> None:
    assert Range(1, 5).check(2.5, "x") == 2.5
    with pytest.raises(ValueError, match=r"^lease must be a number > 0, got nan$"):
        Range(0, low_open=True).check(math.nan, "lease")
    with pytest.raises(
        SettingError, match=r"^f.json: field 'n' must be an integer from 1 to 5, got "
    ):
        Range(1, 5, integer=True).check("x" * 500, "f.json: field 'n'", SettingError)


def test_plain_writes_bounds_as_a_person_does() -> None:
    assert [plain(x) for x in (0.01, 1e6, 86400.0, 0.1, 2, 1e-300)] == [
        "0.01",
        "1000000",
        "86400",
        "0.1",
        "2",
        "1e-300",
    ]
