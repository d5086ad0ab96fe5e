"""CPU bf16 mixed precision (training/precision.py): when it is on, packed attention stays fp32 under it,
Muon's bf16 Newton-Schulz agrees with the fp32 one, and a bf16 training run follows the fp32 one."""

from __future__ import annotations

import pytest
import torch

from sailvl2.training import precision
from sailvl2.training.muon import MuonAdamW, orthogonalize
from sailvl2.training.precision import cpu_flags, use_bf16_autocast

from .test_training import _losses, _run, _weights

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_cpu_flags_are_read_from_cpuinfo():
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\nbugs\t\t: none\n"
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(x86)
    assert "none" not in cpu_flags(x86)
    assert cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert cpu_flags("model name : something\n") == set()


@pytest.mark.parametrize("native", [True, False])
def test_autocast_decision(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert use_bf16_autocast(CPU, 1, "float32", cpu_bf16=True) is native
    assert use_bf16_autocast(CPU, 1, "float32", cpu_bf16=False) is False  # the recipe did not ask
    assert use_bf16_autocast(CPU, 1, "bfloat16", cpu_bf16=True) is False  # bf16 weights: nothing to cast
    # CUDA keeps its old rule: one process with fp32 weights, whatever the recipe's CPU flag says
    assert use_bf16_autocast(CUDA, 1, "float32", cpu_bf16=False) is True
    assert use_bf16_autocast(CUDA, 2, "float32", cpu_bf16=True) is False


def test_bf16_newton_schulz_agrees_with_fp32():
    generator = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 48, 96, generator=generator)
    full = orthogonalize(stack)
    half = orthogonalize(stack, dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.shape == stack.shape
    cosine = (half * full).sum((-2, -1)) / (half.norm(dim=(-2, -1)) * full.norm(dim=(-2, -1)))
    assert cosine.min() > 0.99
    assert not torch.equal(half, full)  # the iteration really ran in bf16
    # The fp32 default is unchanged bit for bit (the runs trained before this option are reproduced).
    torch.testing.assert_close(orthogonalize(stack, dtype=torch.float32), full, rtol=0, atol=0)


def test_muon_step_uses_its_ns_dtype(monkeypatch):
    import sailvl2.training.muon as muon

    seen = []
    original = muon.orthogonalize
    monkeypatch.setattr(muon, "orthogonalize", lambda m, steps, dtype: seen.append(dtype) or original(m, steps,
                                                                                                        dtype=dtype))
    param = torch.nn.Parameter(torch.randn(8, 16))
    optimizer = MuonAdamW([{"params": [param], "lr": 1e-2, "muon": True}])
    param.grad = torch.randn(8, 16)
    optimizer.step()
    optimizer.ns_dtype = torch.bfloat16
    optimizer.step()
    assert seen == [torch.float32, torch.bfloat16]


def test_packed_attention_stays_fp32_under_cpu_autocast():
    from sailvl2.modeling.packed_attention import packed_sdpa_forward

    module = torch.nn.Module()
    module.is_causal, module.training, module.num_key_value_groups = True, False, 1
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, 2, 12, 16, generator=generator, requires_grad=True) for _ in range(3))
    segments = (5, 7)
    plain, _ = packed_sdpa_forward(module, query, key, value, None, packed_segments=segments, scaling=0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _ = packed_sdpa_forward(module, query, key, value, None, packed_segments=segments, scaling=0.25)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)  # the same fp32 attention, not a bf16 one
    mixed.sum().backward()
    assert query.grad is not None and query.grad.dtype == torch.float32


def test_cpu_bf16_training_follows_fp32(tmp_path, monkeypatch):
    """The debug recipe with `cpu_bf16: true` on a (pretended) native-bf16 CPU: the step really runs under
    autocast (Muon iterating in bf16), the weights stay fp32, and the loss curve follows the fp32 run's."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    settings = ["optim.kind=muon", "max_steps=12", "save_every=0"]
    fp32 = _run(tmp_path / "fp32", *settings)
    mixed = _run(tmp_path / "bf16", *settings, "cpu_bf16=true")
    reference, losses = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert losses != reference  # bf16 products: not the same numbers
    assert abs(losses[0] - reference[0]) < 0.02 * reference[0]  # same weights, same batch: close at step 1
    assert sum(losses[-3:]) < sum(losses[:3])  # and it learns
    assert sum(losses[-3:]) < 1.1 * sum(reference[-3:])
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "bf16").values())
    assert fp32.steps == mixed.steps == 12
