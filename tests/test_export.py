"""vitlab-export: ONNX (fp32 and int8) and torch.export files that carry their class names and
preprocessing, kept only when their logits match PyTorch's on the run's test images; vitlab-predict
runs the .onnx file with the same results as the checkpoint."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import FOODS, train_food_checkpoint

from vitlab.checkpoint import load_classifier, load_torch_file
from vitlab.export import main as export_main
from vitlab.predict import main as predict_main

onnx = pytest.importorskip("onnx", reason="the deploy extra is not installed: pip install -e '.[deploy]'")
ort = pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")

# The model options a checkpoint may hold, each exported by test_every_model_option_exports_with_parity.
OPTIONS = {
    "plain": [],
    "small_data_v2": [  # conf/ablation/combined.yaml's model options
        "model.tokenizer=shifted",
        "model.attention=lsa",
        "model.position_embedding=sincos2d",
        "model.pooling=seq",
    ],
    "conv_tokenizer_avg_pool": ["model.tokenizer=conv", "model.pooling=avg"],
    "hybrid": ["model=r50_vit_b16", "model.patch_size=16"],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain ViT whose preprocessing crops (crop_pct), trained on generated food photos."""
    return train_food_checkpoint(tmp_path_factory.mktemp("plain"), "preprocessing.crop_pct=0.875")


def test_onnx_file_alone_holds_classes_and_preprocessing_and_matches_pytorch(
    checkpoint, run_command, tmp_path, capsys
):
    out = tmp_path / "model.onnx"
    assert run_command(export_main, f"ckpt_path={checkpoint}", "format=onnx", f"out={out}") is None
    printed = capsys.readouterr().out
    assert "ONNX Runtime (fp32) vs PyTorch on 12 images: largest logit difference" in printed
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == ["model.onnx"]  # one file
    carried = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["vitlab"])
    assert carried["class_names"] == list(FOODS) and carried["image_size"] == 32
    assert carried["preprocessing"]["crop_pct"] == 0.875 and carried["resize"] == 36
    assert set(carried["preprocessing"]) == {"mean", "std", "interpolation", "crop_pct", "resize_size"}
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    module = load_classifier(checkpoint).eval()
    for batch in (1, 5):  # the batch dimension is dynamic
        images = torch.randn(batch, 3, 32, 32)
        (logits,) = session.run(None, {"images": images.numpy()})
        with torch.inference_mode():
            torch.testing.assert_close(torch.from_numpy(logits), module(images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "option",
    # the plain ViT in the quick tier; the hybrid's ResNet stem takes ~1 min
    [o if o == "plain" else pytest.param(o, marks=pytest.mark.slow) for o in OPTIONS],
)
def test_every_model_option_exports_with_parity(option, run_command, tmp_path, capsys):
    checkpoint = train_food_checkpoint(tmp_path, *OPTIONS[option], "trainer.max_epochs=1")
    out = tmp_path / f"{option}.onnx"
    assert run_command(export_main, f"ckpt_path={checkpoint}", f"out={out}") is None
    difference = next(line for line in capsys.readouterr().out.splitlines() if "logit difference" in line)
    print(f"{option}: {difference}")  # the parity of each option, for the record (pytest -s)
    assert out.is_file()


def test_an_export_outside_the_tolerance_is_refused_and_leaves_no_file(
    checkpoint, run_command, tmp_path, monkeypatch
):
    from vitlab.deploy.onnx import OnnxClassifier

    exact = OnnxClassifier.__call__
    monkeypatch.setattr(OnnxClassifier, "__call__", lambda self, images: exact(self, images) + 1e-3)
    out = tmp_path / "model.onnx"
    error = run_command(export_main, f"ckpt_path={checkpoint}", f"out={out}")
    assert error.startswith("error: the export is refused: ONNX Runtime (fp32)'s logits differ")
    assert "atol=0.0001, rtol=0.0001" in error and "\n" not in error
    assert list(tmp_path.iterdir()) == [tmp_path / "logs"]  # the command's log folder only


def test_pt2_program_loads_without_vitlab_and_carries_its_metadata(checkpoint, run_command, tmp_path):
    out = tmp_path / "model.pt2"
    assert run_command(export_main, f"ckpt_path={checkpoint}", "format=pt2", f"out={out}") is None
    extra = {"vitlab.json": ""}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra["vitlab.json"])["class_names"] == list(FOODS)
    images = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        expected = load_classifier(checkpoint).eval()(images)
        torch.testing.assert_close(program.module()(images), expected, atol=1e-4, rtol=1e-4)


def test_dynamic_quantization_writes_int8_with_metadata_and_reports_both_accuracies(
    checkpoint, run_command, tmp_path, capsys
):
    out = tmp_path / "int8.onnx"
    assert run_command(export_main, f"ckpt_path={checkpoint}", "quantize=dynamic", f"out={out}") is None
    printed = capsys.readouterr().out
    assert "accuracy on 12 images: fp32 " in printed and ", int8 " in printed
    model = onnx.load(out)
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in model.graph.node)
    assert json.loads({p.key: p.value for p in model.metadata_props}["vitlab"])["class_names"] == list(FOODS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "logs"]  # no fp32 file left


def test_predict_from_the_onnx_file_writes_the_checkpoints_predictions(checkpoint, run_command, tmp_path):
    out = tmp_path / "model.onnx"
    assert run_command(export_main, f"ckpt_path={checkpoint}", f"out={out}") is None
    photos = checkpoint.parents[2] / "images" / "test"
    tables = {}
    for name, model in (("ckpt", checkpoint), ("onnx", out)):
        argv = [
            f"ckpt_path={model}",
            f"images=[{photos}]",
            "grid=false",
            f"paths.output_dir={tmp_path / name}",
        ]
        assert run_command(predict_main, *argv) is None
        with open(tmp_path / name / "predictions.csv") as handle:
            tables[name] = list(csv.reader(handle))
    ckpt, exported = tables["ckpt"], tables["onnx"]
    assert ckpt[0] == exported[0] == ["image", "predicted", "probability", *FOODS]
    assert len(ckpt) == len(exported) == 13
    for ours, theirs in zip(ckpt[1:], exported[1:], strict=True):
        assert ours[:2] == theirs[:2]  # the same image, the same class
        assert [float(p) for p in ours[2:]] == pytest.approx([float(p) for p in theirs[2:]], abs=1e-4)
    # both results.json trace the predictions to the same training checkpoint's provenance
    trained_by = [
        json.loads((tmp_path / n / "results.json").read_text())["checkpoint"]["provenance"] for n in tables
    ]
    assert trained_by[0] == trained_by[1] == load_torch_file(checkpoint)["provenance"]


def test_an_onnx_file_not_from_vitlab_export_is_one_line(run_command, tmp_path):
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(
        torch.nn.Linear(2, 2).eval(), (torch.zeros(1, 2),), str(plain), dynamo=True, verbose=False
    )
    error = run_command(predict_main, f"ckpt_path={plain}", f"images=[{plain}]")
    assert error.startswith(f"error: ckpt_path={plain} is not an ONNX model written by vitlab-export")


def test_without_the_deploy_extra_export_says_what_to_install(checkpoint, run_command, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    error = run_command(export_main, f"ckpt_path={checkpoint}", f"out={tmp_path / 'model.onnx'}")
    assert error == (
        "error: vitlab-export format=onnx needs onnxscript, which is not installed: "
        'pip install -e ".[deploy]" (or pip install onnx onnxscript onnxruntime gradio).'
    )


def test_a_model_the_exporter_cannot_take_is_one_line_naming_its_options(
    checkpoint, run_command, tmp_path, monkeypatch
):
    def unsupported(*args, **kwargs):
        raise RuntimeError("no ONNX function for aten::made_up\nand a long traceback")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    error = run_command(export_main, f"ckpt_path={checkpoint}", f"out={tmp_path / 'model.onnx'}")
    assert error.startswith("error: model=vit_ti16 (") and "tokenizer=patch" in error and "\n" not in error
    assert error.endswith("cannot be exported to ONNX: RuntimeError: no ONNX function for aten::made_up")
    assert not (tmp_path / "model.onnx").exists()
