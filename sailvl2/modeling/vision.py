"""SAIL-ViT: the AIMv2-style vision tower of SAIL-VL2 (PAPER.md 2.1, FACTS.md "Checkpoint layout").

Module names reproduce the release weight keys below `vision_model.`:
    preprocessor.patchifier.proj   Conv2d(3, H, 14, stride 14), with bias
    preprocessor.patchifier.norm   RMSNorm after the patch embedding
    preprocessor.pos_embed         [1, (448/14)^2, H] learned absolute positions, added after the norm
    trunk.blocks.N.{norm_1, attn.qkv, attn.proj, norm_2, mlp.fc1, mlp.fc2, mlp.fc3}
    trunk.post_trunk_norm
Blocks are pre-norm; attention is plain softmax attention over all patches (no mask, no rotary); the MLP is
SwiGLU `fc2(silu(fc1 x) * fc3 x)`. Inputs of any patch grid are accepted: the learned position grid is
resized bicubically when the grid is not the trained one (the AnyRes path, PAPER.md 2.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..configuration import SAILViTConfig


class SAILViTRMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back, as the release does for every ViT norm."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)
        return self.weight * hidden_states.to(input_dtype)


class SAILViTPatchifier(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = SAILViTRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        patches = self.proj(pixel_values)  # [tiles, H, rows, cols]
        grid = (patches.shape[-2], patches.shape[-1])
        return self.norm(patches.flatten(2).transpose(1, 2)), grid


class SAILViTPreprocessor(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.patchifier = SAILViTPatchifier(config)
        self.grid_size = config.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size**2, config.hidden_size))

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == (self.grid_size, self.grid_size):
            return self.pos_embed
        # AnyRes: resize the learned 32x32 grid to the input grid (PAPER.md 2.1, "interpolate").
        side = self.grid_size
        table = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        table = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(self.pos_embed.dtype)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens, grid = self.patchifier(pixel_values)
        return tokens + self.position_embedding(grid), grid


class SAILViTAttention(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.attention_dropout = config.attention_dropout
        self.proj_drop = nn.Dropout(config.projection_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        tiles, length, width = hidden_states.shape
        # qkv is one [3H, H] matrix in (q, k, v) order.
        qkv = self.qkv(hidden_states).reshape(tiles, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.attention_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(tiles, length, width)
        return self.proj_drop(self.proj(attended))


class SAILViTMLP(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.fc3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(hidden_states)) * self.fc3(hidden_states))


class SAILViTBlock(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.norm_1 = SAILViTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = SAILViTAttention(config)
        self.norm_2 = SAILViTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SAILViTMLP(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm_1(hidden_states))
        return hidden_states + self.mlp(self.norm_2(hidden_states))


class SAILViTTrunk(nn.Module):
    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SAILViTBlock(config) for _ in range(config.num_hidden_layers))
        self.post_trunk_norm = SAILViTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, select_layer: int = -1) -> torch.Tensor:
        """`select_layer == -1`: output after `post_trunk_norm`. Otherwise the output of block
        `select_layer` (Python indexing over blocks; patch embeddings not counted), before the final norm,
        and the blocks after it are not run."""
        num_blocks = len(self.blocks)
        last_block = num_blocks - 1 if select_layer == -1 else select_layer % num_blocks
        for block in self.blocks[: last_block + 1]:
            if self.gradient_checkpointing and self.training:
                hidden_states = checkpoint(block, hidden_states, use_reentrant=False)
            else:
                hidden_states = block(hidden_states)
        return self.post_trunk_norm(hidden_states) if select_layer == -1 else hidden_states


class SAILViTModel(nn.Module):
    """Tiles [num_tiles, 3, S, S] -> patch features [num_tiles, (S/14)^2, H] and the patch grid."""

    def __init__(self, config: SAILViTConfig) -> None:
        super().__init__()
        self.config = config
        self.preprocessor = SAILViTPreprocessor(config)
        self.trunk = SAILViTTrunk(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.preprocessor.pos_embed.dtype

    def forward(self, pixel_values: torch.Tensor, select_layer: int = -1) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens, grid = self.preprocessor(pixel_values.to(self.dtype))
        return self.trunk(tokens, select_layer=select_layer), grid
