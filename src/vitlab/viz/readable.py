"""What keeps every picture readable, in one place: numbers at 3 significant digits and whole-number
axes ticked at whole numbers."""

from __future__ import annotations

import re

from matplotlib.axis import Axis
from matplotlib.ticker import MaxNLocator

# A number with a decimal point or an exponent, standing alone (not inside a name like ``vit_b16``).
# Integers are left alone: seeds, epochs and job numbers must read exactly.
DECIMAL = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?(?![\w.])")


def round_numbers(text: str) -> str:
    """``text`` with its decimal numbers at 3 significant digits: a swept ``lr=0.0003000000000000001``
    reads ``lr=0.0003``."""
    return DECIMAL.sub(lambda number: f"{float(number.group()):.3g}", text)


def integer_ticks(axis: Axis) -> None:
    """Tick ``axis`` at whole numbers only (epochs, layers, seeds), even when its view holds a single
    one: matplotlib's default falls back to fractions below two (a one-epoch run)."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
