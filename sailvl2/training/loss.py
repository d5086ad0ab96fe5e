"""The training loss of a packed micro-batch: weighted next-token cross-entropy, computed in chunks.

Only positions that carry a label go through `lm_head`, chunk by chunk under activation checkpointing, so
the [tokens, vocab] logits of a long packed row (8192 x 151936 floats = 5 GB) never exist at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .packing import PackedBatch
from .tokenize import IGNORE_INDEX


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


def packed_loss(model, batch: PackedBatch, weights: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """Forward a packed row (block-diagonal attention from restarting position ids) and return its loss."""
    device = model.get_input_embeddings().weight.device
    input_ids = batch.input_ids.to(device)
    pixel_values = batch.pixel_values.to(device) if batch.pixel_values is not None else None
    embeds = model.embed_inputs(input_ids, pixel_values)
    # attention_mask=None and use_cache=False: transformers then derives the packed (block-diagonal) mask
    # from the position ids; with a cache or a 2D mask it would not.
    hidden = model.language_model.model(
        inputs_embeds=embeds, position_ids=batch.position_ids.to(device), attention_mask=None, use_cache=False
    ).last_hidden_state
    return weighted_lm_loss(hidden, model.language_model.lm_head, batch.labels, weights, chunk_size)
