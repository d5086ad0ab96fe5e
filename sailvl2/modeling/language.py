"""The LLM of SAIL-VL2, built with transformers' own classes (Qwen3 dense, Qwen3-MoE, or any causal LM).

The release uses Qwen3 (`Qwen3ForCausalLM`); the paper's MoE variants use Qwen3-MoE
(`Qwen3MoeForCausalLM`, PAPER.md 2.4-2.5). Building through the causal-LM mapping keeps the release weight
names (`language_model.model.*`, `language_model.lm_head.weight`) and picks up MoE routers with no code here.
"""

from __future__ import annotations

from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from ..errors import ConfigError
from .packed_attention import ATTN_IMPLEMENTATION


def build_language_model(llm_config: PreTrainedConfig) -> PreTrainedModel:
    """Instantiate the causal LM for `llm_config` under the current default dtype and device.

    We call the class directly instead of `AutoModelForCausalLM.from_config`, which would build in the
    config's stored dtype (bf16 in the release) whatever dtype the caller asked for.
    """
    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(llm_config)]
    except KeyError as err:
        raise ConfigError(
            f"llm_config has model_type {llm_config.model_type!r}, which has no causal-LM class in transformers"
        ) from err
    if getattr(llm_config, "_attn_implementation", None) is None:
        # SDPA on every device; numerically equal to eager in fp32 (golden/cases/README.md). `sailvl2_sdpa` is
        # transformers' SDPA plus per-sample attention for packed training rows (packed_attention.py).
        llm_config._attn_implementation = ATTN_IMPLEMENTATION
    return model_class(llm_config)


def is_moe(llm_config: PreTrainedConfig) -> bool:
    """True for sparse (mixture-of-experts) backbones such as Qwen3-MoE."""
    return bool(getattr(llm_config, "num_experts", 0) or getattr(llm_config, "num_local_experts", 0))
