"""Batched generation with a KV cache, returning only the new tokens (as the release's `generate` does).

Rows are left-padded by the processor; position ids are counted from each row's first real token, so a
row in a batch sees exactly what it would see alone (batched == unbatched greedy tokens). Vision features
are computed once, in the prefill. Decoding stops at `<|im_end|>` by default (the LLM config's eos id);
`eos_token_id=None` disables stopping, as the golden runs do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import DynamicCache

from ..errors import ContextLengthError, InputError
from .sampling import SamplingSettings, select_next_tokens

# Marker for "the model's own end-of-turn id"; None means never stop early.
DEFAULT_STOP: Any = object()
# Keys the processor returns that generation does not need, and transformers generate() arguments that are
# harmless here; anything else unknown is an error rather than silently ignored.
_IGNORED_KWARGS = frozenset({"image_num_tiles", "token_type_ids", "use_cache", "return_dict_in_generate"})


def resolve_stop_ids(model: Any, eos_token_id: Any) -> list[int]:
    if eos_token_id is DEFAULT_STOP:
        eos_token_id = model.config.llm_config.eos_token_id
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    return [int(token) for token in eos_token_id]


def _check_inputs(model: Any, input_ids: Any, attention_mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        raise InputError(f"input_ids must be an integer tensor, got {type(input_ids).__name__}")
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be [batch, length] with length > 0, got {tuple(input_ids.shape)}")
    device = model.get_input_embeddings().weight.device
    input_ids = input_ids.to(device=device, dtype=torch.long)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = attention_mask.to(device=device, dtype=torch.long).reshape(input_ids.shape)
    return input_ids, attention_mask


def stream_tokens(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    max_new_tokens: int = 512,
    sampling: SamplingSettings = SamplingSettings(),
    eos_token_id: Any = DEFAULT_STOP,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, one step at a time ([batch] LongTensor). Rows that have finished
    get `pad_token_id`; the iterator ends when every row has stopped or `max_new_tokens` is reached."""
    input_ids, attention_mask = _check_inputs(model, input_ids, attention_mask)
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    llm_config = model.config.llm_config
    context = getattr(llm_config, "max_position_embeddings", None)
    longest = int(attention_mask.sum(-1).max())
    if context is not None and longest >= context:
        raise ContextLengthError(
            f"the prompt has {longest} tokens but the model's context is {context}; shorten the text, "
            "use fewer images, or lower max_num (tiles per image)"
        )
    if context is not None:
        max_new_tokens = min(max_new_tokens, context - longest)
    stop_ids = torch.tensor(resolve_stop_ids(model, eos_token_id), device=input_ids.device, dtype=torch.long)
    if pad_token_id is None:
        pad_token_id = getattr(llm_config, "pad_token_id", None)
        pad_token_id = pad_token_id if pad_token_id is not None else (int(stop_ids[0]) if len(stop_ids) else 0)

    batch = input_ids.shape[0]
    seen = None
    if sampling.repetition_penalty != 1.0:
        vocab = model.get_input_embeddings().weight.shape[0]
        seen = torch.zeros(batch, vocab, dtype=torch.bool, device=input_ids.device)
        seen.scatter_(1, input_ids * attention_mask, attention_mask.bool())

    # Left padding: the first real token of each row sits at position 0.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if pixel_values is not None:
        pixel_values = pixel_values.to(input_ids.device)
    embeds = model.embed_inputs(input_ids, pixel_values)
    cache = DynamicCache(config=llm_config)
    outputs = model.language_model(
        inputs_embeds=embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        tokens = select_next_tokens(outputs.logits[:, -1], sampling, seen, generator)
        tokens = torch.where(finished, torch.full_like(tokens, pad_token_id), tokens)
        yield tokens
        if len(stop_ids):
            finished |= torch.isin(tokens, stop_ids)
        if bool(finished.all()) or step == max_new_tokens - 1:
            return
        if seen is not None:
            seen[torch.arange(batch, device=tokens.device), tokens] = True
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=-1)
        position_ids = position_ids[:, -1:] + 1
        outputs = model.language_model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=outputs.past_key_values,
            use_cache=True,
        )


def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    max_new_tokens: int = 512,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = DEFAULT_STOP,  # type: ignore[assignment]
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    streamer: Any = None,
    num_beams: int = 1,
    **kwargs: Any,
) -> torch.Tensor:
    """Generate up to `max_new_tokens` for every row; returns [batch, new_tokens] (new tokens only),
    finished rows padded with `pad_token_id`.

    `streamer`: any object with `put(ids)` / `end()` (transformers' `TextStreamer` protocol: the prompt ids
    are put first, then each step's tokens).
    """
    unknown = set(kwargs) - _IGNORED_KWARGS
    if unknown:
        raise InputError(f"generate() got unsupported arguments: {sorted(unknown)}")
    if num_beams != 1:
        raise InputError("beam search is not supported; use num_beams=1 (greedy) or do_sample=True")
    sampling = SamplingSettings(
        do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty
    )
    if streamer is not None:
        streamer.put(input_ids.cpu())
    steps = []
    for tokens in stream_tokens(
        model, input_ids, attention_mask, pixel_values, max_new_tokens, sampling, eos_token_id, pad_token_id, generator
    ):
        steps.append(tokens)
        if streamer is not None:
            streamer.put(tokens.cpu())
    if streamer is not None:
        streamer.end()
    return torch.stack(steps, dim=1)
