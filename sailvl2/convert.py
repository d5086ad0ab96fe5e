"""Build a SAIL-VL2 starting checkpoint from hub parts: an AIMv2 vision encoder and a Qwen3 LLM.

SAIL-ViT stage I and basic pre-training start from AIMv2-Huge-448 and a Qwen3 Instruct model (PAPER.md 2.1,
2.4, 5.1). The recipes' `init` takes SAIL-VL2-layout checkpoints, so this writes one:

    sailvl2 convert-init --vit apple/aimv2-huge-patch14-448 --llm Qwen/Qwen3-8B --out runs/init-8b
    sailvl2 train sailvit_stage1 init.checkpoint=runs/init-8b

(`--vit` / `--llm` are local folders: download them first, e.g. with `huggingface-cli download`.)

- **Vision.** Both AIMv2 layouts are read:
  - Apple's original remote-code one (`preprocessor.*`, `trunk.*`). SAIL-ViT keeps those names, so the keys
    only gain the `vision_model.` prefix.
  - transformers' native `Aimv2VisionModel` (`embeddings.*`, `encoder.layers.N.*`, optionally under
    `vision_model.` of a full `Aimv2Model`). Its separate q/k/v projections are concatenated into SAIL-ViT's
    `attn.qkv`, and its gate/up/down MLP becomes `fc1`/`fc3`/`fc2`.

  The attention-pooling head is dropped. Native-resolution AIMv2 variants (sine-cosine positions) are refused:
  SAIL-ViT has learned positions.
- **LLM.** The causal LM's `model.*` / `lm_head.*` keys gain the `language_model.` prefix; its config becomes
  `llm_config` unchanged.
- **Tokenizer.** The LLM's tokenizer gets the release's special tokens it lacks (`<img>`, `<IMG_CONTEXT>`,
  `<ref>`, ...). Qwen3's vocabulary has unused rows for them. If there are not enough, conversion stops
  rather than resizing silently.
- **Adapter.** `mlp1` is freshly initialised, as basic pre-training expects (PAPER.md 2.2).

The whole checkpoint is held in memory once, in its stored dtype (about 17 GB for AIMv2-Huge + Qwen3-8B in
bf16), and then written as shards. Output files are written through a staging folder and moved in at the end
(`modeling/weights.py`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .modeling.weights import iter_tensors, save_state_dict, weight_files

__all__ = ["convert_init", "vision_key_map"]

_VISION_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                       "num_channels", "image_size", "patch_size", "rms_norm_eps", "attention_dropout", "qkv_bias")
# transformers' native Aimv2 names -> SAIL-ViT names, within one encoder layer.
_LAYER_NAMES = {"rms_norm1": "norm_1", "rms_norm2": "norm_2", "attention.out_proj": "attn.proj",
                "ffn.gate_proj": "mlp.fc1", "ffn.down_proj": "mlp.fc2", "ffn.up_proj": "mlp.fc3"}
_TOP_NAMES = {"embeddings.patch_embed": "preprocessor.patchifier.proj",
              "embeddings.rms_norm": "preprocessor.patchifier.norm", "rms_norm": "trunk.post_trunk_norm"}


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def _sailvit_config(config: dict[str, Any]) -> dict[str, Any]:
    """SAIL-ViT config fields from an AIMv2 config (either layout; a full Aimv2Model's `vision_config`)."""
    config = config.get("vision_config", config)
    if config.get("is_native"):
        raise CheckpointError("native-resolution AIMv2 (sine-cosine positions) cannot become SAIL-ViT, which "
                              "has learned positions; use a fixed-resolution variant such as aimv2-huge-patch14-448")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size")
               if k not in config]
    if missing:
        raise CheckpointError(f"the vision config lacks {missing}; is this an AIMv2 checkpoint?")
    out = {"model_type": "sailvit", **{k: config[k] for k in _VISION_CONFIG_KEYS if k in config}}
    out["use_bias"] = bool(config.get("use_bias", config.get("mlp_bias", False)))
    return out


def vision_key_map(keys: list[str]) -> dict[str, list[str]]:
    """SAIL-ViT key (without `vision_model.`) -> the source keys it is made of (three for a fused qkv)."""
    if any(k.startswith(("trunk.", "preprocessor.")) for k in keys):  # Apple's original layout
        return {k: [k] for k in keys if k.startswith(("trunk.", "preprocessor."))}
    prefix = "vision_model." if any(k.startswith("vision_model.embeddings.") for k in keys) else ""
    own = [k[len(prefix):] for k in keys if k.startswith(prefix) and not k[len(prefix):].startswith("head.")]
    if not any(k.startswith("embeddings.") for k in own):
        raise CheckpointError("no AIMv2 vision weights found (expected trunk.* or embeddings.* / encoder.layers.*)")
    mapping: dict[str, list[str]] = {}
    for key in own:
        stem, _, leaf = key.rpartition(".")
        if key == "embeddings.position_embedding.weight":
            mapping["preprocessor.pos_embed"] = [prefix + key]
        elif stem in _TOP_NAMES:
            mapping[f"{_TOP_NAMES[stem]}.{leaf}"] = [prefix + key]
        elif key.startswith("encoder.layers."):
            index, rest = key[len("encoder.layers."):].split(".", 1)
            part, _, leaf = rest.rpartition(".")
            block = f"trunk.blocks.{index}"
            if part in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
                mapping.setdefault(f"{block}.attn.qkv.{leaf}", [])
                continue
            if part not in _LAYER_NAMES:
                raise CheckpointError(f"unexpected AIMv2 weight {prefix + key}")
            mapping[f"{block}.{_LAYER_NAMES[part]}.{leaf}"] = [prefix + key]
        else:
            raise CheckpointError(f"unexpected AIMv2 weight {prefix + key}")
    for target, sources in mapping.items():
        if ".attn.qkv." in target and not sources:
            block, leaf = target.split(".attn.qkv.")
            layer = block.split(".")[-1]
            sources += [f"{prefix}encoder.layers.{layer}.attention.{p}_proj.{leaf}" for p in "qkv"]
    return mapping


def _vision_tensors(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    files = weight_files(directory)
    mapping = vision_key_map(sorted(files))
    needed = {source for sources in mapping.values() for source in sources}
    lost = needed - set(files)
    if lost:
        raise CheckpointError(f"{directory} lacks {sorted(lost)[:3]} (q/k/v projections must come together)")
    tensors = dict(iter_tensors({k: files[k] for k in needed}))
    for target, sources in mapping.items():
        tensor = torch.cat([tensors[s] for s in sources]) if len(sources) > 1 else tensors[sources[0]]
        if target == "preprocessor.pos_embed" and tensor.dim() == 2:
            tensor = tensor[None]  # nn.Embedding [N, H] -> the release's [1, N, H] parameter
        yield f"vision_model.{target}", tensor


def _tokenizer(llm_dir: Path, out: Path, vocab_size: int) -> dict[str, int]:
    from transformers import AutoTokenizer

    from .tiny import SPECIAL_TOKENS

    tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if len(tokenizer) > vocab_size:
        raise CheckpointError(f"the tokenizer needs {len(tokenizer)} ids with the SAIL-VL2 special tokens, the LLM "
                              f"has {vocab_size} embedding rows; resize the LLM first")
    tokenizer.save_pretrained(str(out))
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def convert_init(vit_dir: str | Path, llm_dir: str | Path, out_dir: str | Path, max_num: int = 12,
                 seed: int = 0, max_shard_size: str = "5GB") -> Path:
    """Write a SAIL-VL2-layout checkpoint (config, safetensors, tokenizer, preprocessor config) to `out_dir`."""
    from .configuration import SAILVLConfig, atomic_write_text
    from .modeling.projector import SAILVLProjector

    vit_dir, llm_dir, out = Path(vit_dir), Path(llm_dir), Path(out_dir)
    vision_config = _sailvit_config(_read_config(vit_dir))
    llm_config = _read_config(llm_dir)
    if "vocab_size" not in llm_config or "hidden_size" not in llm_config:
        raise CheckpointError(f"{llm_dir}/config.json is not a causal-LM config (no vocab_size / hidden_size)")
    out.mkdir(parents=True, exist_ok=True)
    ids = _tokenizer(llm_dir, out, int(llm_config["vocab_size"]))
    config = SAILVLConfig(vision_config=vision_config, llm_config=llm_config, image_token_id=ids["<IMG_CONTEXT>"],
                          architectures=["SAILVLModel"], max_dynamic_patch=max_num)
    state: dict[str, torch.Tensor] = dict(_vision_tensors(vit_dir))
    llm_files = weight_files(llm_dir)
    for key, tensor in iter_tensors(llm_files):
        if not key.startswith(("model.", "lm_head.")):
            raise CheckpointError(f"unexpected LLM weight {key} in {llm_dir} (expected model.* and lm_head.*)")
        state[f"language_model.{key}"] = tensor
    # The adapter starts random, as in basic pre-training (PAPER.md 2.2), with the model's own initialisation
    # (normal(0, 0.02) weights, zero biases, unit LayerNorm), the same as `init.reset_adapter`.
    torch.manual_seed(seed)
    dtype = next(iter(state.values())).dtype
    projector = SAILVLProjector(config.vision_config.hidden_size, config.shuffle_factor,
                                int(llm_config["hidden_size"]))
    with torch.no_grad():
        for module in projector:
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, float(llm_config.get("initializer_range", 0.02)))
                module.bias.zero_()
    for name, tensor in projector.state_dict().items():
        state[f"mlp1.{name}"] = tensor.to(dtype)
    save_state_dict(state, out, max_shard_size)
    config.save_pretrained(str(out))
    preprocessor = {"max_dynamic_patch": max_num, "patch_size": vision_config["patch_size"],
                    "image_size": vision_config["image_size"], "use_msac": False,
                    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "pad_input": True}
    atomic_write_text(out / "preprocessor_config.json", json.dumps(preprocessor, indent=4) + "\n")
    for name in ("generation_config.json",):
        if (llm_dir / name).is_file():
            shutil.copyfile(llm_dir / name, out / name)
    return out
