"""ONNX: a classifier exported with ``torch.onnx.export`` (dynamo) into one file whose
``metadata_props`` hold its class names and preprocessing as JSON, so the file alone predicts;
ONNX Runtime runs it, and its dynamic int8 quantisation shrinks it.

The graph takes the normalised float images ``[N, 3, S, S]`` (any N) and gives logits ``[N, C]``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vitlab.data.transforms import resize_size_for
from vitlab.errors import ConfigError, MissingFileError
from vitlab.models.preprocessing import Preprocessing

METADATA_KEY = "vitlab"  # the one metadata_props entry: JSON of ``metadata()``
INPUT, OUTPUT = "images", "logits"


def metadata(
    class_names: list[str],
    image_size: int,
    preprocessing: Preprocessing,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a predictor needs besides the graph, and ``provenance``: the training checkpoint's.
    ``resize`` is the shorter side before the centre crop (None: a plain resize to the square),
    resolved here so that readers need no vitlab."""
    from vitlab.checkpoint import stored_preprocessing

    crop = preprocessing.crop_pct is not None or preprocessing.resize_size is not None
    return {
        "class_names": list(class_names),
        "image_size": image_size,
        "preprocessing": stored_preprocessing(preprocessing),
        "resize": resize_size_for(image_size, preprocessing.resize_size, preprocessing.crop_pct)
        if crop
        else None,
        "provenance": dict(provenance) if provenance is not None else None,
    }


def batch_example(image_size: int) -> tuple[Tensor]:
    """The example input of an export: a batch of two, as one would make the batch dimension a constant."""
    return (torch.zeros(2, 3, image_size, image_size),)


def dynamic_batch() -> tuple[dict[int, torch.export.Dim]]:
    return ({0: torch.export.Dim("batch", min=1)},)


def export_onnx(model: nn.Module, path: Path, image_size: int, carried: Mapping[str, Any]) -> None:
    """``model`` (in evaluation mode) as one ONNX file at ``path``, ``carried`` in its metadata."""
    import onnx

    torch.onnx.export(
        model.eval(),
        batch_example(image_size),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes=dynamic_batch(),
        dynamo=True,
        external_data=False,  # the weights inside the one file
        optimize=True,
        verbose=False,
    )
    stamp(onnx.load(str(path)), path, carried)


def stamp(model: Any, path: Path, carried: Mapping[str, Any]) -> None:
    """Write the ONNX ``model`` to ``path`` with ``carried`` as its metadata (replacing any)."""
    import onnx

    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {p.key: p.value for p in kept} | {METADATA_KEY: json.dumps(carried)})
    onnx.save(model, str(path))


def quantize_dynamic(source: Path, path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of ``source``'s MatMul and Gemm weights (activations
    quantised per batch at run time), written to ``path`` with ``source``'s metadata. The graph's
    shapes are inferred first (ONNX Runtime's pre-processing), as its quantiser asks."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        inferred = Path(folder) / "inferred.onnx"
        quant_pre_process(source, inferred)
        quantize(inferred, path, op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    carried = json.loads(
        next(p.value for p in onnx.load(str(source)).metadata_props if p.key == METADATA_KEY)
    )
    stamp(onnx.load(str(path)), path, carried)


class OnnxClassifier:
    """An exported classifier run by ONNX Runtime on the CPU, with the parts of ``ViTClassifier``
    that predicting uses (``class_names``, ``image_size``, ``hparams["preprocessing"]``, ``eval()``,
    ``device``, and logits from a call), so predict and demo take either."""

    device = torch.device("cpu")

    def __init__(self, path: Path, threads: int | None = None) -> None:
        """``threads``: ONNX Runtime's intra-op threads (None: its default, the physical cores)."""
        import onnxruntime as ort

        if not path.is_file():
            raise MissingFileError(
                f"ckpt_path={path}: no such file. vitlab-export writes .onnx files (out=...)."
            )
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or 0
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            carried = json.loads(self.session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        except Exception as error:  # onnxruntime raises its own types for a file it cannot read
            raise ConfigError(
                f"ckpt_path={path} is not an ONNX model written by vitlab-export ({type(error).__name__}): "
                "export one with vitlab-export ckpt_path=<.ckpt> out=<file.onnx>."
            ) from None
        self.class_names: list[str] = carried["class_names"]
        self.image_size: int = carried["image_size"]
        self.hparams = {"class_names": self.class_names, "preprocessing": carried["preprocessing"]}
        self.provenance: dict[str, Any] | None = carried.get("provenance")  # the checkpoint's

    def eval(self) -> OnnxClassifier:
        return self

    def __call__(self, images: Tensor) -> Tensor:
        inputs = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: inputs})[0])
