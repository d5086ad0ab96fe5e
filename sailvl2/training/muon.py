"""Muon for the hidden weight matrices, AdamW for everything else, in one optimizer.

Muon (momentum, then the update orthogonalised by a Newton-Schulz iteration) trains the 2-D weights of
transformer blocks in fewer steps than AdamW; embeddings, the LM head, norms, biases and the patch
embedding stay on AdamW, as in the published recipes. The update is scaled so that its RMS matches
AdamW's (0.2 * sqrt(max(rows, cols))), so a recipe's AdamW learning rates carry over unchanged.

Chosen with `optim: {kind: muon}` in a recipe (sailvl2/training/recipe.py). One class keeps the trainer's
single-optimizer contract: schedule, checkpoints, snapshots and gradient clipping see ordinary
`param_groups` and `state_dict`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# Quintic Newton-Schulz coefficients that push every singular value into roughly [0.5, 1.2] in 5 steps
# (not exactly 1: the speed of the iteration matters more than its exactness for the update direction).
_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An approximation of U V^T for matrix = U S V^T, iterated in `dtype` (fp32 by default; bf16 under bf16
    autocast, training/precision.py) and returned in fp32. A stack of matrices (..., rows, cols) is
    orthogonalised matrix by matrix in one batched iteration."""
    a, b, c = _NS_COEFFICIENTS
    x = matrix.float()
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:  # iterate on the wide orientation: the Gram matrix is the smaller one
        x = x.mT
    x = (x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)).to(dtype)  # Frobenius norm of each matrix
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    x = x.float()
    return x.mT if transposed else x


def _orthogonalize_update(update: torch.Tensor, steps: int, ns_dtype: torch.dtype) -> torch.Tensor:
    """Under FSDP2 the update is a DTensor holding this rank's rows, and the iteration needs the whole
    matrix. DTensor arithmetic would give the same result (the torchrun test passes either way) but
    redistributes inside every Newton-Schulz product; here each rank gathers the matrix once, runs the
    same fp32 iteration and keeps its own shard (`src_data_rank=None`: no scatter, the local copy)."""
    from torch.distributed.tensor import distribute_tensor

    full = orthogonalize(update.full_tensor(), steps, dtype=ns_dtype).to(update.dtype)
    return distribute_tensor(full, update.device_mesh, update.placements, src_data_rank=None)


def uses_muon(name: str, param: torch.Tensor) -> bool:
    """Hidden matrices only: 2-D weights that are neither embeddings nor the (tied) LM head."""
    return param.ndim == 2 and "embed" not in name and "lm_head" not in name


class MuonAdamW(torch.optim.Optimizer):
    """Groups with `muon: True` get Muon updates (their params must be 2-D); the rest get AdamW."""

    def __init__(self, groups: Iterable[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 momentum: float = 0.95, ns_steps: int = 5) -> None:
        defaults = {"lr": 1e-3, "betas": betas, "eps": eps, "weight_decay": 0.0, "momentum": momentum,
                    "ns_steps": ns_steps, "muon": False}
        super().__init__(list(groups), defaults)
        # The Newton-Schulz iteration's dtype: fp32, or bf16 when the trainer runs under bf16 autocast.
        self.ns_dtype = torch.float32
        for group in self.param_groups:
            if group["muon"] and any(p.ndim != 2 for p in group["params"]):
                raise ValueError("Muon groups take 2-D weight matrices only")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D401 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if group["muon"]:
                self._muon_group_step(group)
                continue
            lr, decay = group["lr"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if decay:
                    param.mul_(1 - lr * decay)  # decoupled weight decay, as AdamW and Muon both do
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                beta1, beta2 = group["betas"]
                state["step"] += 1
                step = state["step"].item()
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                param.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** step))
        return loss

    def _muon_group_step(self, group: dict) -> None:
        """Nesterov momentum, then the orthogonalised update. Matrices of one shape share one batched
        Newton-Schulz iteration: the nano model's 50 small matrices fall into 8 stacks. Chains of small
        matmuls are launch-bound on a GPU; on 2 CPU cores they are FLOP-bound and batching saves 8 % of the
        step (benchmarks/muon.py). The stack is a copy of the updates of one shape. Stacks hold
        one orientation only: the batched result then equals the per-matrix one bit for bit on CPU, so
        runs trained before batching are reproduced (a tall matrix transposed into a wide stack would be
        iterated on a contiguous copy instead of a view, which rounds differently)."""
        from torch.distributed.tensor import DTensor

        lr, decay = group["lr"], group["weight_decay"]
        stacks: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for param in group["params"]:
            if param.grad is None:
                continue
            if decay:
                param.mul_(1 - lr * decay)
            buffer = self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
            buffer.mul_(group["momentum"]).add_(param.grad)
            update = param.grad.add(buffer, alpha=group["momentum"])  # Nesterov
            if isinstance(update, DTensor):  # a shard: gathered and orthogonalised on its own
                update = _orthogonalize_update(update, group["ns_steps"], self.ns_dtype)
                param.add_(update, alpha=-lr * 0.2 * max(param.shape) ** 0.5)
                continue
            stacks.setdefault((tuple(update.shape), update.dtype, update.device), []).append((param, update))
        for members in stacks.values():
            result = orthogonalize(torch.stack([update for _, update in members]), group["ns_steps"],
                                   dtype=self.ns_dtype)
            for (param, _), matrix in zip(members, result):
                param.add_(matrix.to(param.dtype), alpha=-lr * 0.2 * max(param.shape) ** 0.5)
