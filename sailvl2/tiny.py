"""Small random SAIL-VL2 checkpoints in the release layout, built on the fly.

Used by `make demo` until the trained nano model ships, and by tests that need a model with its own
tokenizer (dense or MoE LLM). The tokenizer is a byte-level BPE trained in a fraction of a second on a
built-in corpus; it carries the release's special tokens with the same strings (FACTS.md "Token ids"),
though not the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .configuration import SAILVLConfig, atomic_write_text

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<img>", "</img>", "<IMG_CONTEXT>",
    "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>",
)

_CORPUS = (
    "Describe the image. What colour is the largest shape? How many circles are there? "
    "The picture shows a red square, a blue circle and a green triangle on a white background. "
    "What is written here? Compare the two images. The answer is \\boxed{3}. "
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 left right top bottom above below yes no "
    "你是由抖音内容理解组开发的多模态大模型，英文名叫UniVL, 是一个有用无害的人工智能助手。"
)

# Sizes of the demo model: big enough to exercise every path, small enough to build in a second.
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "image_size": 448, "patch_size": 14,
}
TINY_LLM: dict[str, Any] = {
    "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 8192, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
TINY_MOE_LLM: dict[str, Any] = {
    **TINY_LLM, "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "num_experts": 4,
    "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1, "norm_topk_prob": True,
}


def build_tokenizer(directory: Path, vocab_size: int = 800, corpus: Iterable[str] | None = None,
                    individual_digits: bool = False) -> dict[str, int]:
    """Train a byte-level BPE with the release special tokens (on `corpus`, default a built-in text) and
    save it; returns the special-token ids. `individual_digits` splits numbers into single digits before
    BPE, as Qwen's tokenizer does, so every number is spelled from the same ten tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if individual_digits else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(corpus if corpus is not None else [_CORPUS] * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
    )
    fast.save_pretrained(str(directory))
    return {token: fast.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def build_random_checkpoint(
    directory: str | Path,
    seed: int = 0,
    vision: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    max_num: int = 6,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 800,
    individual_digits: bool = False,
) -> Path:
    """Write a random-weight SAIL-VL2 checkpoint (config, safetensors, tokenizer, preprocessor config)."""
    from .modeling import SAILVLModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ids = build_tokenizer(directory, vocab_size=vocab_size, corpus=corpus, individual_digits=individual_digits)
    vocab_size = len(json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"])
    llm_config = {
        **(llm or TINY_LLM), "vocab_size": vocab_size, "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|endoftext|>"],
    }
    config = SAILVLConfig(
        vision_config={"model_type": "sailvit", **(vision or TINY_VISION)},
        llm_config=llm_config,
        image_token_id=ids["<IMG_CONTEXT>"],
        architectures=["SAILVLModel"],
        max_dynamic_patch=max_num,
    )
    torch.manual_seed(seed)
    model = SAILVLModel(config)
    model.save_pretrained(directory)
    image_size = config.vision_config.image_size
    preprocessor = {
        "max_dynamic_patch": max_num, "patch_size": config.vision_config.patch_size, "image_size": image_size,
        "use_msac": False, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "pad_input": True,
    }
    atomic_write_text(directory / "preprocessor_config.json", json.dumps(preprocessor, indent=4) + "\n")
    atomic_write_text(directory / "generation_config.json", json.dumps({"_from_model_config": True}) + "\n")
    return directory
