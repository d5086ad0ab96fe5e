"""The nano SAIL-VL2 architecture: the release's classes (SAIL-ViT, pixel shuffle, MLP, Qwen3) at CPU size.

224-px tiles with 14-px patches (16x16 patches -> 64 LLM tokens per tile after the 2x2 pixel shuffle), a
4-layer 128-wide ViT and a 4-layer 256-wide Qwen3 over a byte-level BPE trained on the generated text.
About 5 M parameters: bf16 weights are ~10 MB, within the 25 MB the shipped model may take.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..tiny import TINY_LLM, build_random_checkpoint

NANO_VISION: dict[str, Any] = {
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    "image_size": 224, "patch_size": 14,
}
NANO_LLM: dict[str, Any] = {
    **TINY_LLM, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
}
NANO_VOCAB = 2048


def build_nano_init(directory: str | Path, corpus: Iterable[str], seed: int = 0, max_num: int = 1) -> Path:
    """A randomly initialised nano checkpoint (release layout) with a tokenizer trained on `corpus`."""
    return build_random_checkpoint(directory, seed=seed, vision=NANO_VISION, llm=NANO_LLM, max_num=max_num,
                                   corpus=corpus, vocab_size=NANO_VOCAB)
