"""Attention over packed rows, one sample at a time: the SDPA path without the dense block-diagonal mask.

Stream packing (PAPER.md 6.1) concatenates many samples into one row with restarting `position_ids`. With
SDPA, transformers turns that into a dense row x row block-diagonal mask, so the attention costs row^2 even
though each sample only sees itself: on a CPU, with ~40 short samples in a 2048-token row, more than half of
a training step is spent on masked-out scores. Flash attention's varlen kernels avoid this on GPUs; this is
the portable equivalent: the linear layers still run over the whole row, and attention runs per sample with
a plain causal SDPA call.

The LLM's attention implementation is `sailvl2_sdpa` (set when the LLM is built, `language.py`). Without the
`packed_segments` keyword it *is* transformers' SDPA (same function, same numerics), so inference, cached
generation and the parity tests are untouched. The packed training forward (`SAILVLModel.forward` with
`loss_weights`) passes the sample lengths as `packed_segments`; the keyword travels with the layer's
arguments, so activation checkpointing recomputes the same attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

ATTN_IMPLEMENTATION = "sailvl2_sdpa"


def segment_lengths(position_ids: torch.Tensor) -> tuple[int, ...]:
    """Lengths of the samples of one packed row: a new sample starts wherever the position does not go up by 1
    (the packer restarts positions at 0 for each sample)."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        raise ValueError(f"packed position_ids must have shape (1, row_length), got {tuple(position_ids.shape)}")
    positions = position_ids[0]
    starts = torch.nonzero(positions[1:] - positions[:-1] != 1).flatten() + 1
    bounds = [0, *starts.tolist(), positions.numel()]
    return tuple(end - start for start, end in zip(bounds[:-1], bounds[1:]))


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    packed_segments: Sequence[int] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, or per-sample causal SDPA when `packed_segments` gives the sample lengths
    of a single packed row (query, key, value: (1, heads, row, head_dim), no cache)."""
    usable = (packed_segments is not None and len(packed_segments) > 1 and query.shape[0] == 1
              and query.shape[2] == key.shape[2] == sum(packed_segments))
    if not usable:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if query.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # CPU bf16 autocast (training/precision.py): the projections run in bf16, attention in fp32. The CPU
        # flash-attention backward is ~5x slower in bf16 at these head sizes (session 15), and the scores keep
        # fp32 precision. The output stays fp32; autocast casts it again for the output projection.
        with torch.autocast("cpu", enabled=False):
            output, _ = packed_sdpa_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                            packed_segments, **kwargs)
        return output, None
    # One split per tensor, not a slice per sample: a slice's backward writes its gradient into a zeroed
    # tensor of the whole row, so ~40 samples x 3 tensors x layers cost ~10 % of a nano training step in
    # fill and copy (profiled, session 20); a split's backward is one concatenation. Same values, same sums.
    segments = list(packed_segments)
    outputs = [
        # attention_mask=None: each segment is one sample, so plain causal attention is exactly its block.
        sdpa_attention_forward(module, segment_query, segment_key, segment_value, None, **kwargs)[0]
        for segment_query, segment_key, segment_value in zip(
            query.split(segments, dim=2), key.split(segments, dim=2), value.split(segments, dim=2))
    ]  # each (1, length, heads, head_dim)
    return torch.cat(outputs, dim=1), None


def register() -> None:
    """Make `sailvl2_sdpa` a valid `attn_implementation` (attention function and its mask builder)."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, packed_sdpa_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


register()
