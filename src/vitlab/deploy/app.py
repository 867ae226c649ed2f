"""A photo classifier in the browser: drop a photo, see its top classes with their probabilities and
how long the prediction took, with example photos one click away.

This file runs on its own, as ``python app.py`` (or a Hugging Face Space's ``app.py``), beside the
``model.onnx`` and ``examples/`` that ``vitlab-export format=space`` writes: it needs numpy, Pillow,
onnxruntime and gradio only, never torch or vitlab. ``vitlab-demo`` builds the same page
(``build_demo``) around a checkpoint, with the attention rollout besides.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

HERE = Path(__file__).resolve().parent
MODEL, EXAMPLES = "model.onnx", "examples"
METADATA_KEY, INPUT = "vitlab", "images"  # as vitlab.deploy.onnx writes them
Classify = Callable[[str], dict[str, float]]  # image file -> probability per class
Explain = Callable[[str], np.ndarray]  # image file -> a picture (H, W, 3) to show


class OnnxModel:
    """The exported model and the preprocessing its metadata holds, in numpy and Pillow (the same
    sizes and crop as vitlab's torchvision transform; resampling may differ by a pixel level)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        carried = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        self.class_names: list[str] = carried["class_names"]
        self.image_size: int = carried["image_size"]
        self.resize: int | None = carried["resize"]
        stored = carried["preprocessing"]
        self.mean = np.array(stored["mean"], dtype=np.float32)[:, None, None]
        self.std = np.array(stored["std"], dtype=np.float32)[:, None, None]
        self.resample = Image.Resampling[stored["interpolation"].upper()]

    def prepare(self, image: Image.Image) -> np.ndarray:
        """RGB image -> normalised float32 ``[3, S, S]``: a square resize, or the shorter side to
        ``resize`` then a centre crop (torchvision's rounding)."""
        size = self.image_size
        if self.resize is None:
            image = image.resize((size, size), self.resample)
        else:
            width, height = image.size
            short, long = sorted((width, height))
            other = int(self.resize * long / short)
            image = image.resize(
                (self.resize, other) if width <= height else (other, self.resize), self.resample
            )
            left = round((image.width - size) / 2.0)
            top = round((image.height - size) / 2.0)
            image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (pixels - self.mean) / self.std

    def probabilities(self, file: str) -> dict[str, float]:
        inputs = self.prepare(open_image(file))[None]
        logits = self.session.run(None, {INPUT: inputs})[0][0].astype(np.float64)
        exp = np.exp(logits - logits.max())
        return dict(zip(self.class_names, (exp / exp.sum()).tolist(), strict=True))


def open_image(file: str) -> Image.Image:
    """The file as an RGB image, or a message in the page (the app keeps serving) for anything else."""
    try:
        with Image.open(file) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError):
        raise gr.Error(
            f"{Path(file).name} is not an image this app can read: drop a JPEG or PNG photo."
        ) from None


def payload_file(payload: Any) -> str | None:
    """The uploaded file's path from the event's raw payload (taken unprocessed, so that a file that
    is not an image reaches ``open_image`` and its message)."""
    if payload is None:
        return None
    return payload["path"] if isinstance(payload, dict) else getattr(payload, "path", None)


def example_files(folder: Path, per_class: int = 3) -> list[str]:
    """Up to ``per_class`` images from each class folder under ``folder``, in name order."""
    if not folder.is_dir():
        return []
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    return [str(f) for c in classes for f in sorted(p for p in c.iterdir() if p.is_file())[:per_class]]


def build_demo(
    classify: Classify, examples: Sequence[str], title: str, explain: Explain | None = None
) -> gr.Blocks:
    """The page. Its one endpoint, ``predict`` (one image in, one ``gr.Label`` out), is what
    ``gradio_client`` calls; the time taken and the rollout are steps chained after it."""
    taken: dict[str, float] = {}  # seconds of each session's last prediction

    def predict(payload: Any, request: gr.Request) -> dict[str, float] | None:
        file = payload_file(payload)
        if file is None:
            return None
        open_image(file)  # a clear message for a file that is not an image
        start = time.perf_counter()
        probabilities = classify(file)
        taken[request.session_hash or ""] = time.perf_counter() - start
        return probabilities

    def timing(request: gr.Request) -> str:
        seconds = taken.pop(request.session_hash or "", None)
        return "" if seconds is None else f"Prediction took {seconds:.3f} s."

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nDrop a photo, or click an example below.")
        with gr.Row():
            image = gr.Image(type="filepath", label="photo", sources=["upload", "clipboard"])
            with gr.Column():
                label = gr.Label(num_top_classes=3, label="prediction")
                seconds = gr.Markdown(elem_id="timing")
        rollout = gr.Image(label="attention rollout", interactive=False, visible=explain is not None)
        if examples:
            gr.Examples(examples=list(examples), inputs=image, label="examples")
        event = image.change(predict, inputs=image, outputs=label, api_name="predict", preprocess=False)
        event = event.then(timing, outputs=seconds, api_name=False)
        if explain is not None:

            def show_rollout(payload: Any) -> np.ndarray | None:
                file = payload_file(payload)
                try:
                    return None if file is None else explain(file)
                except gr.Error:  # already said by predict
                    return None

            event.then(show_rollout, inputs=image, outputs=rollout, preprocess=False, api_name=False)
    return demo


@cache
def model() -> OnnxModel:
    return OnnxModel(HERE / MODEL)


def predict(file: str) -> dict[str, float]:
    """The probability of each class for an image file, by the model beside this file."""
    return model().probabilities(file)


def launch(
    demo: gr.Blocks, examples: Sequence[str], host: str = "127.0.0.1", port: int | None = None, **options: Any
) -> Any:
    """Serve ``demo`` on this machine only by default, with no share link, no server-side rendering
    (no Node process) and the examples' folders readable."""
    folders = sorted({str(Path(f).resolve().parent) for f in examples})
    return demo.launch(
        server_name=host, server_port=port, share=False, ssr_mode=False, allowed_paths=folders, **options
    )


def main() -> None:
    examples = example_files(HERE / EXAMPLES)
    demo = build_demo(predict, examples, title=f"{', '.join(model().class_names)}?")
    launch(demo, examples, host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))  # a Space sets it


if __name__ == "__main__":
    main()
