"""Weighted next-token cross-entropy, computed in chunks (the training loss of packed rows).

Only positions that carry a label go through `lm_head`, chunk by chunk under activation checkpointing, so
the [tokens, vocab] logits of a long packed row (8192 x 151936 floats = 5 GB) never exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                token_weights: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return (F.cross_entropy(logits, targets, reduction="none") * token_weights).sum()


def weighted_lm_loss(
    hidden: torch.Tensor, lm_head: torch.nn.Linear, labels: torch.Tensor, weights: torch.Tensor, chunk_size: int = 2048
) -> torch.Tensor:
    """sum_t w_t * CE(logits_t, label_{t+1}) over labelled positions; hidden [B, L, D], labels/weights [B, L]."""
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(hidden.device)
    token_weights = weights[:, 1:].reshape(-1).to(hidden.device)
    keep = targets != IGNORE_INDEX
    hidden, targets, token_weights = hidden[keep], targets[keep], token_weights[keep]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        piece = slice(start, start + chunk_size)
        args = (hidden[piece], lm_head.weight, lm_head.bias, targets[piece], token_weights[piece])
        total = total + (checkpoint(_chunk_loss, *args, use_reentrant=False) if torch.is_grad_enabled()
                         else _chunk_loss(*args))
    return total
