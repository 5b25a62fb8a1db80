"""Optimizers (AdamW, SGD), gradient clipping and the learning-rate schedule."""

from .adamw import AdamW
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .schedule import get_lr
from .sgd import SGD

__all__ = ["SGD", "AdamW", "Optimizer", "clip_grad_norm_", "get_lr"]
