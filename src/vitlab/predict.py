"""The predict command: ``vitlab-predict ckpt_path=... images=[a.jpg,photos/] [preprocessing.x=...]``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from rich.table import Table
from torchvision.datasets.folder import IMG_EXTENSIONS

from vitlab.cli.command import command
from vitlab.cli.output import console
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.data import eval_transform, load_image
from vitlab.deploy import load_predictor, predictor_provenance
from vitlab.errors import DataError, MissingFileError
from vitlab.models.preprocessing import Preprocessing, checkpoint_preprocessing
from vitlab.per_image import write_predictions
from vitlab.provenance import Provenance, files_fingerprint, hydra_overrides
from vitlab.training.module import ViTClassifier

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.csv"


def image_files(sources: str | Sequence[str]) -> list[Path]:
    """Files as given, and the image files found (recursively) in folders, in a stable order; in a
    folder, files that are not images by their extension are passed over, as torchvision does."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
            if not found:
                raise DataError(
                    f"images={source}: the folder holds no image files ({', '.join(IMG_EXTENSIONS)})."
                )
            files += found
        elif source.suffix.lower() in IMG_EXTENSIONS and source.is_file():
            files.append(source)
        elif source.is_file():
            raise DataError(
                f"images={source} is not an image file (by its extension; images are "
                f"{', '.join(IMG_EXTENSIONS)}): leave it out, or pass the folder it is in."
            )
        else:
            raise MissingFileError(
                f"images={source}: no such file or folder. Pass image files or folders: images=[a.jpg,dir/]."
            )
    return files


def prepared_batches(
    module: ViTClassifier, files: Sequence[Path], preprocessing: Preprocessing, batch_size: int = 32
) -> Iterator[tuple[Sequence[Path], list[torch.Tensor], torch.Tensor]]:
    """``(files, pictures, inputs)`` per batch, each image prepared by ``preprocessing`` at the
    model's size: ``pictures`` resized and cropped (uint8 ``[3, S, S]``, for display), ``inputs``
    normalised."""
    pipeline = eval_transform(module.image_size, preprocessing)
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        pictures = [pipeline.prepare(load_image(file)) for file in batch]
        yield batch, pictures, torch.stack([pipeline.augment(picture) for picture in pictures])


@torch.inference_mode()
def class_probabilities(module: ViTClassifier, inputs: torch.Tensor) -> torch.Tensor:
    """``[B, num_classes]`` on the CPU, from the model in evaluation mode."""
    module.eval()
    return module(inputs.to(module.device)).softmax(-1).float().cpu()


def predict_files(
    module: ViTClassifier, files: Sequence[Path], preprocessing: Preprocessing, batch_size: int = 32
) -> torch.Tensor:
    """Class probabilities ``[len(files), num_classes]`` of images prepared by ``preprocessing``."""
    batches = prepared_batches(module, files, preprocessing, batch_size)
    return torch.cat([class_probabilities(module, inputs) for _, _, inputs in batches])


def print_predictions(
    files: Sequence[Path], probabilities: torch.Tensor, class_names: Sequence[str], top_k: int
) -> None:
    table = Table(title="predictions")
    table.add_column("image")
    for rank in range(1, top_k + 1):
        table.add_column(f"#{rank}")
    values, indices = probabilities.topk(top_k, dim=-1)
    for file, top_values, top_indices in zip(files, values, indices, strict=True):
        table.add_row(
            str(file), *[f"{class_names[i]} {v:.3f}" for v, i in zip(top_values, top_indices, strict=True)]
        )
    console().print(table)


def predict(cfg: DictConfig) -> torch.Tensor:
    overrides = hydra_overrides()
    provenance = Provenance(None, overrides)
    module = load_predictor(cfg.ckpt_path)  # a checkpoint, or an exported .onnx (ONNX Runtime)
    images = list(cfg.images) if isinstance(cfg.images, ListConfig) else str(cfg.images)
    files = image_files(images)
    preprocessing = command_preprocessing(
        cfg,
        lambda options: checkpoint_preprocessing(cfg.ckpt_path, module.hparams, options),
        module.image_size,
        f"ckpt_path={cfg.ckpt_path}",
    )
    probabilities = predict_files(module, files, preprocessing, cfg.batch_size)
    class_names = module.class_names
    print_predictions(files, probabilities, class_names, min(cfg.top_k, len(class_names)))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(output_dir / PREDICTIONS, files, probabilities, class_names)
    results = {
        "checkpoint": {"path": str(cfg.ckpt_path), "provenance": predictor_provenance(module, cfg.ckpt_path)},
        "class_names": class_names,
        "images": len(files),
        "predictions": PREDICTIONS,
        "provenance": provenance.record(
            {"images": {"images": len(files), "fingerprint": files_fingerprint(files)}}
        ),
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    if cfg.grid:
        from vitlab.viz.predictions import save_prediction_grid

        shown = files[: cfg.grid_max_images]
        true_labels = [
            class_names.index(f.parent.name)
            if cfg.labels_from_folders and f.parent.name in class_names
            else None
            for f in shown
        ]
        grid_path = output_dir / "predictions.png"
        save_prediction_grid(
            [load_image(f) for f in shown],
            probabilities[: len(shown)],
            class_names,
            grid_path,
            true_labels=true_labels,
            total=len(files),
        )
        log.info("prediction grid: %s", grid_path)
    log.info("predictions table: %s", output_dir / PREDICTIONS)
    return probabilities


main = command("predict", predict)


if __name__ == "__main__":
    main()
