"""The Muon + AdamW optimizer (training/muon.py): the orthogonalisation against an SVD, the AdamW half
against torch's AdamW, the Muon half against torch's own Muon, and the trainer with `optim.kind: muon`
(parameter groups, exact resume, clear errors)."""

from __future__ import annotations

import pytest
import torch

from sailvl2.errors import ConfigError
from sailvl2.training.muon import MuonAdamW, orthogonalize, uses_muon
from sailvl2.training.recipe import load_recipe
from sailvl2.training.setup import param_groups

from .test_training import _assert_same_run, _interrupted_run, _losses, _run, _weights


@pytest.mark.parametrize("shape", [(64, 24), (24, 64), (32, 32)])
def test_orthogonalize_approximates_the_polar_factor(shape):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(*shape, generator=generator)
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    polar = u @ vh
    result = orthogonalize(matrix * 123.0)  # scale-free: the input is normalised first
    singular = torch.linalg.svdvals(result)
    # The quintic iteration trades exactness for speed: every singular value lands in about [0.6, 1.2].
    assert singular.min() > 0.5 and singular.max() < 1.25
    cosine = (result * polar).sum() / (result.norm() * polar.norm())
    assert cosine > 0.95


def test_a_stack_of_matrices_is_orthogonalised_matrix_by_matrix():
    generator = torch.Generator().manual_seed(1)
    # different scales: each matrix must be normalised by its own norm, not the stack's
    stack = torch.stack([torch.randn(40, 24, generator=generator) * scale for scale in (0.01, 1.0, 300.0)])
    batched = orthogonalize(stack)
    for matrix, result in zip(stack, batched):
        torch.testing.assert_close(result, orthogonalize(matrix), rtol=0, atol=1e-6)
    assert batched.shape == stack.shape


def _twin_params(seed: int = 0, shapes=((16, 8), (8,), (8, 16))) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    generator = torch.Generator().manual_seed(seed)
    first = [torch.nn.Parameter(torch.randn(*s, generator=generator)) for s in shapes]
    second = [torch.nn.Parameter(p.detach().clone()) for p in first]
    return first, second


def _fake_grads(params: list[torch.nn.Parameter], step: int) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator)


def test_adamw_groups_match_torch_adamw():
    ours_params, torch_params = _twin_params()
    ours = MuonAdamW([{"params": ours_params, "lr": 3e-3, "weight_decay": 0.1}], betas=(0.9, 0.95))
    reference = torch.optim.AdamW([{"params": torch_params, "lr": 3e-3, "weight_decay": 0.1}], betas=(0.9, 0.95))
    for step in range(5):
        _fake_grads(ours_params, step)
        _fake_grads(torch_params, step)
        ours.step()
        reference.step()
    for mine, theirs in zip(ours_params, torch_params):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


# The second set repeats shapes, so that the step's batched stacks (one per shape) hold several matrices.
@pytest.mark.parametrize("shapes", [((16, 8), (8,), (8, 16)), ((16, 8),) * 3 + ((8, 16),) * 2 + ((12, 12),)])
def test_muon_groups_match_torch_muon(shapes):
    ours_params, torch_params = _twin_params(shapes=shapes)
    matrices = [p for p in ours_params if p.ndim == 2]
    reference_matrices = [p for p in torch_params if p.ndim == 2]
    ours = MuonAdamW([{"params": matrices, "lr": 2e-3, "weight_decay": 0.05, "muon": True}])
    reference = torch.optim.Muon(reference_matrices, lr=2e-3, weight_decay=0.05, momentum=0.95, nesterov=True,
                                 adjust_lr_fn="match_rms_adamw")
    before = [p.detach().clone() for p in matrices]
    for step in range(4):
        _fake_grads(matrices, step)
        _fake_grads(reference_matrices, step)
        ours.step()
        reference.step()
    for mine, theirs, start in zip(matrices, reference_matrices, before):
        ours_move, torch_move = mine.detach() - start, theirs.detach() - start
        assert torch_move.norm() > 1e-3
        # torch runs the Newton-Schulz iteration in bf16 and we in fp32: the moves agree to about 1 %, where
        # a wrong scale, momentum or decay would be off by tens of per cent.
        assert (ours_move - torch_move).norm() / torch_move.norm() < 0.03


def test_muon_group_rejects_vectors():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(4))], "muon": True}])


def test_muon_groups_hold_only_hidden_matrices(tmp_path):
    from sailvl2.modeling import SAILVLModel
    from sailvl2.tiny import build_random_checkpoint

    model = SAILVLModel.from_pretrained(build_random_checkpoint(tmp_path / "tiny"))
    groups = param_groups(model, load_recipe("debug", ["optim.kind=muon"]))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in groups if g.get("muon") for p in g["params"]]
    adamw = [names[id(p)] for g in groups if not g.get("muon") for p in g["params"]]
    assert any(".mlp." in n for n in muon) and any("q_proj" in n for n in muon)
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in muon)
    assert any("embed_tokens" in n for n in adamw)
    assert len(muon) + len(adamw) == sum(1 for p in model.parameters() if p.requires_grad)
    assert all(uses_muon(n, p) == (n in muon) for n, p in model.named_parameters())


def test_trainer_with_muon_learns_and_resumes_exactly(tmp_path):
    """Muon's momentum buffers go through the checkpoint: dropping the last checkpoint and rerunning resumes
    at step 4 and ends bit-identical to the uninterrupted run."""
    settings = ["optim.kind=muon", "max_steps=8", "save_every=4", "keep_last=3"]
    _run(tmp_path / "adamw", "max_steps=8", "save_every=0")
    _run(tmp_path / "straight", *settings)
    losses = _losses(tmp_path / "straight")
    assert losses != _losses(tmp_path / "adamw")  # the option really switches the optimizer
    assert sum(losses[-3:]) < sum(losses[:3])
    _interrupted_run(tmp_path / "resumed", 8, *settings)
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.kind"):  # when the recipe loads, before any model is built
        load_recipe("debug", ["optim.kind=sgd"])


def test_torchrun_sharded_muon_matches_one_process(tmp_path):
    """Under FSDP2 each rank holds a slice of every matrix: the orthogonalisation must see the whole one.
    Two processes then train like one (the same data in the same order, see test_training.py)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import REPO_ROOT
    from .test_training import RUNNER

    settings = ["optim.kind=muon", "max_steps=6", "save_every=0"]
    _run(tmp_path / "single", *settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={tmp_path / 'ddp'}",
                             *settings], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ones, twos = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(ones) == len(twos) == 6
    assert max(abs(a - b) for a, b in zip(ones, twos)) <= 1e-4
    first, second = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    assert max((first[k].float() - second[k].float()).abs().max().item() for k in first) <= 1e-5
