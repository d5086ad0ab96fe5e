"""Model blocks: SAIL-ViT (vision.py), pixel shuffle + adapter (projector.py), the LLM (language.py), the
composition (sailvl.py) and release-layout weight I/O (weights.py)."""

from .sailvl import SAILVLModel
from .vision import SAILViTModel

__all__ = ["SAILVLModel", "SAILViTModel"]
