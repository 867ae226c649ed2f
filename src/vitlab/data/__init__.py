"""Data: datamodules for image folders (FoodVision Mini), Food-101 (FoodVision Big) and synthetic
images, transforms, decoding. Streaming (litdata, an optional extra) is in ``vitlab.data.streaming``."""

from vitlab.data.datamodule import ImageDataModule, ImageFolderDataModule, SyntheticDataModule
from vitlab.data.folder import UnreadableImageError, load_image
from vitlab.data.food101 import Food101DataModule
from vitlab.data.transforms import eval_transform

__all__ = [
    "Food101DataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "SyntheticDataModule",
    "UnreadableImageError",
    "eval_transform",
    "load_image",
]
