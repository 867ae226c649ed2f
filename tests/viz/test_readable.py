"""Numbers in the pictures' words are rounded, names and whole numbers left as they are."""

import re

import pytest

from vitlab.viz.readable import round_numbers


def test_decimals_are_rounded_to_three_significant_digits_and_integers_and_names_are_kept():
    text = "job 12: vit_b16 optimizer.lr=0.0003000000000000001 seed=3 wd=1.23456e-05 drop=-0.123456 x=2.5"
    assert round_numbers(text) == "job 12: vit_b16 optimizer.lr=0.0003 seed=3 wd=1.23e-05 drop=-0.123 x=2.5"


@pytest.mark.parametrize("value", [0.0003000000000000001, 0.1 + 0.2, 123456.789, -9.87654e-7, 2.0])
def test_a_rounded_number_is_within_half_a_unit_of_its_third_digit(value):
    rounded = round_numbers(f"lr={value!r}").removeprefix("lr=")
    digits = re.sub(r"[-+.]|e.*", "", rounded).lstrip("0")
    assert len(digits) <= 3
    assert float(rounded) == pytest.approx(value, rel=5e-3)
