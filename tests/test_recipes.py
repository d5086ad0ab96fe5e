"""The shipped training ladder: every recipe loads, carries the paper's numbers (written here from PAPER.md,
independently of the YAML files), documents itself, and one of them trains for 2 steps on CPU."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from sailvl2.training.adalrs import AdaLRSConfig
from sailvl2.training.recipe import PARTS, RECIPE_DIR, load_recipe
from sailvl2.training.trainer import Trainer

from .conftest import REPO_ROOT

ALL = tuple(PARTS)
# name -> what PAPER.md says. lr: peak LR of every trainable part; seq: packing.max_seq_len;
# tokens: the stage's token budget (Table 3/4); batch: the global batch in samples; tokens_per_sample: the
# stage's tokens / samples (PAPER.md 4.7), used to convert samples to packed rows.
PAPER = {
    "sailvit_stage1": dict(section="PAPER.md 3", trainable={"adapter"}, lr=2e-4, seq=8192, batch=1920,
                           tokens_per_sample=2000, epoch_samples=8e6),
    "sailvit_stage2": dict(section="PAPER.md 3", trainable={"vit", "adapter"}, lr=2e-5, seq=8192, batch=512,
                           tokens_per_sample=2000),
    "sailvit_stage3": dict(section="PAPER.md 3", trainable=set(ALL), lr=1e-5, seq=8192, batch=512,
                           tokens_per_sample=2000, epoch_samples=36.5e6),
    "basic_pretrain": dict(section="PAPER.md 5.1", trainable={"adapter"}, lr=2e-4, seq=8192, batch=2048,
                           tokens=128e9, tokens_per_sample=2000, epoch_samples=64e6),
    "multitask_pretrain": dict(section="PAPER.md 5.2", trainable=set(ALL), seq=8192, tokens=360e9),
    "sft_phase1": dict(section="PAPER.md 8.1", trainable=set(ALL), seq=8192, tokens=42e9),
    "sft_phase2": dict(section="PAPER.md 8.1", trainable=set(ALL), seq=8192, tokens=40e9),
    "sft_phase3": dict(section="PAPER.md 8.1", trainable=set(ALL), seq=8192, tokens=16e9),
    "sft_phase4": dict(section="PAPER.md 8.1", trainable=set(ALL), seq=16384, tokens=70e9),
    "longcot_sft": dict(section="PAPER.md 8.2", trainable=set(ALL), lr=1e-6, seq=20480, batch=1024,
                        tokens_per_sample=1000, epoch_samples=400e3, schedule="cosine"),
    "think_fusion_sft": dict(section="PAPER.md 8.4", trainable=set(ALL), lr=1e-6, seq=20480, batch=1024,
                             tokens_per_sample=1000, epoch_samples=1e6, schedule="cosine"),
}
SHIPPED = sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def _total_steps(recipe) -> int:
    """Steps at completely full rows (the trainer's schedule allows for 97% packing efficiency and stops on
    real tokens; the paper's counts assume full batches)."""
    return recipe.max_steps or math.ceil(recipe.max_tokens / (recipe.global_batch_rows * recipe.packing.max_seq_len))


def test_the_whole_ladder_is_shipped():
    nano = {"nano_warmup", "nano_align", "nano_multitask", "nano_sft", "nano_longcot"}  # the nano ladder (issue 4)
    judges = {"judge_yesno", "judge_score"}  # curation judges fine-tuned from a SAIL-VL2 checkpoint (issue 6)
    assert set(PAPER) | {"debug"} | nano | judges == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_loads_with_real_numbers(name):
    recipe = load_recipe(RECIPE_DIR / f"{name}.yaml")
    assert recipe.name == name
    # PyYAML reads `1e-6` or `1.0e9` as strings; the recipes must spell numbers so they load as numbers.
    numbers = [*recipe.optim.lr.values(), recipe.optim.weight_decay, recipe.optim.eps, recipe.optim.grad_clip,
               *recipe.optim.betas, recipe.schedule.min_lr_ratio, recipe.schedule.decay_fraction]
    numbers += [recipe.max_tokens] if recipe.max_tokens is not None else []
    assert all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers), numbers
    assert all(isinstance(x, int) for x in (recipe.global_batch_rows, recipe.packing.max_seq_len,
                                            recipe.packing.buffer_size, recipe.schedule.warmup_steps))
    if recipe.adalrs is not None:
        AdaLRSConfig(**recipe.adalrs)  # unknown keys or bad values would only surface in the Trainer
    assert 0 <= recipe.schedule.warmup_steps < _total_steps(recipe)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipe_carries_the_paper_numbers(name):
    paper = PAPER[name]
    recipe = load_recipe(name)
    assert set(recipe.trainable) == paper["trainable"], name
    assert recipe.vit_last_n_blocks is None
    assert recipe.packing.max_seq_len == paper["seq"]
    if "lr" in paper:
        assert all(recipe.optim.lr[part] == pytest.approx(paper["lr"], rel=1e-12) for part in recipe.trainable)
    if "schedule" in paper:
        assert recipe.schedule.kind == paper["schedule"]
    if "tokens" in paper:
        assert recipe.max_tokens == pytest.approx(paper["tokens"])
    if "batch" in paper:  # packed rows hold the paper's batch of samples (within one row)
        per_sample = paper["tokens_per_sample"]
        samples_per_step = recipe.global_batch_rows * recipe.packing.max_seq_len / per_sample
        assert abs(samples_per_step - paper["batch"]) <= recipe.packing.max_seq_len / per_sample
        if "epoch_samples" in paper:  # 1 epoch: the paper's number of optimizer steps
            assert _total_steps(recipe) == pytest.approx(paper["epoch_samples"] / paper["batch"], rel=1e-3)
    # The packer deals rows from its buffer: it must hold at least one step of samples, or steps shrink.
    per_sample = paper.get("tokens_per_sample", 2000)
    assert recipe.packing.buffer_size >= recipe.global_batch_rows * recipe.packing.max_seq_len / per_sample
    assert recipe.packing.balance_tiles  # visual packing, PAPER.md 6.2
    assert recipe.gradient_checkpointing
    assert recipe.dtype == "float32"  # fp32 master weights; bf16 would drop LR-1e-6 updates (docs/training.md)
    # Placeholders the user overrides; loading does not touch them.
    paths = [recipe.init.checkpoint, recipe.init.vit_from, recipe.init.llm_from, recipe.data.mixture]
    assert recipe.data.mixture and all(p.startswith("CHANGE_ME/") for p in paths if p)


def test_stage_specific_paper_facts():
    basic = load_recipe("basic_pretrain")
    assert basic.trainable == ("adapter",) and basic.init.reset_adapter  # PAPER.md 5.1
    adalrs = AdaLRSConfig(**basic.adalrs)
    assert adalrs.enabled and (adalrs.search_start, adalrs.search_end) == (0.1, 0.4)  # PAPER.md 7.2
    assert (adalrs.alpha, adalrs.beta, adalrs.decay, adalrs.error_sigmas) == (3.0, 2.0, 0.99, 2.0)  # 7.1, 7.2
    assert basic.optim.lr["adapter"] * 27 / 8 == pytest.approx(6.75e-4)  # reachable: the paper's final LR (5.1)
    assert basic.schedule.warmup_steps < adalrs.search_start * _total_steps(basic)
    assert _total_steps(basic) == 64_000_000 // 2048  # 64M samples at batch 2048 (PAPER.md 5.1)

    multitask = load_recipe("multitask_pretrain")
    assert set(multitask.trainable) == set(ALL) and not multitask.adalrs  # PAPER.md 5.2: all, no AdaLRS
    assert not load_recipe("sailvit_stage1").init.checkpoint  # ViT and LLM come from separate checkpoints
    assert load_recipe("sft_phase4").packing.max_seq_len == 16384  # PAPER.md 8.1
    for name in ("longcot_sft", "think_fusion_sft"):  # PAPER.md 8.2, 8.4
        recipe = load_recipe(name)
        assert recipe.schedule.kind == "cosine" and recipe.packing.max_seq_len == 20480
        assert set(recipe.optim.lr.values()) == {1e-6}
        assert recipe.packing.loss_reduction == "token"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipe_header_documents_stage_commands_and_inputs(name):
    text = (RECIPE_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    header = text.split("\nname:")[0]
    assert PAPER[name]["section"] in header
    assert f"sailvl2 train {name} 'init={{random: tiny" in header  # CPU smoke run
    assert f"torchrun --nproc_per_node 8 -m sailvl2.cli train {name}" in header
    assert "You provide" in header and "[PAPER" in header and "[OURS]" in header
    assert name in (REPO_ROOT / "docs" / "training.md").read_text(encoding="utf-8")


def test_a_ladder_recipe_runs_two_steps_on_cpu(tmp_path):
    overrides = [
        "init={random: tiny}", "data={synthetic: {num_samples: 8, image_size: 96}, max_num: 1}",
        "packing.max_seq_len=1024", "packing.buffer_size=8", "global_batch_rows=1", "max_steps=2",
        "dtype=float32", "gradient_checkpointing=false", f"output_dir={tmp_path / 'run'}",
    ]
    torch.set_num_threads(1)
    try:
        trainer = Trainer(load_recipe("basic_pretrain", overrides))
        assert trainer.adalrs is not None  # the recipe's AdaLRS block survives the overrides
        result = trainer.run()
    finally:
        torch.set_num_threads(2)
    assert result.steps == 2 and len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    before = load_file(str(tmp_path / "run" / "init-random-tiny" / "model.safetensors"))
    after = load_file(str(result.final_dir / "model.safetensors"))
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("mlp1.") for key in changed)  # adapter only (PAPER.md 5.1)
