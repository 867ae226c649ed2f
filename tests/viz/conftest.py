"""What every picture must pass: its words inside the image and none written over another."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text


def tick_labels(axis: Axis) -> list[Text]:
    """The tick labels drawn: major and minor, in the view, with text."""
    low, high = sorted(axis.get_view_interval())
    return [
        label
        for minor in (False, True)
        for location, label in zip(
            axis.get_ticklocs(minor=minor), axis.get_ticklabels(minor=minor), strict=True
        )
        if low <= location <= high and label.get_visible() and label.get_text()
    ]


def written(figure: Figure) -> Iterator[tuple[str, list[Text]]]:
    """The figure's words by kind, after a draw (titles, annotations, each axis's tick labels ...)."""
    figure.draw_without_rendering()
    axes_list = figure.axes
    yield (
        "suptitles and figure legends",
        [*figure.texts, *(t for legend in figure.legends for t in legend.texts)],
    )
    yield "titles", [axes.title for axes in axes_list]
    yield "point labels", [text for axes in axes_list for text in axes.texts]
    for index, axes in enumerate(a for a in axes_list if a.axison):  # axis("off") draws no axis
        yield f"axes {index} x ticks", tick_labels(axes.xaxis)
        yield f"axes {index} y ticks", tick_labels(axes.yaxis)
        legend = axes.get_legend()
        yield f"axes {index} labels", [axes.xaxis.label, axes.yaxis.label, *(legend.texts if legend else [])]


@pytest.fixture
def shown_ticks() -> Callable[[Axis], list[str]]:
    """The texts of an axis's tick labels as drawn (the figure is drawn first)."""

    def texts(axis: Axis) -> list[str]:
        axis.get_figure(root=True).draw_without_rendering()
        return [label.get_text().replace("\N{MINUS SIGN}", "-") for label in tick_labels(axis)]

    return texts


@pytest.fixture
def assert_readable() -> Callable[[Figure], None]:
    """A check of a figure: each of its words lies inside the image, and no two of a kind overlap."""

    def check(figure: Figure) -> None:
        image = figure.bbox
        for kind, texts in written(figure):
            shown = [t for t in texts if t.get_visible() and t.get_text()]
            for text in shown:
                box = text.get_window_extent()
                assert (
                    image.x0 <= box.x0 and box.x1 <= image.x1 and image.y0 <= box.y0 and box.y1 <= image.y1
                ), (
                    f"{kind}: {text.get_text()!r} at {box.bounds} leaves the {image.width}x{image.height} image"
                )
            for a, b in itertools.combinations(shown, 2):
                assert not a.get_window_extent().overlaps(b.get_window_extent()), (
                    f"{kind}: {a.get_text()!r} overlaps {b.get_text()!r}"
                )

    return check
