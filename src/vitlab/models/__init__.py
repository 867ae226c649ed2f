"""ViT models: the architecture, the Table 1 variants and weight conversion."""

from vitlab.models.variants import MODEL_SIZES, VARIANTS, ModelConfig, available_models, create_model
from vitlab.models.vit import VisionTransformer

__all__ = ["MODEL_SIZES", "VARIANTS", "ModelConfig", "VisionTransformer", "available_models", "create_model"]
