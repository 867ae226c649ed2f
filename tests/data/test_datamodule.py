"""The image-folder datamodule: splits, bad input, cache, loaders, MixUp in a Trainer, configs."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import nn

from vitlab.data import ImageFolderDataModule, SyntheticDataModule, UnreadableImageError
from vitlab.data.datamodule import WARNING_SIGNALS, build_datamodule, init_worker
from vitlab.errors import ConfigError, DataError, MissingFileError
from vitlab.models.preprocessing import FROM_SCRATCH

CONF = Path(__file__).resolve().parents[2] / "conf"


def datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    defaults = {"image_size": 16, "num_workers": 0, "batch_size": 4, "val_fraction": 0.25}
    return ImageFolderDataModule(root, preprocessing=FROM_SCRATCH, **{**defaults, **kwargs})


def names(dataset) -> set[str]:
    return {f"{path.parent.name}/{path.name}" for path in dataset.load.paths}


def test_class_names_are_known_after_prepare_data_without_setup(make_image_folder):
    dm = datamodule(make_image_folder(classes=("sushi", "pizza", "steak")))
    dm.prepare_data()
    assert dm.class_names == ["pizza", "steak", "sushi"]
    assert dm.num_classes == 3
    assert not dm.datasets


def test_val_folder_is_used_when_present(make_image_folder):
    dm = datamodule(
        make_image_folder(n_per_class={"train": 3, "val": 2, "test": 1}, splits=("train", "val", "test"))
    )
    dm.setup("fit")
    assert {split: len(ds) for split, ds in dm.datasets.items()} == {"train": 9, "val": 6, "test": 3}


def test_val_fraction_holds_out_a_seeded_share_of_every_class(make_image_folder):
    root = make_image_folder(n_per_class={"train": 10, "test": 2})
    dm = datamodule(root, val_fraction=0.2, seed=1)
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) == 24 and len(val) == 6
    assert sorted(val.labels) == [0, 0, 1, 1, 2, 2]
    assert not names(train) & names(val)
    again = datamodule(root, val_fraction=0.2, seed=1)
    again.setup("fit")
    assert names(again.datasets["val"]) == names(val)
    other = datamodule(root, val_fraction=0.2, seed=2)
    other.setup("fit")
    assert names(other.datasets["val"]) != names(val)


def test_val_fraction_zero_validates_on_test_like_the_course(make_image_folder):
    dm = datamodule(make_image_folder(n_per_class={"train": 3, "test": 2}), val_fraction=0)
    dm.setup("fit")
    assert dm.datasets["val"] is dm.datasets["test"]
    assert len(dm.datasets["train"]) == 9


def test_a_val_fraction_that_holds_out_nothing_says_how_to_fix_it(make_image_folder):
    dm = datamodule(make_image_folder(n_per_class=1), val_fraction=0.1)
    with pytest.raises(ConfigError, match=r"holds out none: raise data.val_fraction"):
        dm.setup("fit")


def test_batches_have_image_size_float_images_and_int64_labels(make_image_folder):
    dm = datamodule(make_image_folder(), train_transform="basic", val_fraction=0)
    dm.setup("fit")
    assert not dm.soft_targets
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
        assert labels.shape == (4,) and labels.dtype == torch.int64


@pytest.mark.parametrize("preset", ["none", "basic"])
def test_the_cache_gives_the_same_tensors_as_decoding_each_time(make_image_folder, preset):
    root = make_image_folder(n_per_class=2, size=24)
    cached, fresh = (
        datamodule(root, cache=True, train_transform=preset),
        datamodule(root, train_transform=preset),
    )
    for dm in (cached, fresh):
        dm.setup("fit")
    assert cached.datasets["train"].cached is not None and fresh.datasets["train"].cached is None
    for split in ("train", "val", "test"):
        for index in range(len(fresh.datasets[split])):
            torch.manual_seed(index)  # the same random augmentation for both
            image, label = cached.datasets[split][index]
            torch.manual_seed(index)
            expected, expected_label = fresh.datasets[split][index]
            assert label == expected_label
            assert torch.equal(image, expected)


def test_missing_root_names_the_path_and_the_fix(tmp_path):
    dm = datamodule(tmp_path / "nowhere")
    dm.prepare_data()  # no url: nothing to download
    with pytest.raises(MissingFileError, match=r"data.root=.*nowhere does not exist.*set data.url"):
        dm.setup("fit")


def test_files_but_no_train_folder_under_root_is_a_data_error_not_a_download(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "pizza.jpg").write_bytes(b"x")
    dm = datamodule(tmp_path / "photos", url="http://127.0.0.1:9/never.zip")
    with pytest.raises(DataError, match=r"data.root=.*photos holds files but no train/ folder") as error:
        dm.prepare_data()
    assert "\n" not in str(error.value)


def test_missing_test_split_is_reported(make_image_folder):
    dm = datamodule(make_image_folder(splits=("train",)))
    with pytest.raises(MissingFileError, match=r"no folder .*images/test"):
        dm.setup("fit")


def test_an_empty_split_is_reported(make_image_folder):
    root = make_image_folder(splits=("train",))
    (root / "test").mkdir()
    with pytest.raises(DataError, match=r"images/test holds no class folders"):
        datamodule(root).setup("fit")


def test_an_empty_class_folder_is_reported(make_image_folder):
    root = make_image_folder()
    for image in (root / "test" / "steak").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"test/steak holds no images"):
        datamodule(root).setup("fit")


def test_a_class_that_test_has_and_train_lacks_is_one_line_naming_it_and_both_folders(make_image_folder):
    root = make_image_folder(classes=("pizza", "steak"), splits=("train",))
    make_image_folder(classes=("pizza", "steak", "sushi"), splits=("test",))
    with pytest.raises(DataError) as error:
        datamodule(root).setup("fit")
    message = str(error.value)
    assert "\n" not in message
    assert f"{root / 'test'} and {root / 'train'} hold different classes (only in test/: sushi)" in message
    assert "steak" not in message  # only the class that differs
    assert "give every split the same class folders" in message


def test_classes_missing_on_either_side_are_both_named(make_image_folder):
    root = make_image_folder(classes=("pizza", "steak"), splits=("train",))
    make_image_folder(classes=("pizza", "sushi"), splits=("test",))
    with pytest.raises(DataError, match=r"\(only in test/: sushi; only in train/: steak\)"):
        datamodule(root).setup("fit")


def not_image_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "(by extension)" in str(w.message)]


def test_files_that_are_not_images_are_skipped_with_one_warning_counting_them(make_image_folder):
    root = make_image_folder(n_per_class=2)
    (root / "train" / "pizza" / "notes.txt").write_text("bought at Luigi's")
    (root / "test" / "sushi" / "README.md").write_text("# sushi")
    for split in ("train", "test"):
        (root / split / "steak" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: skipped silently
    dm = datamodule(root, val_fraction=0)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    assert not_image_warnings(record) == [
        f"skipped 2 files that are not images (by extension) under {root}, e.g. train/pizza/notes.txt"
    ]
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["test"]) == 6


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("fake.jpg", b"not an image", "cannot identify image file"),
        ("cut.jpg", None, "truncated"),
    ],
)
def test_an_undecodable_image_is_a_one_line_data_error_naming_it_and_the_fix(
    make_image_folder, name, content, reason
):
    root = make_image_folder()
    bad = root / "train" / "pizza" / name
    bad.write_bytes(content or (root / "train" / "pizza" / "0.jpg").read_bytes()[:-100])
    with pytest.raises(UnreadableImageError) as error:
        datamodule(root).setup("fit")
    message = str(error.value)
    assert isinstance(error.value, DataError)
    assert message.startswith(f"cannot decode {bad} (") and reason in message
    assert "Delete or replace it, or set data.skip_corrupt=true" in message
    assert "\n" not in message


def test_several_undecodable_images_are_counted_and_the_first_named(make_image_folder):
    root = make_image_folder()
    for bad in ("train/sushi/x.jpg", "train/pizza/y.png", "test/steak/z.jpg"):
        (root / bad).write_bytes(b"not an image")
    with pytest.raises(
        DataError, match=r"^cannot decode 3 images, the first .*/test/steak/z\.jpg \("
    ) as error:
        datamodule(root).setup("fit")
    assert "Delete or replace them, or set data.skip_corrupt=true" in str(error.value)
    assert "\n" not in str(error.value)


def test_skip_corrupt_skips_undecodable_images_with_one_warning(make_image_folder):
    root = make_image_folder(n_per_class=3)
    (root / "train" / "pizza" / "notes.txt").write_text("x")  # not an image: its own warning
    (root / "test" / "sushi" / "fake.png").write_bytes(b"nope")
    (root / "train" / "steak" / "1.jpg").write_bytes((root / "train" / "steak" / "0.jpg").read_bytes()[:300])
    dm = datamodule(root, skip_corrupt=True, val_fraction=0, cache=True)
    with pytest.warns(UserWarning) as record:
        dm.setup("fit")
    messages = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert messages[0].startswith(
        f"skipped 2 unreadable images (corrupt, truncated or not an image) under {root}"
    )
    assert f"e.g. {root / 'test' / 'sushi' / 'fake.png'} (" in messages[0]
    assert len(not_image_warnings(record)) == 1
    assert len(dm.datasets["train"]) == 8 and len(dm.datasets["test"]) == 9
    assert len(dm.datasets["train"].cached) == 8


def test_dataloaders_before_setup_say_so(make_image_folder):
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        datamodule(make_image_folder()).train_dataloader()


class TargetProbe(L.LightningModule):
    """Records the targets each step receives (after the datamodule's batch transform)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.targets: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    def step(self, batch, stage: str) -> torch.Tensor:
        images, targets = batch
        self.targets[stage].append(targets)
        return nn.functional.cross_entropy(self.head(images.mean((2, 3))), targets)

    def training_step(self, batch, batch_idx):
        return self.step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_mixup_and_cutmix_give_soft_targets_in_training_only():
    dm = SyntheticDataModule(preprocessing=FROM_SCRATCH,
        num_classes=4, image_size=16, batch_size=8, num_workers=0, train_size=16, val_size=8, test_size=8,
        mixup_alpha=0.8, cutmix_alpha=1.0,
    )  # fmt: skip
    assert dm.soft_targets
    probe = TargetProbe(dm.num_classes)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(probe, datamodule=dm)
    train, val = probe.targets["train"], probe.targets["val"]
    assert len(train) == 2 and len(val) == 1
    assert all(t.shape == (8, 4) and t.dtype == torch.float32 for t in train)
    assert all(torch.allclose(t.sum(1), torch.ones(8)) for t in train)
    assert any((t.max(1).values < 1).any() for t in train)  # some targets really are mixed
    assert val[0].shape == (8,) and val[0].dtype == torch.int64


@pytest.mark.parametrize("config", ["foodvision_mini", "foodvision_mini_20", "imagefolder", "synthetic"])
def test_configs_instantiate_with_the_models_image_size(tmp_path, config):
    overrides = [f"+data={config}", "+model.image_size=48", f"+paths.data_dir={tmp_path}"]
    if config == "imagefolder":
        overrides.append(f"data.root={tmp_path}/mine")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=overrides)
    dm = build_datamodule(cfg.data, FROM_SCRATCH)
    assert dm.image_size == 48
    assert dm.num_workers >= 1 and dm.batch_size == 32
    if config != "synthetic":
        assert dm.root.parent == tmp_path
        assert (dm.url is None) == (config == "imagefolder")
        assert (dm.sha256 is None) == (config == "imagefolder")


@pytest.mark.parametrize("name", WARNING_SIGNALS)
def test_a_loader_worker_lives_through_slurms_warning_signal(name):
    # SLURM warns every process of a job, the loader workers too; a worker that died of it (or ran
    # submitit's handler, inherited from the training process, which requeues the job from scratch)
    # would end the run before the training process could checkpoint it.
    dm = SyntheticDataModule(preprocessing=FROM_SCRATCH,
        num_classes=2, image_size=8, batch_size=2, num_workers=1, train_size=32, val_size=2, test_size=2,
    )  # fmt: skip
    dm.setup()
    before = set(multiprocessing.active_children())
    batches = iter(dm.train_dataloader())
    next(batches)
    (worker,) = set(multiprocessing.active_children()) - before
    os.kill(worker.pid, getattr(signal, f"SIG{name}"))
    time.sleep(0.5)  # time for the signal to land (and, unhandled, for the training process to hear)
    assert len(list(batches)) == 15 and worker.is_alive()  # most batches asked for after the signal


def test_loader_workers_are_seeded_as_lightning_seeds_them(monkeypatch):
    # Lightning seeds the workers (seed_everything(workers=True)) only of loaders without a
    # worker_init_fn: the datamodule's keeps that seeding.
    loader = SyntheticDataModule(preprocessing=FROM_SCRATCH, num_workers=1, image_size=8)
    loader.setup()
    init = loader.train_dataloader().worker_init_fn
    assert init is not None
    previous = {name: signal.getsignal(getattr(signal, f"SIG{name}")) for name in WARNING_SIGNALS}
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    try:
        draws = []
        for seed_worker in (init, lambda worker_id: pl_worker_init_function(worker_id, rank=0)):
            torch.manual_seed(7)
            seed_worker(3)
            draws.append((random.random(), torch.rand(1).item()))
        assert draws[0] == draws[1]
        monkeypatch.setenv("PL_SEED_WORKERS", "0")  # seed_everything without workers=True: no seeding
        torch.manual_seed(7)
        state = random.getstate()
        init_worker(3)
        assert random.getstate() == state and torch.initial_seed() == 7
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, f"SIG{name}"), handler)
