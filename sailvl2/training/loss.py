"""The training loss of one packed row, through the model's own forward (so FSDP2 hooks run)."""

from __future__ import annotations

import torch

from .packing import PackedBatch


def packed_loss(model, batch: PackedBatch, weights: torch.Tensor) -> torch.Tensor:
    """Weighted token loss of a packed row. attention_mask=None with restarting position ids: transformers
    then builds the block-diagonal causal mask (or varlen flash attention), so samples never mix."""
    device = model.get_input_embeddings().weight.device
    pixels = batch.pixels()
    pixel_values = pixels.to(device) if pixels is not None else None
    return model(
        input_ids=batch.input_ids.to(device), pixel_values=pixel_values, position_ids=batch.position_ids.to(device),
        labels=batch.labels.to(device), loss_weights=weights.to(device), attention_mask=None,
    ).loss
