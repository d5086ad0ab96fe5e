"""The nano SAIL-VL2 architecture: the release's classes (SAIL-ViT, pixel shuffle, MLP, Qwen3) at CPU size.

168-px tiles with 28-px patches (6x6 patches -> 9 LLM tokens per tile after the 2x2 pixel shuffle), a
4-layer 128-wide ViT and a 4-layer 256-wide Qwen3 over a byte-level BPE trained on the generated text.
About 5 M parameters: bf16 weights are ~10 MB, within the 25 MB the shipped model may take.

Why 168 px: the scenes place their shapes on a 3x3 grid, and at 168 px each grid cell is exactly one 56-px LLM
token (2x2 patches). At 224 px (a 4x4 token grid) a shape straddled up to four tokens at arbitrary offsets,
and even a direct per-token classifier learned shape kind to only 31 % in 600 steps; aligned, 95 %
(docs/nano-sessions.md, run 7).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..processing.prompt import DEFAULT_SYSTEM_MESSAGE
from ..tiny import TINY_LLM, build_random_checkpoint

NANO_IMAGE_SIZE = 168  # the tile, and the size the nano suite is generated at
NANO_VISION: dict[str, Any] = {
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    # 28-px patches: 4x fewer ViT tokens than 14 px and 9 LLM tokens per tile, so a 2048-token row holds
    # ~50 samples; the scenes' smallest details (16-px text) are still within one or two patches.
    "image_size": NANO_IMAGE_SIZE, "patch_size": 28,
}
NANO_LLM: dict[str, Any] = {
    **TINY_LLM, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
}
NANO_VOCAB = 2048


def nano_tokenizer_corpus(texts: Iterable[str]) -> list[str]:
    """The BPE corpus: the suite's texts plus the release's default system message, which leads every
    prompt (FACTS.md prompt format). Weighted like one occurrence per ten texts, BPE merges it into a few
    tokens; left out, its Chinese bytes cost ~124 tokens per sample, more than half of a packed row."""
    texts = list(texts)
    return texts + [DEFAULT_SYSTEM_MESSAGE] * max(1, len(texts) // 10)


def sincos_position_grid(side: int, dim: int) -> torch.Tensor:
    """A (side * side, dim) 2-D sine-cosine table: the first half of the channels encodes the patch row, the
    second half its column, each as sin/cos pairs over geometric frequencies 10000^(-k / (dim/4))."""
    quarter = dim // 4
    frequencies = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    angles = torch.arange(side, dtype=torch.float64)[:, None] * frequencies[None]
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (side, dim/2)
    rows = axis[:, None, :].expand(side, side, -1)
    cols = axis[None, :, :].expand(side, side, -1)
    return torch.cat([rows, cols], dim=2).reshape(side * side, -1).float()


def build_nano_init(directory: str | Path, corpus: Iterable[str], seed: int = 0, max_num: int = 1,
                    vision: dict[str, Any] | None = None, llm: dict[str, Any] | None = None) -> Path:
    """A randomly initialised nano checkpoint (release layout) with a tokenizer trained on `corpus`
    (digits split one by one, as in Qwen's tokenizer: numbers and OCR read-outs are spelled digit by digit)."""
    from ..modeling import SAILVLModel

    directory = build_random_checkpoint(directory, seed=seed, vision=vision or NANO_VISION, llm=llm or NANO_LLM,
                                        max_num=max_num, corpus=nano_tokenizer_corpus(corpus),
                                        vocab_size=NANO_VOCAB, individual_digits=True)
    # The ViT's learned position grid starts as a 2-D sine-cosine table at the scale of the (RMS-normed) patch
    # tokens, as MAE/AIM-style ViTs initialise it, instead of N(0, 0.02). With the small random init, patch
    # tokens carry almost no position for hundreds of steps, and shape (which patch holds which edge) is what
    # the from-scratch ViT learns slowest (docs/nano-sessions.md: readout probes).
    model = SAILVLModel.from_pretrained(directory)
    grid = model.vision_model.preprocessor.pos_embed
    with torch.no_grad():
        grid.copy_(sincos_position_grid(int(grid.shape[1] ** 0.5), grid.shape[2])[None])
    model.save_pretrained(directory)
    return directory
