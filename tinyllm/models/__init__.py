"""Model definitions: ``ModelConfig`` (config.py) and ``Transformer`` (transformer.py)."""

from .config import ModelConfig
from .transformer import Transformer, sinusoidal_table

__all__ = ["ModelConfig", "Transformer", "sinusoidal_table"]
