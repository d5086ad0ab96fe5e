"""Global-batch load balancing for mixture-of-experts LLMs (PAPER.md 2.5).

SAIL-VL2's MoE models train with "an auxiliary load-balancing loss with activations averaged across ranks".
That is the global-batch load-balancing loss (LBL) of Qwen3-MoE (Qiu et al. 2025). Per MoE layer, with
E experts and top-k routing:

    LBL = E * sum_i f_i * p_i

- ``f_i``: the share of the layer's top-k assignments that went to expert i (the f_i sum to 1). The counts are
  summed over all data-parallel ranks before f is formed (``global_batch: true``). A micro-batch with few
  tokens then cannot make its own routing look balanced.
- ``p_i``: the mean router probability of expert i over this rank's real tokens. It is differentiable; f is
  not.
- Perfect balance gives 1, everything routed to one set of k experts gives E / k. The loss is the mean over the
  MoE layers times ``aux_loss_coef``. The default coefficient is the LLM config's ``router_aux_loss_coef``
  (Qwen3-MoE: 0.001); the paper does not publish its own (PAPER.md 2.5, [NOT FOUND]).
- f uses the Megatron normalisation (counts / (tokens * k)). transformers' ``load_balancing_loss_func`` has
  f sum to k and pools the layers, and only computes it when ``labels`` go through its own forward. The
  trainer's packed path computes its own loss and never did. Micro-steps of one optimizer step each get
  their own f (across ranks, not across micro-steps); their losses are averaged.

Mechanism: a forward hook on each router (Qwen3-MoE's ``Qwen3MoeTopKRouter``: returns logits, scores,
indices) computes the layer's loss and attaches it to the routing scores through focus.py's ``_AttachLoss``.
Its gradient then arrives during the layer's own backward, while FSDP2 holds the layer's parameters; an
activation-checkpointed layer's recomputed hooks build no graph that backward uses, so the loss counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .focus import _AttachLoss

__all__ = ["LoadBalance", "MoEConfig", "load_balancing_loss"]


@dataclass(frozen=True)
class MoEConfig:
    aux_loss_coef: float | None = None  # None: the LLM config's router_aux_loss_coef; 0 turns the loss off
    global_batch: bool = True  # sum expert counts over data-parallel ranks before forming f

    def __post_init__(self) -> None:
        if self.aux_loss_coef is not None and self.aux_loss_coef < 0:
            raise ConfigError(f"moe.aux_loss_coef must be >= 0, got {self.aux_loss_coef}")


def load_balancing_loss(router_logits: torch.Tensor, top_k: int, counts: torch.Tensor | None = None,
                        tokens: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(E * sum_i f_i p_i, f) for one layer's ``router_logits`` (tokens x E). ``counts`` / ``tokens``: the
    top-k assignment counts per expert and the token count to form f from (default: these tokens' own)."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    num_experts = probs.shape[-1]
    if counts is None:
        chosen = probs.topk(top_k, dim=-1).indices.flatten()
        counts = torch.bincount(chosen, minlength=num_experts).float()
        tokens = float(probs.shape[0])
    share = counts / (float(tokens) * top_k)
    return num_experts * (share.detach() * probs.mean(0)).sum(), share


def _routers(llm: torch.nn.Module) -> list[torch.nn.Module]:
    """Router modules: they know their expert count and top-k and own a (num_experts, hidden) weight."""
    return [m for m in llm.modules() if hasattr(m, "top_k") and hasattr(m, "num_experts")
            and isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.dim() == 2]


class LoadBalance:
    """Hooks the routers of ``model.language_model``; ``arm`` before each micro-step's forward, ``disarm``
    after its backward. ``last_loss`` / ``last_max_load`` (largest E * f_i over layers) are that micro-step's."""

    def __init__(self, model: torch.nn.Module, config: MoEConfig, coefficient: float) -> None:
        self.config, self.coefficient = config, float(coefficient)
        routers = _routers(model.language_model)
        if not routers:
            raise ConfigError("moe load balancing found no router module (expected Qwen3-MoE style routers "
                              "with top_k, num_experts and a weight)")
        self.num_layers = len(routers)
        self._handles = [router.register_forward_hook(self._hook) for router in routers]
        self._real_tokens: int | None = None
        self._scale = 0.0
        self._losses: list[float] = []
        self._max_loads: list[float] = []
        self.last_loss: float | None = None
        self.last_max_load: float | None = None

    def arm(self, real_tokens: int, scale: float) -> None:
        """The next forward is a packed row whose first ``real_tokens`` positions are not padding; its loss is
        multiplied by ``scale`` (1 / micro-steps) besides the coefficient."""
        self._real_tokens, self._scale, self._losses, self._max_loads = int(real_tokens), float(scale), [], []

    def disarm(self) -> None:
        self._real_tokens = None
        self.last_loss = sum(self._losses) / len(self._losses) if self._losses else None
        self.last_max_load = max(self._max_loads) if self._max_loads else None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        if self._real_tokens is None or not torch.is_grad_enabled():
            return None
        if not isinstance(output, tuple) or len(output) < 2:
            raise ConfigError(f"moe load balancing expects routers returning (logits, scores, ...); "
                              f"{type(module).__name__} returned {type(output).__name__}")
        logits = output[0].reshape(-1, output[0].shape[-1])[: self._real_tokens]
        counts = tokens = None
        if self.config.global_batch and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            probs = torch.softmax(logits.detach().float(), dim=-1)
            chosen = probs.topk(module.top_k, dim=-1).indices.flatten()
            totals = torch.cat([torch.bincount(chosen, minlength=probs.shape[-1]).float(),
                                torch.tensor([float(logits.shape[0])], device=logits.device)])
            dist.all_reduce(totals)
            counts, tokens = totals[:-1], float(totals[-1])
        loss, share = load_balancing_loss(logits, module.top_k, counts, tokens)
        self._losses.append(float(loss.detach()))
        self._max_loads.append(float(share.max()) * share.numel())
        weighted = loss * (self.coefficient * self._scale / self.num_layers)
        scores = output[1]
        return (output[0], _AttachLoss.apply(scores, weighted.to(scores.dtype)), *output[2:])
