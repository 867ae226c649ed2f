"""vitlab: replicate and experiment with the Vision Transformer (Dosovitskiy et al., 2020)."""

__version__ = "0.1.0"
