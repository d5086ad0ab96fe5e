"""Configs that read and write the release `config.json` unchanged.

`SAILVLConfig` (model_type `sailvl`) holds a `vision_config` (`SAILViTConfig`, model_type `sailvit`) and an
`llm_config` built with transformers' own config classes (Qwen3 dense or Qwen3-MoE; any registered causal-LM
type works). The release config carries many fields that transformers 5 drops or renames (generation
defaults, `torch_dtype`, `rope_theta`, `auto_map`, ...). We keep the original dicts and write them back with
our current values laid over them, so a load/save round trip loses nothing and the release's own code can
still read what we save (FACTS.md "Checkpoint layout": keep unknown fields).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .errors import ConfigError

CONFIG_NAME = "config.json"

# Keys transformers adds on load that are not model fields and must not be written back.
_VOLATILE_KEYS = ("_commit_hash", "_name_or_path", "name_or_path")


class SAILViTConfig(PreTrainedConfig):
    """SAIL-ViT (AIMv2-style) vision tower. Defaults are SAIL-ViT-Huge at 448 px (PAPER.md 2.1)."""

    model_type = "sailvit"
    base_config_key = "vision_config"

    hidden_size: int = 1536
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 448
    patch_size: int = 14
    rms_norm_eps: float = 1e-5
    qkv_bias: bool = False
    use_bias: bool = False
    attention_dropout: float = 0.0
    projection_dropout: float = 0.0

    def __post_init__(self, **kwargs: Any) -> None:
        self._raw = {k: copy.deepcopy(v) for k, v in kwargs.items()}
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"vision_config.hidden_size ({self.hidden_size}) is not divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision_config.image_size ({self.image_size}) is not a multiple of patch_size ({self.patch_size})"
            )

    @property
    def grid_size(self) -> int:
        """Patches per side of a tile (448 / 14 = 32)."""
        return self.image_size // self.patch_size


class SAILVLConfig(PreTrainedConfig):
    """The composite SAIL-VL2 config, field for field the release `config.json`."""

    model_type = "sailvl"
    sub_configs_defaults = {
        "vision_config": SAILViTConfig,
        "llm_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    llm_config: dict | PreTrainedConfig | None = None
    downsample_ratio: float = 0.5
    force_image_size: int = 448
    select_layer: int = -1
    ps_version: str = "v2"
    template: str = "univl-chat"
    dynamic_image_size: bool = True
    use_thumbnail: bool = True
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    pad2square: bool = False
    use_backbone_lora: int = 0
    use_llm_lora: int = 0
    # Not in the release file: the release code looks it up in the tokenizer at chat() time. We keep it in the
    # config (default = the release id) so models with other tokenizers (the nano model) can say theirs.
    image_token_id: int = 151671

    def __post_init__(self, **kwargs: Any) -> None:
        # Keep the original sub-config dicts and unknown top-level keys for a lossless round trip.
        self._raw_sub = {
            key: copy.deepcopy(value)
            for key in ("vision_config", "llm_config")
            if isinstance(value := getattr(self, key), dict)
        }
        self._raw_top = {k: copy.deepcopy(v) for k, v in kwargs.items() if k not in _VOLATILE_KEYS}
        super().__post_init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        if self.ps_version not in ("v1", "v2"):
            raise ConfigError(f"ps_version must be 'v1' or 'v2', got {self.ps_version!r}")
        inverse = 1.0 / self.downsample_ratio if self.downsample_ratio else 0.0
        if not inverse or abs(inverse - round(inverse)) > 1e-6:
            raise ConfigError(f"downsample_ratio must be 1/k for an integer k, got {self.downsample_ratio}")
        layers = self.vision_config.num_hidden_layers
        if not -layers <= self.select_layer < layers:
            raise ConfigError(
                f"select_layer {self.select_layer} is out of range for a ViT with {layers} blocks"
            )
        grid = self.vision_config.grid_size
        if grid % round(inverse):
            raise ConfigError(f"the {grid}x{grid} patch grid cannot be pixel-shuffled by {self.downsample_ratio}")

    # ---- derived quantities (the processor and the model both read these) ----
    @property
    def shuffle_factor(self) -> int:
        """Side of the pixel-shuffle window (2 for downsample_ratio 0.5)."""
        return round(1.0 / self.downsample_ratio)

    @property
    def tokens_per_tile(self) -> int:
        """LLM tokens one 448 tile costs: (448/14)^2 * 0.5^2 = 256."""
        return (self.vision_config.grid_size // self.shuffle_factor) ** 2

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        current = super().to_dict()
        out = copy.deepcopy(self._raw_top)
        for key, value in current.items():
            if key in ("vision_config", "llm_config") or key in _VOLATILE_KEYS or key.startswith("_raw"):
                continue
            out[key] = value
        for key in ("vision_config", "llm_config"):
            out[key] = _overlay(self._raw_sub.get(key, {}), getattr(self, key))
        _sync_torch_dtype(out, self.dtype)
        out["model_type"] = self.model_type
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        # The release writes full configs; so do we.
        return self.to_dict()

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:
        """Write `config.json` atomically (temporary file, then rename)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / CONFIG_NAME, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "SAILVLConfig":
        """Read `config.json` from a local directory (or the file itself), with clear errors."""
        path = Path(pretrained_model_name_or_path)
        file = path / CONFIG_NAME if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"no {CONFIG_NAME} found at {path} (expected a SAIL-VL2 checkpoint directory)")
        try:
            config_dict = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{file} is not valid JSON: {err}") from err
        if not isinstance(config_dict, dict):
            raise ConfigError(f"{file} must hold a JSON object, got {type(config_dict).__name__}")
        model_type = config_dict.get("model_type")
        if model_type != cls.model_type:
            raise ConfigError(
                f"{file} has model_type {model_type!r}; sailvl2 loads SAIL-VL2 checkpoints (model_type 'sailvl')"
            )
        for key in ("vision_config", "llm_config"):
            if not isinstance(config_dict.get(key), dict):
                raise ConfigError(f"{file} is missing the {key!r} section")
        kwargs = {k: v for k, v in kwargs.items() if k not in _HUB_KWARGS}
        result = cls.from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config._name_or_path = str(path)
        return result

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "SAILVLConfig":
        """Build from a dict; like transformers, extra `kwargs` that name config attributes override them and
        the others are handed back when `return_unused_kwargs=True` (AutoConfig relies on this)."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        try:
            config = cls(**copy.deepcopy(config_dict))
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError) as err:
            raise ConfigError(f"invalid SAIL-VL2 config: {err}") from err
        unused = {}
        for key, value in kwargs.items():
            if key in ("dtype", "torch_dtype") and value is not None and value != "auto":
                config.dtype = getattr(torch, value.removeprefix("torch.")) if isinstance(value, str) else value
            elif hasattr(config, key) and not key.startswith("_"):
                setattr(config, key, value)
            else:
                unused[key] = value
        return (config, unused) if return_unused else config

    def llm_build_config(self) -> PreTrainedConfig:
        """The LLM config the language model is built from.

        The release stores `lm_head.weight` separately from `embed_tokens` although
        `llm_config.tie_word_embeddings` is true, and its loader keeps them untied (FACTS.md). So the model is
        always built untied; a checkpoint without `lm_head.weight` gets a copy of the embeddings on load.
        """
        llm_config = copy.deepcopy(self.llm_config)
        llm_config.tie_word_embeddings = False
        return llm_config


# Keyword arguments `AutoConfig`/`AutoModel.from_pretrained` pass along that are not config fields.
_HUB_KWARGS = frozenset(
    {
        "trust_remote_code", "cache_dir", "force_download", "proxies", "token", "revision", "local_files_only",
        "subfolder", "_from_auto", "_from_pipeline", "code_revision", "resume_download", "use_auth_token",
        "_commit_hash", "adapter_kwargs",
    }
)


def _overlay(raw: dict[str, Any], config: PreTrainedConfig) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for key, value in config.to_dict().items():
        if key in _VOLATILE_KEYS or key.startswith("_raw"):
            continue
        out[key] = value
    _sync_torch_dtype(out, getattr(config, "dtype", None))
    return out


def _sync_torch_dtype(out: dict[str, Any], dtype: Any) -> None:
    """transformers 5 writes `dtype`; transformers 4 (the release code) reads `torch_dtype`. Write both."""
    if dtype is None:
        return
    name = str(dtype).removeprefix("torch.")
    out["dtype"] = name
    out["torch_dtype"] = name


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never half of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
