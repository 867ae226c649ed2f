"""Pretrained weights: every format gives the logits its reference implementation gives."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from test_errors import closed_port
from timm.layers import resample_abs_pos_embed
from timm.models import vision_transformer as timm_vit
from torch import Tensor, nn
from torchvision.models import ViT_B_16_Weights
from torchvision.models import vision_transformer as torchvision_vit

from vitlab.errors import NetworkError
from vitlab.models import create_model
from vitlab.models.weights import (
    from_timm,
    from_torchvision,
    load_pretrained,
    read_checkpoint,
    resize_position_embedding,
    to_timm,
    to_torchvision,
)

# One tiny architecture, spelt in each library's words.
TINY = {
    "image_size": 32,
    "patch_size": 8,
    "depth": 2,
    "dim": 64,
    "mlp_dim": 128,
    "heads": 2,
    "num_classes": 5,
}


def tiny_vit(**overrides: object) -> nn.Module:
    return create_model("vit_b16", **{**TINY, **overrides}).eval()


def tiny_torchvision(representation_size: int | None = None) -> nn.Module:
    return torchvision_vit.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=5,
        representation_size=representation_size,
    ).eval()


def tiny_timm(image_size: int = 32) -> nn.Module:
    return timm_vit.VisionTransformer(
        img_size=image_size, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5
    ).eval()


@torch.no_grad()
def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and float buffer random (heads and LayerNorms too), scaled so logits are O(1):
    a wrong layout then changes them by far more than the tolerance."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        std = tensor[0].numel() ** -0.5 if tensor.ndim > 1 else 0.5
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)
        if name.endswith("running_var"):
            tensor.abs_().add_(0.5)
    return module


def images(size: int = 32, batch: int = 2) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def assert_same_logits(ours: nn.Module, reference: nn.Module, size: int = 32, batch: int = 2) -> None:
    x = images(size, batch)
    expected, actual = reference.eval()(x), ours.eval()(x)
    scale = max(1.0, expected.abs().max().item())
    assert expected.abs().max() > 0.1, "logits too small for the comparison to mean anything"
    assert (actual - expected).abs().max().item() <= 1e-4 * scale


def save(state_dict: dict[str, Tensor], path: Path) -> Path:
    torch.save(state_dict, path)
    return path


def jax_arrays(representation_size: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """A random checkpoint in the layout of google-research/vision_transformer's ViT-B_16.npz."""
    rng = np.random.default_rng(seed)
    dim, heads, mlp_dim, patch, tokens = 64, 2, 128, 8, 17

    def random(*shape: int, fan_in: int = 4) -> np.ndarray:
        return (rng.standard_normal(shape) * fan_in**-0.5).astype(np.float32)

    arrays = {
        "embedding/kernel": random(patch, patch, 3, dim, fan_in=patch * patch * 3),
        "embedding/bias": random(dim),
        "cls": random(1, 1, dim),
        "Transformer/posembed_input/pos_embedding": random(1, tokens, dim),
        "Transformer/encoder_norm/scale": random(dim),
        "Transformer/encoder_norm/bias": random(dim),
        "head/kernel": random(representation_size or dim, 5, fan_in=dim),
        "head/bias": random(5),
    }
    if representation_size:
        arrays |= {"pre_logits/kernel": random(dim, representation_size, fan_in=dim)}
        arrays |= {"pre_logits/bias": random(representation_size)}
    for i in range(2):
        block = f"Transformer/encoderblock_{i}/"
        attention = f"{block}MultiHeadDotProductAttention_1/"
        for name in ("query", "key", "value"):
            arrays[f"{attention}{name}/kernel"] = random(dim, heads, dim // heads, fan_in=dim)
            arrays[f"{attention}{name}/bias"] = random(heads, dim // heads)
        arrays[f"{attention}out/kernel"] = random(heads, dim // heads, dim, fan_in=dim)
        arrays[f"{attention}out/bias"] = random(dim)
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            arrays[f"{block}{norm}/scale"] = random(dim)
            arrays[f"{block}{norm}/bias"] = random(dim)
        arrays[f"{block}MlpBlock_3/Dense_0/kernel"] = random(dim, mlp_dim, fan_in=dim)
        arrays[f"{block}MlpBlock_3/Dense_0/bias"] = random(mlp_dim)
        arrays[f"{block}MlpBlock_3/Dense_1/kernel"] = random(mlp_dim, dim, fan_in=mlp_dim)
        arrays[f"{block}MlpBlock_3/Dense_1/bias"] = random(dim)
    return arrays


@pytest.mark.parametrize("variant", ["plain", "pre_logits", "legacy_mlp_names"])
def test_torchvision_checkpoint_gives_torchvision_logits(variant: str, tmp_path: Path) -> None:
    representation_size = 16 if variant == "pre_logits" else None
    reference = randomise(tiny_torchvision(representation_size))
    state_dict = reference.state_dict()
    if variant == "legacy_mlp_names":  # torchvision < 0.14 files
        state_dict = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
                      for k, v in state_dict.items()}  # fmt: skip
    path = save(state_dict, tmp_path / "torchvision.pth")
    model = tiny_vit(representation_size=representation_size)
    load_pretrained(model, path)
    assert_same_logits(model, reference)


def test_timm_checkpoint_gives_timm_logits(tmp_path: Path) -> None:
    reference = randomise(tiny_timm())
    model = create_model("vit_b16", pretrained=save(reference.state_dict(), tmp_path / "timm.pth"), **TINY)
    assert_same_logits(model, reference)


def test_jax_npz_gives_the_logits_of_timm_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "ViT-tiny.npz"
    np.savez(path, **jax_arrays())
    reference = tiny_timm()
    timm_vit._load_weights(reference, str(path))
    assert_same_logits(create_model("vit_b16", pretrained=path, **TINY), reference)


def test_jax_npz_pre_logits_layer_is_loaded_as_the_transposed_kernel(tmp_path: Path) -> None:
    arrays = jax_arrays(representation_size=16)
    path = tmp_path / "with-pre-logits.npz"
    np.savez(path, **arrays)
    model = create_model("vit_b16", pretrained=path, **TINY, representation_size=16)
    torch.testing.assert_close(model.pre_logits[0].weight, torch.from_numpy(arrays["pre_logits/kernel"]).T)
    torch.testing.assert_close(model.head.weight, torch.from_numpy(arrays["head/kernel"]).T)


@pytest.mark.parametrize(
    ("to_format", "from_format", "reference"),
    [
        (to_torchvision, from_torchvision, lambda: tiny_torchvision(representation_size=16)),
        (to_timm, from_timm, tiny_timm),
    ],
    ids=["torchvision", "timm"],
)
def test_converters_round_trip_and_give_the_reference_our_logits(to_format, from_format, reference) -> None:
    has_pre_logits = to_format is to_torchvision  # timm 1.0 has no pre-logits layer
    ours = randomise(tiny_vit(representation_size=16 if has_pre_logits else None))
    state_dict = ours.state_dict()
    round_trip = from_format(to_format(state_dict))
    assert list(round_trip) == list(state_dict)
    assert all(torch.equal(round_trip[key], value) for key, value in state_dict.items())
    reference = reference()
    reference.load_state_dict(to_format(state_dict), strict=True)
    assert_same_logits(reference, ours)


@pytest.mark.parametrize(
    ("old", "new", "mode", "antialias"),
    [(4, (6, 6), "bicubic", True), (4, (3, 5), "bicubic", True), (6, (4, 4), "bicubic", True),
     (4, (6, 6), "bilinear", False)],
)  # fmt: skip
def test_resize_position_embedding_matches_timm(
    old: int, new: tuple[int, int], mode: str, antialias: bool
) -> None:
    pos_embed = torch.randn(1, 1 + old * old, 16, generator=torch.Generator().manual_seed(0))
    resized = resize_position_embedding(pos_embed, new, mode=mode, antialias=antialias)
    expected = resample_abs_pos_embed(pos_embed, list(new), interpolation=mode, antialias=antialias)
    assert resized.shape == (1, 1 + new[0] * new[1], 16)
    assert torch.equal(resized[:, 0], pos_embed[:, 0])
    assert (resized - expected).abs().max() <= 1e-5


def test_resize_position_embedding_rejects_a_grid_that_is_not_square() -> None:
    with pytest.raises(ValueError, match=r"\[1, 13, 8\].*square"):
        resize_position_embedding(torch.zeros(1, 13, 8), (4, 4))


def test_larger_image_size_resizes_position_embedding_as_timm_does(tmp_path: Path) -> None:
    state_dict = randomise(tiny_timm(image_size=32)).state_dict()
    model = create_model(
        "vit_b16", pretrained=save(state_dict, tmp_path / "32px.pth"), **{**TINY, "image_size": 48}
    )
    expected = resample_abs_pos_embed(state_dict["pos_embed"], [6, 6])
    assert (model.position_embedding - expected).abs().max() <= 1e-5
    reference = tiny_timm(image_size=48)
    reference.load_state_dict(timm_vit.checkpoint_filter_fn(state_dict, reference))
    assert_same_logits(model, reference, size=48)


@pytest.mark.parametrize("wrap", ["lightning", "model_key", "backbone_prefix"])
def test_wrapped_state_dicts_load(wrap: str, tmp_path: Path) -> None:
    reference = randomise(tiny_timm())
    state_dict = reference.state_dict()
    wrapped = {
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state_dict.items()}, "epoch": 3},
        "model_key": {"model": state_dict},
        "backbone_prefix": {f"backbone.{k}": v for k, v in state_dict.items()},
    }[wrap]
    assert_same_logits(
        create_model("vit_b16", pretrained=save(wrapped, tmp_path / "w.ckpt"), **TINY), reference
    )


def test_misfitting_checkpoint_error_names_missing_unexpected_and_misshaped_keys(tmp_path: Path) -> None:
    state_dict = timm_vit.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=5
    ).state_dict()
    del state_dict["norm.bias"]
    path = save(state_dict, tmp_path / "deeper.pth")
    with pytest.raises(ValueError) as error:
        create_model("vit_b16", pretrained=path, **{**TINY, "mlp_dim": 256})
    message = str(error.value)
    assert str(path) in message
    assert "missing (1): norm.bias" in message
    assert "unexpected (12): blocks.2." in message
    assert "blocks.0.mlp.fc1.weight (checkpoint [128, 64], model [256, 64])" in message
    assert "create_model('vit_b8', depth=3, dim=64, mlp_dim=128, image_size=32, num_classes=5)" in message


def test_unknown_formats_name_the_file_and_the_supported_formats(tmp_path: Path) -> None:
    torch_file = save({"conv.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    npz_file = tmp_path / "other.npz"
    np.savez(npz_file, w=np.zeros(1))
    for path in (torch_file, npz_file):
        with pytest.raises(
            ValueError, match=rf"{path.name}: cannot tell.*Supported: .*torchvision.*timm.*npz"
        ):
            load_pretrained(tiny_vit(), path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_pretrained(tiny_vit(), tmp_path / "missing.pth")


def test_unreadable_or_pickled_object_files_are_refused_with_the_fix(tmp_path: Path) -> None:
    path = save({"state_dict": {}, "hparams": argparse.Namespace(lr=1.0)}, tmp_path / "lightning.ckpt")
    with pytest.raises(
        ValueError, match=r"lightning.ckpt: torch.load\(weights_only=True\).*save only its state"
    ):
        load_pretrained(tiny_vit(), path)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes.txt: torch.load.*Supported: "):
        load_pretrained(tiny_vit(), garbage)


@pytest.mark.slow
def test_new_class_count_gives_zero_head_and_keeps_the_backbone(tmp_path: Path) -> None:
    reference = randomise(timm.create_model("vit_tiny_patch16_224", pretrained=False)).eval()
    path = save(reference.state_dict(), tmp_path / "vit_tiny_in1k.pth")
    with pytest.warns(UserWarning, match=r"num_classes=1000\).*zero-initialised 3-class head"):
        model = create_model("vit_ti16", pretrained=path, num_classes=3).eval()
    assert model.head.weight.shape == (3, 192)
    assert not model.head.weight.any() and not model.head.bias.any()
    with torch.no_grad():
        x = images(224, batch=1)
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert (model.forward_features(x) - expected).abs().max() <= 1e-4 * max(1, expected.abs().max())


def test_checkpoint_pre_logits_the_model_lacks_gives_a_fresh_head(tmp_path: Path) -> None:
    reference = randomise(tiny_torchvision(representation_size=16))
    path = save(reference.state_dict(), tmp_path / "pre_logits.pth")
    with pytest.warns(
        UserWarning, match=r"\(num_classes=5, representation_size=16\) does not fit.*\(num_classes=5\)"
    ):
        model = create_model("vit_b16", pretrained=path, **TINY)
    assert isinstance(model.pre_logits, nn.Identity)
    assert not model.head.weight.any()
    torch.testing.assert_close(model.norm.weight, reference.encoder.ln.weight)


def test_torchvision_source_fetches_the_named_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = randomise(tiny_torchvision())
    fetched = []

    def get_state_dict(weights: ViT_B_16_Weights, progress: bool) -> dict[str, Tensor]:
        fetched.append((weights, progress))
        return reference.state_dict()

    monkeypatch.setattr(ViT_B_16_Weights, "get_state_dict", get_state_dict)
    model = create_model("vit_b16", pretrained="torchvision:ViT_B_16_Weights.IMAGENET1K_V1", **TINY)
    assert fetched == [(ViT_B_16_Weights.IMAGENET1K_V1, True)]
    assert_same_logits(model, reference)
    with pytest.raises(ValueError, match=r"no weights 'ViT_B_16_Weights\.NOPE'"):
        create_model("vit_b16", pretrained="torchvision:ViT_B_16_Weights.NOPE", **TINY)


def test_timm_source_creates_the_pretrained_timm_model(uncached_hub, served, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", served[1])  # a hub that answers the probe
    reference = randomise(tiny_timm())
    created = []

    def create(name: str, pretrained: bool) -> nn.Module:
        created.append((name, pretrained))
        return reference

    monkeypatch.setattr(timm, "create_model", create)
    model = create_model("vit_b16", pretrained="timm:vit_base_patch16_224.augreg_in21k", **TINY)
    assert created == [("vit_base_patch16_224.augreg_in21k", True)]
    assert_same_logits(model, reference)


def test_timm_source_without_timm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match="pip install timm"):
        load_pretrained(tiny_vit(), "timm:vit_base_patch16_224")


def test_hybrid_loads_its_own_state_dict(tmp_path: Path) -> None:
    hybrid = {k: v for k, v in TINY.items() if k != "patch_size"}
    source = randomise(create_model("r50_vit_b16", **hybrid)).eval()
    path = save(source.state_dict(), tmp_path / "r50_vit.pth")
    model = create_model("r50_vit_b16", pretrained=path, **hybrid).eval()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
    assert_same_logits(model, source, batch=1)


@pytest.mark.slow
def test_full_size_vit_b16_gives_torchvision_logits(tmp_path: Path) -> None:
    reference = randomise(torchvision.models.vit_b_16()).eval()
    path = save(reference.state_dict(), tmp_path / "vit_b_16.pth")
    assert_same_logits(create_model("vit_b16", pretrained=path), reference, size=224, batch=1)


def test_weight_conversion_depends_on_the_architecture_and_the_file_reader_alone() -> None:
    import ast

    import vitlab.models.weights as weights

    tree = ast.parse(Path(weights.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    vitlab_modules = {name for name in imported if name and name.startswith("vitlab")}
    # files: checkpoint.load_torch_file; errors.py depends on nothing
    assert vitlab_modules == {"vitlab.models.vit", "vitlab.checkpoint", "vitlab.errors"}


@pytest.fixture
def uncached_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A timm name whose weights are not in the (empty) Hugging Face cache: they must be fetched."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def test_an_unreachable_hub_fails_at_once_naming_the_offline_options(uncached_hub, monkeypatch) -> None:
    closed = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm retried the hub"))
    with pytest.raises(NetworkError) as error:
        read_checkpoint(f"timm:{uncached_hub}")
    assert f"{closed} did not answer within 3 s" in str(error.value)
    fix = f"model.pretrained=timm:{uncached_hub} model.pretrained_file=/path/to/pytorch_model.bin"
    assert str(error.value).endswith(fix)


def test_hub_offline_mode_is_unreachable_without_a_request(uncached_hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("probed while offline"))
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm retried the hub"))
    with pytest.raises(NetworkError, match="HF_HUB_OFFLINE is set"):
        read_checkpoint(f"timm:{uncached_hub}")
