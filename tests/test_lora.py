"""LoRA through PEFT: only adapters train, merge -> export gives the release layout and the same logits."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sailvl2.errors import CheckpointError, ConfigError, InputError
from sailvl2.modeling import SAILVLModel
from sailvl2.modeling.weights import weight_files
from sailvl2.tiny import TINY_MOE_LLM, build_random_checkpoint
from sailvl2.training.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    apply_lora,
    has_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
)

FIRST_TEXT_ID = 14  # ids below are the special tokens of the tiny tokenizer (incl. <IMG_CONTEXT>)


@pytest.fixture(scope="module")
def dense_ckpt(tmp_path_factory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("lora") / "dense", seed=5)


@pytest.fixture(scope="module")
def moe_ckpt(tmp_path_factory) -> Path:
    return build_random_checkpoint(tmp_path_factory.mktemp("lora") / "moe", seed=6, llm=TINY_MOE_LLM)


def _text_batch(model: SAILVLModel, generator: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(FIRST_TEXT_ID, model.config.llm_config.vocab_size, (2, 16), generator=generator)
    assert not (ids == model.config.image_token_id).any()
    return {"input_ids": ids, "labels": ids.clone()}


def _image_batch(model: SAILVLModel, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One tile and exactly `tokens_per_tile` image tokens between two text spans (see `embed_inputs`)."""
    vocab, image_id = model.config.llm_config.vocab_size, model.config.image_token_id
    text = torch.randint(FIRST_TEXT_ID, vocab, (1, 10), generator=generator)
    slots = torch.full((1, model.config.tokens_per_tile), image_id)
    ids = torch.cat([text[:, :4], slots, text[:, 4:]], dim=1)
    labels = ids.masked_fill(ids == image_id, -100)
    size = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=generator)
    return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


def _logits(model: SAILVLModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def _frozen_state(model: SAILVLModel) -> dict[str, torch.Tensor]:
    """Non-LoRA weights under their release names (PEFT's `.base_layer` segment dropped)."""
    return {
        name.replace(".base_layer", ""): tensor.clone()
        for name, tensor in model.state_dict().items()
        if ".lora_" not in name
    }


@pytest.mark.parametrize("targets", ["llm", "vit", "both"])
def test_lora_train_merge_export(dense_ckpt, tmp_path, targets):
    generator = torch.Generator().manual_seed(0)
    model = SAILVLModel.from_pretrained(dense_ckpt, dtype=torch.float32)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoRAConfig(targets=targets, r=4, alpha=8.0, dropout=0.1))

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    wrapped = {"llm": ("language_model.",), "vit": ("vision_model.",), "both": ("language_model.", "vision_model.")}
    assert {n.split(".")[0] + "." for n in trainable} == set(wrapped[targets])
    assert _frozen_state(model).keys() == base.keys()
    initial_lora = {k: v.clone() for k, v in lora_state_dict(model).items()}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    # Text-only batches cannot reach ViT adapters, so the "vit" run trains on images only.
    steps = ["image"] * 3 if targets == "vit" else ["text", "text", "image"]
    model.train()
    for step in steps:
        batch = _text_batch(model, generator) if step == "text" else _image_batch(model, generator)
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        for name, param in model.named_parameters():
            if name not in trainable:
                assert param.grad is None, name
            elif step == "image" or name.startswith("language_model."):
                assert param.grad is not None, name  # lora_A's gradient is 0 while lora_B is still 0
                assert ".lora_A." in name or param.grad.abs().sum() > 0, name
        optimizer.step()

    # Only the adapters moved; every base weight is bit-identical.
    frozen = _frozen_state(model)
    assert all(torch.equal(frozen[k], base[k]) for k in base)
    moved = lora_state_dict(model)
    assert all(not torch.equal(moved[k], initial_lora[k]) for k in moved if ".lora_B." in k)

    text, image = _text_batch(model, generator), _image_batch(model, generator)
    adapted_text, adapted_image = _logits(model, text), _logits(model, image)
    if targets != "vit":
        assert not torch.allclose(adapted_text, _reference_logits(dense_ckpt, text), atol=1e-4)

    # save_adapter / load_adapter round trip into a fresh base model.
    adapter_dir = save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in adapter_dir.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    reloaded = load_adapter(SAILVLModel.from_pretrained(dense_ckpt, dtype=torch.float32), adapter_dir)
    assert torch.equal(_logits(reloaded, text), adapted_text)
    assert torch.equal(_logits(reloaded, image), adapted_image)

    # Merge -> plain SAILVLModel -> release layout -> same logits.
    merged = merge_lora(model)
    assert merged is model and not has_lora(model)
    assert set(model.state_dict()) == set(base)
    assert not any("peft" in type(m).__module__ for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    changed = [k for k in base if not torch.equal(model.state_dict()[k], base[k])]
    assert changed and all(k.startswith(wrapped[targets]) for k in changed)
    model.save_pretrained(tmp_path / "merged")
    assert set(weight_files(tmp_path / "merged")) == set(weight_files(dense_ckpt))
    exported = SAILVLModel.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    torch.testing.assert_close(_logits(exported, text), adapted_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(_logits(exported, image), adapted_image, rtol=0, atol=1e-5)


def _reference_logits(directory: Path, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return _logits(SAILVLModel.from_pretrained(directory, dtype=torch.float32), batch)


def test_lora_on_moe_experts_merges(moe_ckpt, tmp_path):
    """Qwen3-MoE stores experts as fused 3-D parameters; PEFT wraps them and the merge must fold them in."""
    generator = torch.Generator().manual_seed(1)
    model = SAILVLModel.from_pretrained(moe_ckpt, dtype=torch.float32)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # PEFT notes its MoE rank patterns unused at rank r
        apply_lora(model, LoRAConfig(targets="llm", r=4, alpha=8.0))
    assert any(".experts." in k for k in lora_state_dict(model))
    fresh = SAILVLModel.from_pretrained(moe_ckpt, dtype=torch.float32)
    with pytest.raises(ConfigError, match="cannot add LoRA to language_model.*dropout"):
        apply_lora(fresh, LoRAConfig(targets="both", r=4, dropout=0.1))  # PEFT's expert wrappers have no dropout
    assert not has_lora(fresh) and set(fresh.state_dict()) == set(base)
    assert all(p.requires_grad for p in fresh.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(**_text_batch(model, generator)).loss.backward()
        optimizer.step()
    text = _text_batch(model, generator)
    adapted = _logits(model, text)
    merge_lora(model)
    assert set(model.state_dict()) == set(base)
    assert not torch.equal(model.state_dict()["language_model.model.layers.0.mlp.experts.down_proj"],
                           base["language_model.model.layers.0.mlp.experts.down_proj"])
    model.save_pretrained(tmp_path / "merged")
    exported = SAILVLModel.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    torch.testing.assert_close(_logits(exported, text), adapted, rtol=0, atol=1e-5)


def test_lora_errors(dense_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="targets"):
        LoRAConfig(targets="mlp1")
    with pytest.raises(ConfigError, match="rank"):
        LoRAConfig(r=0)
    with pytest.raises(ConfigError, match="dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="alpha"):
        LoRAConfig(alpha="16")
    model = SAILVLModel.from_pretrained(dense_ckpt, dtype=torch.float32)
    with pytest.raises(ConfigError, match="match no layer of vision_model"):
        apply_lora(model, LoRAConfig(targets="both", target_modules=("q_proj",)))
    assert not has_lora(model)  # nothing was injected into the LLM either
    with pytest.raises(InputError, match="no LoRA adapters"):
        merge_lora(model)
    with pytest.raises(InputError, match="no LoRA adapters"):
        save_adapter(model, tmp_path / "none")
    with pytest.raises(CheckpointError, match=ADAPTER_CONFIG):
        load_adapter(model, tmp_path)
    apply_lora(model, LoRAConfig(targets="llm", r=2, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(InputError, match="already has LoRA"):
        apply_lora(model, LoRAConfig())
    saved = save_adapter(model, tmp_path / "qv")
    other = apply_lora(SAILVLModel.from_pretrained(dense_ckpt, dtype=torch.float32), LoRAConfig(r=2))
    with pytest.raises(ConfigError, match="differ"):
        load_adapter(other, saved)

    # A damaged adapter file is refused and the fresh model is left without wrappers.
    state = load_file(saved / ADAPTER_WEIGHTS)
    state.pop(sorted(state)[0])
    save_file(state, str(saved / ADAPTER_WEIGHTS))
    fresh = SAILVLModel.from_pretrained(dense_ckpt, dtype=torch.float32)
    keys = set(fresh.state_dict())
    with pytest.raises(CheckpointError, match="1 adapter weights missing"):
        load_adapter(fresh, saved)
    assert not has_lora(fresh) and set(fresh.state_dict()) == keys
