"""The export command: ``vitlab-export ckpt_path=... format=onnx|pt2|space out=... [quantize=dynamic]``.

An export is kept only when it is proven: the exported program's logits and PyTorch's are compared
on real images (the checkpoint's test split, or ``images=``) and the file is refused, and not left
behind, when they differ by more than ``atol + rtol * |PyTorch|``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig
from torch import Tensor

from vitlab.checkpoint import checkpoint_provenance, data_config_of, load_classifier
from vitlab.cli.command import command
from vitlab.cli.preprocessing import command_preprocessing
from vitlab.deploy import require
from vitlab.deploy.onnx import metadata
from vitlab.errors import ConfigError, ExistingFileError
from vitlab.models.preprocessing import Preprocessing, checkpoint_preprocessing
from vitlab.predict import image_files, prepared_batches
from vitlab.training.module import ViTClassifier

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2", "space")
SPACE_REQUIREMENTS = "numpy\npillow\nonnxruntime>=1.17\ngradio>=5\n"
Logits = Callable[[Tensor], Tensor]


def labelled_images(
    images: str | Sequence[str] | None, module: ViTClassifier, ckpt_path: str | Path
) -> tuple[list[Path], list[int | None]]:
    """The images to compare on (``images``, else the run's test split) and each one's class index
    where its folder names a class of the model (None otherwise)."""
    if images is None:
        data = data_config_of(module.hparams) or {}
        test = Path(data["root"]) / "test" if data.get("root") else None
        if test is None or not test.is_dir():
            raise ConfigError(
                f"ckpt_path={ckpt_path}: its run's data has no test/ folder of images "
                f"({test or 'no data.root stored'}) to compare the export on: pass images=[a.jpg,folder/]."
            )
        images = str(test)
    files = image_files(images)
    names = module.class_names
    return files, [names.index(f.parent.name) if f.parent.name in names else None for f in files]


def batched(logits: Logits, inputs: Tensor, batch_size: int) -> Tensor:
    with torch.inference_mode():
        return torch.cat([logits(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def check_parity(name: str, exported: Tensor, reference: Tensor, atol: float, rtol: float) -> None:
    """Log the largest logit difference; one line refusing the export where it exceeds the tolerance."""
    difference = (exported - reference).abs()
    worst = float(difference.max())
    log.info(
        "%s vs PyTorch on %d images: largest logit difference %.2e (atol=%g, rtol=%g)",
        name,
        len(reference),
        worst,
        atol,
        rtol,
    )
    if not bool((difference <= atol + rtol * reference.abs()).all()):
        raise ConfigError(
            f"the export is refused: {name}'s logits differ from PyTorch's by up to {worst:.2e}, beyond "
            f"atol={atol:g}, rtol={rtol:g}; loosen atol=/rtol= only if that difference is acceptable."
        )


def accuracy(logits: Tensor, labels: Sequence[int | None]) -> float | None:
    known = [(row, label) for row, label in zip(logits, labels, strict=True) if label is not None]
    if not known:
        return None
    return sum(int(row.argmax()) == label for row, label in known) / len(known)


@contextmanager
def written_on_success(out: Path) -> Iterator[Path]:
    """A path beside ``out`` to write to, moved to ``out`` when the block succeeds and removed when it
    fails, so a refused export leaves nothing behind."""
    if out.is_dir() and any(out.iterdir()):
        raise ExistingFileError(f"out={out} is a folder that holds files: give a new or empty folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        yield partial
        if out.is_dir():
            out.rmdir()
        partial.replace(out)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial)
        partial.unlink(missing_ok=True)


def export_onnx_checked(
    module: ViTClassifier,
    preprocessing: Preprocessing,
    path: Path,
    inputs: Tensor,
    reference: Tensor,
    cfg: DictConfig,
) -> Logits:
    """The ONNX file at ``path``, checked against ``reference``; returns its logits function."""
    from vitlab.deploy.onnx import OnnxClassifier, export_onnx

    try:
        export_onnx(
            module.model,
            path,
            module.image_size,
            metadata(
                module.class_names, module.image_size, preprocessing, checkpoint_provenance(cfg.ckpt_path)
            ),
        )
    except Exception as error:  # the exporter's own types: which option cannot be exported, and why
        raise ConfigError(
            f"{model_description(module)} cannot be exported to ONNX: {first_line(error)}"
        ) from None
    onnx_model = OnnxClassifier(path)
    check_parity(
        "ONNX Runtime (fp32)", batched(onnx_model, inputs, cfg.batch_size), reference, cfg.atol, cfg.rtol
    )
    return onnx_model


def model_description(module: ViTClassifier) -> str:
    options = {k: v for k, v in (module.hparams.get("model_options") or {}).items() if v is not None}
    return f"model={module.hparams['model_name']} ({', '.join(f'{k}={v}' for k, v in options.items())})"


def first_line(error: BaseException) -> str:
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"


def export_pt2(
    module: ViTClassifier,
    preprocessing: Preprocessing,
    path: Path,
    inputs: Tensor,
    reference: Tensor,
    cfg: DictConfig,
) -> None:
    """A ``torch.export`` program with a dynamic batch, its metadata in ``extra_files["vitlab.json"]``."""
    from vitlab.deploy.onnx import batch_example, dynamic_batch

    try:
        program = torch.export.export(
            module.model.eval(), batch_example(module.image_size), dynamic_shapes=dynamic_batch()
        )
    except Exception as error:
        raise ConfigError(
            f"{model_description(module)} cannot be exported by torch.export: {first_line(error)}"
        ) from None
    carried = metadata(
        module.class_names, module.image_size, preprocessing, checkpoint_provenance(cfg.ckpt_path)
    )
    with path.open("wb") as handle:
        torch.export.save(program, handle, extra_files={"vitlab.json": json.dumps(carried)})
    loaded = torch.export.load(path).module()
    check_parity("torch.export", batched(loaded, inputs, cfg.batch_size), reference, cfg.atol, cfg.rtol)


def export_space(
    module: ViTClassifier,
    preprocessing: Preprocessing,
    folder: Path,
    inputs: Tensor,
    reference: Tensor,
    cfg: DictConfig,
    files: Sequence[Path],
) -> None:
    """A folder that runs as ``python app.py`` with numpy, Pillow, onnxruntime and gradio only."""
    from vitlab.deploy import app

    folder.mkdir()
    export_onnx_checked(module, preprocessing, folder / app.MODEL, inputs, reference, cfg)
    shutil.copyfile(app.__file__, folder / "app.py")
    (folder / "requirements.txt").write_text(SPACE_REQUIREMENTS)
    sources = image_files(str(cfg.examples)) if cfg.examples is not None else files
    for class_name in module.class_names:
        chosen = [f for f in sources if f.parent.name == class_name][: cfg.examples_per_class]
        for file in chosen:
            (folder / app.EXAMPLES / class_name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, folder / app.EXAMPLES / class_name / file.name)


def export(cfg: DictConfig) -> Path:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not an export format: choose one of {', '.join(FORMATS)}.")
    if cfg.quantize not in (None, "dynamic") or (cfg.quantize and cfg.format != "onnx"):
        raise ConfigError(
            f"quantize={cfg.quantize} with format={cfg.format}: quantize=dynamic goes with format=onnx only (or leave it out)."
        )
    if cfg.format != "pt2":
        require("onnx", "onnxscript", "onnxruntime", purpose=f"vitlab-export format={cfg.format}")
    if cfg.format == "space":
        require("gradio", purpose="vitlab-export format=space")
    module = load_classifier(cfg.ckpt_path).eval()
    preprocessing = command_preprocessing(
        cfg,
        lambda options: checkpoint_preprocessing(cfg.ckpt_path, module.hparams, options),
        module.image_size,
        f"ckpt_path={cfg.ckpt_path}",
    )
    images = list(cfg.images) if isinstance(cfg.images, ListConfig) else cfg.images
    files, labels = labelled_images(images, module, cfg.ckpt_path)
    inputs = torch.cat(
        [batch for _, _, batch in prepared_batches(module, files, preprocessing, cfg.batch_size)]
    )
    reference = batched(module.model, inputs, cfg.batch_size)
    out = Path(cfg.out)
    with written_on_success(out) as partial:
        if cfg.format == "pt2":
            export_pt2(module, preprocessing, partial, inputs, reference, cfg)
        elif cfg.format == "space":
            export_space(module, preprocessing, partial, inputs, reference, cfg, files)
        elif cfg.quantize is None:
            export_onnx_checked(module, preprocessing, partial, inputs, reference, cfg)
        else:
            report_quantized(module, preprocessing, partial, inputs, reference, labels, cfg)
    size = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
    log.info("exported %s (%.1f MiB): %s", cfg.format, size / 2**20, out)
    return out


def report_quantized(
    module: ViTClassifier,
    preprocessing: Preprocessing,
    path: Path,
    inputs: Tensor,
    reference: Tensor,
    labels: Sequence[int | None],
    cfg: DictConfig,
) -> None:
    """The int8 model at ``path`` (from a checked fp32 export), its accuracy logged beside fp32's."""
    from vitlab.deploy.onnx import OnnxClassifier, quantize_dynamic

    fp32 = path.with_name(f"{path.name}.fp32.onnx")
    try:
        fp32_model = export_onnx_checked(module, preprocessing, fp32, inputs, reference, cfg)
        quantize_dynamic(fp32, path)
        fp32_logits = batched(fp32_model, inputs, cfg.batch_size)
    finally:
        fp32.unlink(missing_ok=True)
    int8_logits = batched(OnnxClassifier(path), inputs, cfg.batch_size)
    agree = float((int8_logits.argmax(-1) == fp32_logits.argmax(-1)).float().mean())
    fp32_acc, int8_acc = accuracy(fp32_logits, labels), accuracy(int8_logits, labels)
    shown = (
        "n/a (no image in a class folder)"
        if fp32_acc is None
        else f"fp32 {fp32_acc:.4f}, int8 {int8_acc:.4f}"
    )
    log.info(
        "accuracy on %d images: %s; int8 gives fp32's class for %.1f%% of them",
        len(inputs),
        shown,
        100 * agree,
    )


main = command("export", export)


if __name__ == "__main__":
    main()
