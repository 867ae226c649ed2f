"""The demo command: ``vitlab-demo ckpt_path=<.ckpt or .onnx> [port=7860] [host=127.0.0.1]``.

The page is ``vitlab.deploy.app``'s (the one a Space runs); here its predictions come from the
checkpoint (or the ONNX file) through vitlab's own preprocessing, as vitlab-predict's do, and a
checkpoint adds the attention rollout over the photo.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from vitlab.checkpoint import data_config_of
from vitlab.cli.command import command
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.data import eval_transform, load_image
from vitlab.deploy import load_predictor, require
from vitlab.models.preprocessing import checkpoint_preprocessing
from vitlab.predict import class_probabilities
from vitlab.training.module import ViTClassifier

if TYPE_CHECKING:
    import gradio as gr


def example_folder(cfg: DictConfig, hparams: dict) -> Path | None:
    """``examples=``, else the checkpoint's test split where its run read an image folder."""
    if cfg.examples is not None:
        return Path(cfg.examples)
    root = (data_config_of(hparams) or {}).get("root")
    return Path(root) / "test" if root else None


def demo_app(cfg: DictConfig) -> tuple[gr.Blocks, list[str]]:
    """The page for ``cfg.ckpt_path`` and its example files (to serve with ``app.launch``)."""
    require("gradio", purpose="vitlab-demo")
    from vitlab.deploy.app import build_demo, example_files

    predictor = load_predictor(cfg.ckpt_path)
    preprocessing = command_preprocessing(
        cfg,
        lambda options: checkpoint_preprocessing(cfg.ckpt_path, predictor.hparams, options),
        predictor.image_size,
        f"ckpt_path={cfg.ckpt_path}",
    )
    pipeline = eval_transform(predictor.image_size, preprocessing)
    names = predictor.class_names

    def classify(file: str) -> dict[str, float]:
        probabilities = class_probabilities(predictor, pipeline(load_image(file))[None])[0]
        return dict(zip(names, probabilities.tolist(), strict=True))

    def explain(file: str) -> np.ndarray:
        from vitlab.viz.attention import attention_overlays

        picture = pipeline.prepare(load_image(file))  # what the model sees: resized and cropped
        (overlay,) = attention_overlays(predictor.model, pipeline.augment(picture)[None], [picture])
        return (overlay.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    folder = example_folder(cfg, predictor.hparams)
    examples = example_files(folder, cfg.examples_per_class) if folder else []
    title = f"{' / '.join(names)}: {Path(cfg.ckpt_path).name}"
    return build_demo(
        classify, examples, title, explain if isinstance(predictor, ViTClassifier) else None
    ), examples


def demo(cfg: DictConfig) -> None:
    from vitlab.deploy.app import launch

    app, examples = demo_app(cfg)
    launch(app, examples, host=cfg.host, port=cfg.port)


main = command("demo", demo)


if __name__ == "__main__":
    main()
