"""Muon's optimizer step: one batched Newton-Schulz iteration per stack of equal-shape matrices (ours)
against one iteration per matrix (the baseline), on the nano model's 50 hidden matrices.

    .venv/bin/python benchmarks/muon.py [--threads 2] [--repeats 10] [--json benchmarks/results/muon.json]

Both paths start from the same weights and gradients; the script reports their step times, the speed-up
and the largest difference between the weights they produce (0 when batching changes nothing).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from _common import cpu_snapshot, finish, print_rows
from sailvl2.training.muon import MuonAdamW, orthogonalize

# The nano model's Muon matrices (sailvl2/nano/model.py): shape -> how many
NANO_SHAPES = {(128, 256): 12, (256, 256): 9, (768, 256): 8, (256, 128): 8, (256, 768): 4, (128, 128): 4,
               (384, 128): 4, (256, 512): 1}


class PerMatrixMuon(MuonAdamW):
    """The baseline: the same update, orthogonalised one matrix at a time (the step before batching)."""

    def _muon_group_step(self, group: dict) -> None:
        lr, decay = group["lr"], group["weight_decay"]
        for param in group["params"]:
            if decay:
                param.mul_(1 - lr * decay)
            buffer = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
            buffer.mul_(group["momentum"]).add_(param.grad)
            update = param.grad.add(buffer, alpha=group["momentum"])
            matrix = orthogonalize(update, group["ns_steps"]).to(param.dtype)
            param.add_(matrix, alpha=-lr * 0.2 * max(param.shape) ** 0.5)


def make_params(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = []
    for shape, count in NANO_SHAPES.items():
        for _ in range(count):
            param = torch.nn.Parameter(torch.randn(shape, generator=generator) * 0.02)
            param.grad = torch.randn(shape, generator=generator) * 1e-3
            params.append(param)
    return params


def time_steps(optimizer_class: type, params: list[torch.nn.Parameter], repeats: int) -> list[float]:
    optimizer = optimizer_class([{"params": params, "lr": 1e-3, "weight_decay": 0.01, "muon": True}])
    optimizer.step()  # warm-up (and the momentum buffers)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, cpu_before = time.perf_counter(), cpu_snapshot()
    base_params, ours_params = make_params(0), make_params(0)
    baseline = time_steps(PerMatrixMuon, base_params, args.repeats)
    ours = time_steps(MuonAdamW, ours_params, args.repeats)
    difference = max((a - b).abs().max().item() for a, b in zip(base_params, ours_params))
    results = {
        "machine": {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine()},
        "matrices": sum(NANO_SHAPES.values()), "repeats": args.repeats,
        "baseline_step_s": statistics.median(baseline), "ours_step_s": statistics.median(ours),
        "max_weight_difference": difference,
    }
    results["speedup"] = results["baseline_step_s"] / results["ours_step_s"]

    def table(r: dict) -> None:
        print_rows("Muon step, nano model's hidden matrices", [
            ("per matrix (baseline)", f"{r['baseline_step_s'] * 1e3:.1f} ms"),
            ("batched by shape (ours)", f"{r['ours_step_s'] * 1e3:.1f} ms"),
            ("speed-up", f"{r['speedup']:.2f}x"),
            ("max weight difference", f"{r['max_weight_difference']:.3g}"),
        ], r)

    finish(results, started, cpu_before, table, args.json)


if __name__ == "__main__":
    main()
