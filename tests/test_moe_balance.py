"""MoE load balancing (training/moe_balance.py): the loss by hand, against transformers' own function, its
gradient through the router hooks, and the trainer's metrics on a tiny Qwen3-MoE."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sailvl2.errors import ConfigError
from sailvl2.modeling import SAILVLModel
from sailvl2.tiny import TINY_MOE_LLM, build_random_checkpoint
from sailvl2.training.moe_balance import LoadBalance, MoEConfig, load_balancing_loss
from sailvl2.training.recipe import load_recipe
from sailvl2.training.trainer import Trainer


def _logits(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).log()  # softmax(log p) = p for rows that sum to 1


def test_loss_by_hand() -> None:
    # Two tokens prefer experts 0 and 1, two prefer 3 and 2: every expert gets 2 of the 8 top-2 slots
    # (f = 1/4 each) and the mean probability is 1/4 each -> 4 * 4 * (1/4 * 1/4) = 1, perfect balance.
    forward, backward = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    loss, share = load_balancing_loss(_logits([forward, forward, backward, backward]), top_k=2)
    assert float(loss) == pytest.approx(1.0) and share.tolist() == pytest.approx([0.25] * 4)
    # All four prefer experts 0 and 1: f = (1/2, 1/2, 0, 0), p = (0.4, 0.3, 0.2, 0.1) -> 4 * 0.35 = 1.4.
    loss, share = load_balancing_loss(_logits([forward] * 4), top_k=2)
    assert float(loss) == pytest.approx(1.4) and share.tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])
    # Counts from elsewhere (other ranks) replace the local ones: f = (3, 1, 2, 2) / (4 * 2).
    loss, _ = load_balancing_loss(_logits([forward] * 4), top_k=2, counts=torch.tensor([3.0, 1.0, 2.0, 2.0]),
                                  tokens=4)
    assert float(loss) == pytest.approx(4 * (3 * 0.4 + 1 * 0.3 + 2 * 0.2 + 2 * 0.1) / 8)


def test_loss_is_transformers_loss_over_top_k() -> None:
    """transformers' load_balancing_loss_func lets f sum to k; ours (Megatron's) to 1: a factor k apart."""
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    logits = torch.randn(37, 8, generator=torch.Generator().manual_seed(0))
    ours, _ = load_balancing_loss(logits, top_k=2)
    theirs = load_balancing_loss_func((logits,), num_experts=8, top_k=2)
    assert float(ours) * 2 == pytest.approx(float(theirs), rel=1e-5)


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory):
    return build_random_checkpoint(tmp_path_factory.mktemp("moe") / "model", seed=3, llm=TINY_MOE_LLM)


def test_gradient_through_the_router_hooks_equals_direct_backprop(moe_checkpoint) -> None:
    torch.manual_seed(0)
    model = SAILVLModel.from_pretrained(moe_checkpoint, dtype=torch.float32)
    model.train()
    input_ids = torch.randint(10, 200, (1, 24))
    params = [p for p in model.language_model.parameters()]

    # Reference: every router's logits captured in the graph, the loss built and backpropagated directly.
    captured: list[torch.Tensor] = []
    routers = [m for m in model.language_model.modules() if type(m).__name__.endswith("TopKRouter")]
    assert len(routers) == TINY_MOE_LLM["num_hidden_layers"]
    handles = [r.register_forward_hook(lambda m, a, out: captured.append(out[0])) for r in routers]
    model.language_model(input_ids=input_ids)
    for handle in handles:
        handle.remove()
    coefficient, scale = 0.5, 0.25
    direct = sum(load_balancing_loss(logits, 2)[0] for logits in captured) * coefficient * scale / len(captured)
    model.zero_grad()
    direct.backward()
    expected = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    # Ours: the loss rides on the routing scores; the LM output times zero carries it into backward.
    model.zero_grad()
    balance = LoadBalance(model, MoEConfig(), coefficient)
    try:
        balance.arm(real_tokens=24, scale=scale)
        (model.language_model(input_ids=input_ids).logits.sum() * 0).backward()
        balance.disarm()
    finally:
        balance.remove()
    got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    router_grads = [r.weight.grad for r in routers]
    assert all(g is not None and g.abs().sum() > 0 for g in router_grads)
    for mine, want in zip(got, expected):
        torch.testing.assert_close(mine, want, rtol=1e-4, atol=1e-8)
    assert balance.last_loss == pytest.approx(float(direct.detach()) / (coefficient * scale), rel=1e-5)


def _attached_gradients(model, input_ids) -> list[torch.Tensor]:
    model.zero_grad()
    balance = LoadBalance(model, MoEConfig(), 1.0)
    try:
        balance.arm(real_tokens=input_ids.shape[1], scale=1.0)
        (model.language_model(input_ids=input_ids).logits.sum() * 0).backward()
        balance.disarm()
    finally:
        balance.remove()
    return [p.grad.clone() for p in model.language_model.parameters() if p.grad is not None]


def test_activation_checkpointing_counts_the_loss_once(moe_checkpoint) -> None:
    """A checkpointed layer re-runs its router hook when it is recomputed in backward."""
    model = SAILVLModel.from_pretrained(moe_checkpoint, dtype=torch.float32)
    model.train()
    input_ids = torch.randint(10, 200, (1, 20), generator=torch.Generator().manual_seed(1))
    plain = _attached_gradients(model, input_ids)
    model.language_model.activation_checkpointing_enable()
    checkpointed = _attached_gradients(model, input_ids)
    assert len(plain) == len(checkpointed) > 0
    for got, want in zip(checkpointed, plain):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


def test_padding_is_left_out(moe_checkpoint) -> None:
    model = SAILVLModel.from_pretrained(moe_checkpoint, dtype=torch.float32)
    balance = LoadBalance(model, MoEConfig(), 1.0)
    ids = torch.randint(10, 200, (1, 16))
    padded = torch.cat([ids, torch.full((1, 8), 3)], dim=1)
    try:
        losses = []
        for row, real in ((ids, 16), (padded, 16)):
            balance.arm(real_tokens=real, scale=1.0)
            model.language_model(input_ids=row)
            balance.disarm()
            losses.append(balance.last_loss)
    finally:
        balance.remove()
    # Causal attention: the real tokens' router inputs do not see the padding after them.
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_trainer_logs_the_balance_of_a_moe_llm_and_not_of_a_dense_one(moe_checkpoint, tmp_path) -> None:
    base = ["max_steps=3", "save_every=0", "data.synthetic.num_samples=8"]
    torch.set_num_threads(1)
    try:
        Trainer(load_recipe("debug", [f"init={{checkpoint: {moe_checkpoint}}}", f"output_dir={tmp_path / 'moe'}",
                                      *base]), device="cpu").run()
        Trainer(load_recipe("debug", [f"output_dir={tmp_path / 'dense'}", *base]), device="cpu").run()
        Trainer(load_recipe("debug", [f"init={{checkpoint: {moe_checkpoint}}}", f"output_dir={tmp_path / 'off'}",
                                      "moe={aux_loss_coef: 0}", *base]), device="cpu").run()
    finally:
        torch.set_num_threads(2)
    rows = [json.loads(line) for line in (tmp_path / "moe" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        # 4 experts, top-2: the loss lies in [1, E / k] = [1, 2]; the largest load E * f_i in [1, E / k].
        assert 1.0 - 1e-6 <= row["moe_aux_loss"] <= 2.0 + 1e-6 and math.isfinite(row["loss"])
        assert 1.0 - 1e-6 <= row["moe_max_load"] <= 2.0 + 1e-6
    for name in ("dense", "off"):
        first = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])
        assert "moe_aux_loss" not in first


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="aux_loss_coef"):
        MoEConfig(aux_loss_coef=-1.0)
    with pytest.raises(ConfigError, match="unknown|moe"):
        load_recipe("debug", ["moe={coef: 0.1}"])


def test_torchrun_global_counts_run_on_two_processes(moe_checkpoint, tmp_path) -> None:
    """The counts are all-reduced inside the router hooks: two ranks must stay in step (no hang) and log it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import REPO_ROOT

    script = tmp_path / "runner.py"
    script.write_text("import sys, torch\ntorch.set_num_threads(1)\nfrom sailvl2.training.recipe import load_recipe\n"
                      "from sailvl2.training.trainer import Trainer\nTrainer(load_recipe('debug', sys.argv[1:])).run()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={tmp_path / 'run'}",
                             f"init={{checkpoint: {moe_checkpoint}}}", "max_steps=3", "save_every=0",
                             "data.synthetic.num_samples=8"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(1.0 - 1e-6 <= row["moe_aux_loss"] <= 2.0 + 1e-6 for row in rows)
