"""The paper's hybrids (BiT ResNet + ViT): parameter counts and logits against timm and the JAX .npz."""

from __future__ import annotations

from pathlib import Path

import lightning
import numpy as np
import pytest
import timm
import torch
from test_weights import assert_same_logits, randomise, save
from timm.models import vision_transformer as timm_vit
from torch import nn

from vitlab.checkpoint import load_classifier
from vitlab.models import create_model
from vitlab.models.hybrid import BiTResNet
from vitlab.models.weights import to_timm
from vitlab.training.module import ViTClassifier

# A small transformer on the full ResNet stem: every stem weight is checked, in seconds.
TINY_TRANSFORMER = {"dim": 64, "depth": 2, "heads": 2, "mlp_dim": 128, "num_classes": 5}
# (timm model, our variant, image size). Every strided layer then sees an even size, where TF "SAME"
# padding (one pixel at the end) and PyTorch's symmetric padding differ.
PAIRS = [
    ("vit_base_r50_s16_224", "r50_vit_b16", 48),
    ("vit_base_r50_s16_384", "r50_vit_b16", 64),
    ("vit_large_r50_s32_224", "r50_vit_l32", 64),
]


def tiny_timm_hybrid(name: str, image_size: int) -> nn.Module:
    t = TINY_TRANSFORMER
    model = timm.create_model(
        name,
        pretrained=False,
        img_size=image_size,
        embed_dim=t["dim"],
        depth=t["depth"],
        num_heads=t["heads"],
        mlp_ratio=t["mlp_dim"] / t["dim"],
        num_classes=t["num_classes"],
    )
    return randomise(model).eval()


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_r50_vit_b16_has_the_original_checkpoints_parameter_count_as_timm():
    with torch.device("meta"):
        ours = create_model("r50_vit_b16", num_classes=1000)
        theirs = timm.create_model("vit_base_r50_s16_224", pretrained=False, num_classes=1000)
    assert count(ours) == 98_659_112 == count(theirs)


def test_r50_vit_l32_has_timms_parameter_count():
    with torch.device("meta"):
        ours = create_model("r50_vit_l32", num_classes=1000)
        theirs = timm.create_model("vit_large_r50_s32_224", pretrained=False, num_classes=1000)
    assert count(ours) == count(theirs)


def test_hybrid_stems_are_the_papers_stage_layouts():
    with torch.device("meta"):
        b16, l32 = create_model("r50_vit_b16", image_size=64), create_model("r50_vit_l32", image_size=64)
    assert (b16.stem.stage_depths, b16.stem.stride, b16.stem.out_channels) == ((3, 4, 9), 16, 1024)
    assert (l32.stem.stage_depths, l32.stem.stride, l32.stem.out_channels) == ((3, 4, 6, 3), 32, 2048)
    assert (b16.patch_size, l32.patch_size) == (16, 32)
    assert b16.patch_embedding.patch_size == l32.patch_embedding.patch_size == 1


@pytest.mark.parametrize(("timm_name", "name", "image_size"), PAIRS)
def test_timm_hybrid_checkpoint_gives_timms_logits(timm_name, name, image_size, tmp_path: Path):
    reference = tiny_timm_hybrid(timm_name, image_size)
    path = save(reference.state_dict(), tmp_path / "timm_hybrid.pth")
    model = create_model(name, pretrained=path, image_size=image_size, **TINY_TRANSFORMER)
    assert_same_logits(model, reference, size=image_size, batch=1)


def test_our_hybrid_weights_load_into_timm_strictly():
    model = randomise(create_model("r50_vit_l32", image_size=64, **TINY_TRANSFORMER)).eval()
    reference = timm.create_model(
        "vit_large_r50_s32_224", pretrained=False, img_size=64, embed_dim=64, depth=2, num_heads=2,
        mlp_ratio=2.0, num_classes=5,
    )  # fmt: skip
    reference.load_state_dict(to_timm(model.state_dict()), strict=True)
    assert_same_logits(model, reference, size=64, batch=1)


def timm_hybrid_to_npz(model: nn.Module) -> dict[str, np.ndarray]:
    """The original R50+ViT-B_16.npz layout of a timm hybrid: the inverse of timm's ``_load_weights``
    (HWIO kernels, [in, out] dense kernels, attention kernels per head)."""

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().numpy().astype(np.float32)

    def kernel(conv: torch.Tensor) -> np.ndarray:  # OIHW -> HWIO
        return array(conv.permute(2, 3, 1, 0))

    arrays: dict[str, np.ndarray] = {}

    def norm(name: str, module: nn.Module) -> None:
        arrays[f"{name}/scale"], arrays[f"{name}/bias"] = array(module.weight), array(module.bias)

    backbone = model.patch_embed.backbone
    arrays["conv_root/kernel"] = kernel(backbone.stem.conv.weight)
    norm("gn_root", backbone.stem.norm)
    for i, stage in enumerate(backbone.stages):
        for j, block in enumerate(stage.blocks):
            unit = f"block{i + 1}/unit{j + 1}/"
            for r in (1, 2, 3):
                arrays[f"{unit}conv{r}/kernel"] = kernel(getattr(block, f"conv{r}").weight)
                norm(f"{unit}gn{r}", getattr(block, f"norm{r}"))
            if block.downsample is not None:
                arrays[f"{unit}conv_proj/kernel"] = kernel(block.downsample.conv.weight)
                norm(f"{unit}gn_proj", block.downsample.norm)
    arrays["embedding/kernel"] = kernel(model.patch_embed.proj.weight)
    arrays["embedding/bias"] = array(model.patch_embed.proj.bias)
    arrays["cls"] = array(model.cls_token)
    arrays["Transformer/posembed_input/pos_embedding"] = array(model.pos_embed)
    norm("Transformer/encoder_norm", model.norm)
    arrays["head/kernel"], arrays["head/bias"] = array(model.head.weight.T), array(model.head.bias)
    dim = model.embed_dim
    for i, block in enumerate(model.blocks):
        prefix, heads = f"Transformer/encoderblock_{i}/", block.attn.num_heads
        attention = f"{prefix}MultiHeadDotProductAttention_1/"
        weights, biases = block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3)
        for name, weight, bias in zip(("query", "key", "value"), weights, biases, strict=True):
            arrays[f"{attention}{name}/kernel"] = array(weight.T.reshape(dim, heads, -1))
            arrays[f"{attention}{name}/bias"] = array(bias.reshape(heads, -1))
        arrays[f"{attention}out/kernel"] = array(block.attn.proj.weight.T.reshape(heads, -1, dim))
        arrays[f"{attention}out/bias"] = array(block.attn.proj.bias)
        norm(f"{prefix}LayerNorm_0", block.norm1)
        norm(f"{prefix}LayerNorm_2", block.norm2)
        for r, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/kernel"] = array(fc.weight.T)
            arrays[f"{prefix}MlpBlock_3/Dense_{r}/bias"] = array(fc.bias)
    return arrays


@pytest.mark.parametrize(
    ("timm_name", "name", "image_size"), [PAIRS[0], pytest.param(*PAIRS[2], marks=pytest.mark.slow)]
)
def test_original_npz_layout_gives_the_logits_timm_reads_from_it(timm_name, name, image_size, tmp_path):
    source = tiny_timm_hybrid(timm_name, image_size)
    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, **timm_hybrid_to_npz(source))
    reference = tiny_timm_hybrid(timm_name, image_size)  # other random weights, then the file's
    with torch.no_grad():
        timm_vit._load_weights(reference, str(path))
    model = create_model(name, pretrained=path, image_size=image_size, **TINY_TRANSFORMER)
    for key, value in source.state_dict().items():  # the test's inverse of timm's loader is right
        assert torch.equal(reference.state_dict()[key], value), key
    assert_same_logits(model, reference, size=image_size, batch=1)


def old_hybrid_state_dict() -> dict[str, torch.Tensor]:
    """What the torchvision-stem r50_vit_b16 saved: BatchNorm ResNet layers under ``stem.layers``."""
    model = create_model("r50_vit_b16", image_size=32, **TINY_TRANSFORMER)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("stem.")}
    state["stem.layers.0.weight"] = torch.zeros(64, 3, 7, 7)
    state["stem.layers.1.running_mean"] = torch.zeros(64)
    return state


def test_old_torchvision_stem_weights_are_refused_in_one_line(tmp_path: Path):
    path = save(old_hybrid_state_dict(), tmp_path / "old_r50.pth")
    with pytest.raises(ValueError, match=r"old r50_vit_b16.*torchvision's ResNet-50.*retrain") as error:
        create_model("r50_vit_b16", pretrained=path, image_size=32, **TINY_TRANSFORMER)
    assert "\n" not in str(error.value)


def test_old_hybrid_training_checkpoint_is_refused_by_eval_and_predict(tmp_path: Path):
    options = {k: v for k, v in TINY_TRANSFORMER.items() if k != "num_classes"}
    module = ViTClassifier("r50_vit_b16", num_classes=5, model_options={"image_size": 32, **options})
    state = {f"model.{k}": v for k, v in old_hybrid_state_dict().items()}
    checkpoint = {
        "state_dict": state,
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "global_step": 10,  # as every training checkpoint has
    }
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"the checkpoint holds the old r50_vit_b16"):
        load_classifier(tmp_path / "old.ckpt")


def test_bit_resnet_rejects_an_impossible_stage_layout():
    with pytest.raises(ValueError, match=r"stages=\(3, 4, 6, 3, 2\)"):
        BiTResNet((3, 4, 6, 3, 2))


@pytest.mark.slow
def test_full_size_r50_vit_b16_at_384_gives_timms_logits(tmp_path: Path):
    reference = randomise(timm.create_model("vit_base_r50_s16_384", pretrained=False)).eval()
    path = save(reference.state_dict(), tmp_path / "vit_base_r50_s16_384.pth")
    model = create_model("r50_vit_b16", pretrained=path, image_size=384)
    assert_same_logits(model, reference, size=384, batch=1)
