"""The analyze command, the paper's Figure 7: ``vitlab-analyze images=photos/ model.pretrained=...``."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig, ListConfig, OmegaConf

from vitlab.cli.command import command
from vitlab.cli.inspected_model import load_inspected_model, resolve_device
from vitlab.data import load_image
from vitlab.errors import ConfigError
from vitlab.loggers import build_loggers
from vitlab.predict import image_files
from vitlab.provenance import Provenance, hydra_overrides
from vitlab.viz.figure7 import (
    embedding_filter_components,
    mean_attention_distance,
    plot_attention_distance,
    plot_embedding_filters,
    plot_position_similarity,
    position_similarity,
)

log = logging.getLogger(__name__)

FIGURES = ("filters", "position_similarity", "attention_distance")


def sample_images(sources: str | Sequence[str], count: int, seed: int) -> list[Path]:
    """At most ``count`` of the images found, a seeded sample (so every class of a folder appears)."""
    files = image_files(sources)
    return sorted(random.Random(seed).sample(files, count)) if len(files) > count else files


def log_pictures(loggers: Sequence[Logger], pictures: dict[str, Path]) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for name, path in pictures.items():
                logger.log_image(key=f"figure7/{name}", images=[str(path)])


def analyze(cfg: DictConfig) -> dict:
    """Draw the requested Figure 7 panels for the configured model; returns what results.json holds."""
    unknown = [name for name in cfg.figures if name not in FIGURES]
    if unknown:
        raise ConfigError(f"figures={list(cfg.figures)}: unknown {unknown}; choose from {list(FIGURES)}.")
    if "attention_distance" in cfg.figures and not cfg.images:
        raise ConfigError(
            "images=null: the attention distance is averaged over images; pass images=path/to/folder "
            "(or leave attention_distance out of figures)."
        )
    provenance = Provenance(cfg.get("seed"), hydra_overrides())
    model, transform = load_inspected_model(cfg)
    device = resolve_device(cfg.device)
    model.to(device)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, Path] = {}
    results: dict = {"model": cfg.model.name, "ckpt_path": cfg.ckpt_path, "pretrained": cfg.model.pretrained}

    def save(name: str, figure: Figure) -> None:
        pictures[name] = output_dir / f"{name}.png"
        figure.savefig(pictures[name])
        log.info("%s: %s", name, pictures[name])

    if "filters" in cfg.figures:
        try:
            components = embedding_filter_components(model.cpu(), cfg.components)
        except ValueError as error:
            raise ConfigError(
                f"figures contains filters, but {error} Leave it out: "
                "figures=[position_similarity,attention_distance]."
            ) from None
        save("embedding_filters", plot_embedding_filters(components))
        model.to(device)
    if "position_similarity" in cfg.figures:
        save(
            "position_similarity",
            plot_position_similarity(position_similarity(model.position_embedding.cpu())),
        )
    if "attention_distance" in cfg.figures:
        images = list(cfg.images) if isinstance(cfg.images, ListConfig) else str(cfg.images)
        files = sample_images(images, cfg.num_images, cfg.seed)
        per_image = []
        for start in range(0, len(files), cfg.batch_size):
            batch = torch.stack([transform(load_image(f)) for f in files[start : start + cfg.batch_size]])
            maps = model.attention_maps(batch.to(device))
            per_image.append(mean_attention_distance(maps, model.patch_size).cpu())
        distances = torch.cat(per_image).mean(dim=0)  # [L, H]
        save("attention_distance", plot_attention_distance(distances, model.image_size))
        results |= {"num_images": len(files), "mean_attention_distance": distances.tolist()}
    results["pictures"] = {name: str(path) for name, path in pictures.items()}
    results["provenance"] = provenance.record()
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    loggers = build_loggers(
        cfg.get("logger"),
        run_name=f"analyze {cfg.model.name}",
        group=None,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    log_pictures(loggers, pictures)
    return results


main = command("analyze", analyze)


if __name__ == "__main__":
    main()
