"""Shared fixtures: small generated image folders, so no test needs downloaded data."""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import requires
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image
from slurm_cluster import slurm_cluster  # noqa: F401 - a session fixture for SLURM tests
from torch.utils.data import DataLoader, TensorDataset


def admitted_pytest() -> SpecifierSet:
    """The pytest versions the dev extras admit (pyproject.toml is their one source)."""
    return next(r.specifier for r in map(Requirement, requires("vitlab") or []) if r.name == "pytest")


def pytest_configure(config: pytest.Config) -> None:
    # e.g. pytest 9.2 makes pytest-xdist 3.8 ignore xdist_group (its ids are no longer rewritable):
    # the SLURM tests would start one cluster per worker and collide. Checked only under loadgroup.
    admitted = admitted_pytest() if config.getvalue("dist") == "loadgroup" else None
    if admitted is not None and not admitted.contains(pytest.__version__):
        raise pytest.UsageError(
            f"pytest {pytest.__version__} is outside the dev extras' pytest{admitted}, with which "
            "pytest-xdist groups tests by xdist_group: pip install -e '.[dev]'"
        )
    # torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work and are
    # what vitlab.data uses until that migration, so this one named warning is not news in test runs.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: pytest-xdist hands tests out in collection order, so the long ones start
    early and the short ones fill the workers' gaps at the end, instead of one worker finishing a
    long test alone while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order within


def write_image(path: Path, label: int, size: int, seed: int) -> None:
    """A JPEG whose colour depends on ``label`` (plus noise), so a model could learn the classes."""
    rng = np.random.default_rng(seed)
    colour = np.array([(label * 97) % 256, (label * 57 + 80) % 256, (label * 31 + 160) % 256])
    pixels = colour + rng.normal(0, 20, (size, size + 8, 3))  # not square: resizing must handle that
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make_image_folder(name, classes, n_per_class, size, splits)`` -> ``root`` holding
    ``root/<split>/<class>/<i>.jpg``; ``n_per_class`` may be a dict per split."""

    def make(
        name: str = "images",
        classes: Sequence[str] = ("pizza", "steak", "sushi"),
        n_per_class: int | dict[str, int] = 4,
        size: int = 32,
        splits: Sequence[str] = ("train", "test"),
    ) -> Path:
        root = tmp_path / name
        for split in splits:
            count = n_per_class[split] if isinstance(n_per_class, dict) else n_per_class
            for label, class_name in enumerate(classes):
                for i in range(count):
                    seed = (splits.index(split) * 1000 + label) * 1000 + i
                    write_image(root / split / class_name / f"{i}.jpg", label, size, seed)
        return root

    return make


def trained(module: L.LightningModule, path: Path) -> Path:
    """``module`` after one optimizer step on random images, saved by Lightning as training does."""
    images = TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,)))
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(module, DataLoader(images, batch_size=2))
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def make_food101(make_image_folder) -> Callable[..., Path]:
    """``make_food101(classes, n_train, n_test)`` -> a torchvision root holding ``food-101/`` in
    torchvision's Food101 layout: ``images/<class>/<id>.jpg``, ``meta/classes.txt``,
    ``meta/{train,test}.json``; ids below ``n_train`` are train images."""

    def make(
        classes: Sequence[str] = ("pizza", "ramen", "steak", "sushi"), n_train: int = 10, n_test: int = 4
    ) -> Path:
        images = make_image_folder("food101_images", classes, n_train + n_test, size=16, splits=("all",))
        return food101_layout(images / "all", images.parent / "torchvision_root", classes, n_train)

    return make


def food101_layout(images: Path, root: Path, classes: Sequence[str], n_train: int) -> Path:
    """``root`` holding ``food-101/`` over ``images/<class>/<i>.jpg``: ids below ``n_train`` train."""
    folder = root / "food-101"
    (folder / "meta").mkdir(parents=True)
    (folder / "images").symlink_to(images)
    (folder / "meta" / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    n_all = len(list((images / classes[0]).iterdir()))
    for split, ids in (("train", range(n_train)), ("test", range(n_train, n_all))):
        listed = {c: [f"{c}/{i}" for i in ids] for c in classes}
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listed))
    return root


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served at http://127.0.0.1:<port>/ (``served.url``), without any proxy."""
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

# A run small enough for CPU tests (conf/debug/tiny.yaml, its one definition): ViT-Ti's width at
# 32 px in 8-px patches on 80 generated images, one epoch on the CPU, CSV logs, no summary table.
TINY_RUN = ["debug=tiny"]


@pytest.fixture
def run_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str | int | None]:
    """``run_command(main, *argv, cwd=tmp_path)``: a command's ``main()`` run in this process as the
    user types it (``sys.argv``), from ``cwd``; returns its exit: None on success, else SystemExit's
    code (the ``error: ...`` line the interpreter would print). Any other exception propagates."""

    def run(main: Callable[[], None], *argv: str, cwd: Path | None = None) -> str | int | None:
        monkeypatch.chdir(cwd or tmp_path)
        monkeypatch.setattr("sys.argv", [main.__module__, *argv])
        try:
            main()
        except SystemExit as exit:
            return exit.code
        return None

    return run


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach W&B's servers or write outside its own folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def compose_config(tmp_path: Path) -> Callable[..., object]:
    """``compose_config(*overrides, config_name="train")``: the config a user's command line gives,
    composed over the real ``conf/``, with outputs under the test's folder."""
    from hydra import compose, initialize_config_dir

    def compose_with(*overrides: str, config_name: str = "train", tiny: bool = True):
        base = [*TINY_RUN] if tiny and config_name == "train" else []
        paths = [f"paths.output_dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name, overrides=[*base, *paths, *overrides])

    return compose_with


# Pictures: checks that what a figure writes can be read (tests/viz/).
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


# Deployment (tests/test_export.py, tests/test_demo.py): a tiny classifier trained by the train
# command on generated photos of three foods, so its checkpoint stores an image folder's test split.
FOODS = ("pizza", "steak", "sushi")


def train_food_checkpoint(folder: Path, *overrides: str) -> Path:
    """``last.ckpt`` of a ``debug=tiny`` run (with ``overrides``) on ``folder/images``: train/ and
    test/ of 8 and 4 generated 32 x 40 photos per food (the photos' sides differ, as real ones do)."""
    from hydra import compose, initialize_config_dir

    from vitlab.train import train

    root = folder / "images"
    for split, count in (("train", 8), ("test", 4)):
        for label, food in enumerate(FOODS):
            for i in range(count):
                write_image(
                    root / split / food / f"{i}.jpg",
                    label,
                    32,
                    seed=(split == "test") * 1000 + label * 100 + i,
                )
    options = [
        *TINY_RUN,
        "data=imagefolder",
        f"data.root={root}",
        "data.val_fraction=0",
        "data.batch_size=8",
        "model.depth=1",
        "trainer.max_epochs=4",
        "optimizer.lr=3e-3",
        f"paths.output_dir={folder / 'run'}",
        f"paths.log_dir={folder / 'logs'}",
        *overrides,
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        train(compose("train", overrides=options))
    return folder / "run" / "checkpoints" / "last.ckpt"
