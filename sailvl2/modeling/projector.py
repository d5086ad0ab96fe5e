"""Pixel shuffle and the `mlp1` adapter (PAPER.md 2.2, FACTS.md "Vision features").

Pixel shuffle "v2" with ratio 0.5 on a [N, 32, 32, H] grid: reshape to [N, 32, 16, 2H], swap the two spatial
axes, reshape to [N, 16, 16, 4H], swap back: 256 tokens of width 4H per 448 tile. Written for any even
[rows, cols] grid so AnyRes inputs and video frames use the same code.

`mlp1` keeps the release's `nn.Sequential` indices so the weight keys are `mlp1.0` (LayerNorm(4H)),
`mlp1.1` (Linear(4H, D)), `mlp1.3` (Linear(D, D)); index 2 is the exact (erf) GELU, which has no weights.
"""

from __future__ import annotations

import torch
from torch import nn


def pixel_shuffle(features: torch.Tensor, factor: int, version: str = "v2") -> torch.Tensor:
    """[N, rows, cols, C] -> [N, rows/factor, cols/factor, C*factor^2] (the InternVL-family token merge)."""
    num, rows, cols, channels = features.shape
    if rows % factor or cols % factor:
        raise ValueError(f"a {rows}x{cols} patch grid cannot be pixel-shuffled by {factor}")
    # Merge `factor` neighbouring columns into the channel axis ...
    merged = features.reshape(num, rows, cols // factor, channels * factor)
    merged = merged.permute(0, 2, 1, 3).contiguous()  # [N, cols/f, rows, C*f]
    # ... then `factor` neighbouring rows.
    merged = merged.reshape(num, cols // factor, rows // factor, channels * factor * factor)
    if version == "v1":
        # v1 leaves the grid transposed (the family's original behaviour).
        return merged
    return merged.permute(0, 2, 1, 3).contiguous()


class SAILVLProjector(nn.Sequential):
    """LayerNorm(4H) -> Linear(4H, D) -> GELU -> Linear(D, D); randomly initialised before basic
    pre-training (PAPER.md 2.2)."""

    def __init__(self, vision_width: int, factor: int, llm_width: int) -> None:
        merged_width = vision_width * factor * factor
        super().__init__(
            nn.LayerNorm(merged_width),
            nn.Linear(merged_width, llm_width),
            nn.GELU(),
            nn.Linear(llm_width, llm_width),
        )
