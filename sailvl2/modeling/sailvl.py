"""SAIL-VL2: SAIL-ViT -> pixel shuffle -> `mlp1` -> LLM (PAPER.md 2, FACTS.md).

The vision features of every tile (256 tokens per 448 tile) replace, in order, the input embeddings at the
`<IMG_CONTEXT>` positions; the LLM then runs on the merged embeddings. Loading and saving read and write the
release layout with our own safetensors code (`weights.py`), so the release's `config.json` and weight
files load unchanged and what we save loads in the release code.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..configuration import SAILVLConfig
from ..errors import CheckpointError, ImagePlaceholderError, InputError
from .language import build_language_model
from .loss import weighted_lm_loss
from .packed_attention import segment_lengths
from .projector import SAILVLProjector, pixel_shuffle
from .vision import SAILViTModel
from .weights import from_release_key, iter_tensors, save_state_dict, to_release_key, weight_files

IGNORE_INDEX = -100
LM_HEAD_KEY = "language_model.lm_head.weight"
EMBED_KEY = "language_model.model.embed_tokens.weight"


class SAILVLModel(PreTrainedModel):
    config_class = SAILVLConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SAILViTBlock"]

    def __init__(self, config: SAILVLConfig) -> None:
        super().__init__(config)
        self.vision_model = SAILViTModel(config.vision_config)
        llm_config = config.llm_build_config()
        self.mlp1 = SAILVLProjector(config.vision_config.hidden_size, config.shuffle_factor, llm_config.hidden_size)
        self.language_model = build_language_model(llm_config)
        # Tiles through the ViT at once; bounds activation memory for requests with many tiles.
        self.vision_batch_size = 64
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if hasattr(module, "pos_embed"):
            nn.init.normal_(module.pos_embed, std=0.02)

    # ---- pieces ----
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tiles [num_tiles, 3, S, S] -> LLM-space features [num_tiles, tokens_per_tile, D]."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.vision_config.num_channels:
            raise InputError(f"pixel_values must be [num_tiles, 3, H, W], got shape {tuple(pixel_values.shape)}")
        outputs = []
        for chunk in pixel_values.split(self.vision_batch_size):
            patches, (rows, cols) = self.vision_model(chunk, select_layer=self.config.select_layer)
            grid = patches.reshape(patches.shape[0], rows, cols, patches.shape[-1])
            merged = pixel_shuffle(grid, self.config.shuffle_factor, self.config.ps_version)
            outputs.append(self.mlp1(merged.reshape(merged.shape[0], -1, merged.shape[-1])))
        return torch.cat(outputs)

    def embed_inputs(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the vision features written over the `<IMG_CONTEXT>` positions, in order."""
        embeds = self.get_input_embeddings()(input_ids)
        image_positions = input_ids == self.image_token_id
        num_slots = int(image_positions.sum())
        if pixel_values is None:
            if num_slots:
                raise ImagePlaceholderError(
                    f"the input holds {num_slots} image tokens but no pixel_values were given"
                )
            return embeds
        features = self.get_image_features(pixel_values)
        features = features.reshape(-1, features.shape[-1])
        if features.shape[0] != num_slots:
            per_tile = self.config.tokens_per_tile
            raise ImagePlaceholderError(
                f"the input holds {num_slots} image tokens but pixel_values has {pixel_values.shape[0]} tiles "
                f"({features.shape[0]} features at {per_tile} per tile); use the processor to expand each "
                "<image> placeholder for the tiles of its image"
            )
        return embeds.masked_scatter(image_positions.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_num_tiles: torch.Tensor | None = None,
        loss_weights: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Causal-LM forward over text and images. `labels` (-100 = ignored) give the mean token loss.

        With `loss_weights` (per-token weights aligned with `labels`), the loss is the weighted sum of
        token losses computed in chunks over labelled positions only, and no logits are returned: the
        training path for packed rows (restarting `position_ids`, no attention mask). It runs inside this
        forward so FSDP2 gathers the root's parameters (embeddings, adapter, lm_head) around it.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise InputError("forward needs input_ids or inputs_embeds")
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        if loss_weights is not None:
            if labels is None:
                raise InputError("loss_weights needs labels")
            # Sample lengths let `sailvl2_sdpa` attend per sample instead of over a dense row x row mask;
            # other implementations ignore the keyword (flash attention reads the packing from position_ids).
            segments = None
            if position_ids is not None and attention_mask is None and position_ids.shape[0] == 1:
                segments = segment_lengths(position_ids)
            hidden = self.language_model.model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, packed_segments=segments,
            ).last_hidden_state
            return CausalLMOutputWithPast(loss=weighted_lm_loss(hidden, self.language_model.lm_head, labels, loss_weights))
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        loss = None
        if labels is not None:
            logits = outputs.logits[:, :-1].float()
            targets = labels[:, 1:].to(logits.device)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Generate new tokens only (as the release does); see `sailvl2.generation.generate`."""
        from ..generation import generate

        return generate(self, input_ids, **kwargs)

    # ---- release-layout loading and saving ----
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: SAILVLConfig | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        strict: bool = True,
        **kwargs: Any,
    ) -> "SAILVLModel":
        """Load a checkpoint in the release layout (sharded or single safetensors).

        `dtype`: a torch dtype, "auto" (the stored dtype, bf16 for the release) or None (float32).
        `device`: where the weights go (also read from `device_map` when that is a single device).
        """
        directory = Path(pretrained_model_name_or_path)
        if "torch_dtype" in kwargs:  # transformers-4 spelling, used by the release README
            dtype = dtype if dtype is not None else kwargs.pop("torch_dtype")
        device_map = kwargs.pop("device_map", None)
        if device is None and isinstance(device_map, (str, torch.device, int)) and device_map != "auto":
            device = device_map
        if config is None or not isinstance(config, SAILVLConfig):
            config = SAILVLConfig.from_pretrained(directory)
        if dtype == "auto":
            dtype = config.dtype or torch.float32
        dtype = parse_dtype(dtype) or torch.float32
        device = torch.device(device) if device is not None else torch.device("cpu")
        files = weight_files(directory)

        with _default_dtype(dtype), no_init_weights(), device:
            model = cls(config)
        model.load_release_weights(files, strict=strict)
        model.config.dtype = dtype
        model.config._name_or_path = str(directory)
        model.eval()
        return model

    def load_release_weights(self, files: dict, strict: bool = True) -> None:
        state = self.state_dict()
        expected = {to_release_key(name) for name in state}
        stored = set(files)
        missing = expected - stored
        if LM_HEAD_KEY in missing and EMBED_KEY in stored:
            missing.discard(LM_HEAD_KEY)  # a truly tied checkpoint: lm_head gets the embeddings below
        unexpected = stored - expected
        if strict and (missing or unexpected):
            raise CheckpointError(
                "checkpoint keys do not match the config: "
                f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})"
            )
        loaded = set()
        with torch.no_grad():
            for key, tensor in iter_tensors({k: v for k, v in files.items() if k in expected}):
                target = state[from_release_key(key)]
                if tuple(tensor.shape) != tuple(target.shape):
                    raise CheckpointError(
                        f"{key}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(target.shape)}"
                    )
                target.copy_(tensor)
                loaded.add(key)
            if LM_HEAD_KEY not in loaded and EMBED_KEY in loaded:
                state[LM_HEAD_KEY].copy_(state[EMBED_KEY])

    def save_pretrained(
        self, save_directory: str | os.PathLike, max_shard_size: int | str = "5GB", **kwargs: Any
    ) -> None:
        """Write `config.json` and safetensors weights with the release key names (loadable by the release
        code and by `from_pretrained`)."""
        directory = Path(save_directory)
        state = {to_release_key(name): tensor for name, tensor in self.state_dict().items()}
        save_state_dict(state, directory, max_shard_size=max_shard_size)
        self.config.dtype = next(self.parameters()).dtype
        self.config.save_pretrained(directory)


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """`torch.bfloat16`, "bfloat16" or "torch.bfloat16" -> torch.bfloat16; None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    parsed = getattr(torch, str(value).removeprefix("torch."), None)
    if not isinstance(parsed, torch.dtype):
        raise InputError(f"unknown dtype {value!r} (use e.g. 'float32', 'bfloat16', 'float16')")
    return parsed


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
