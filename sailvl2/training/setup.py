"""Model set-up for training: initialisation from whole checkpoints or parts, trainable parts, optimizer
parameter groups (one learning rate per part), distributed wrapping (FSDP2)."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from ..modeling import SAILVLModel
from ..modeling.sailvl import parse_dtype
from ..modeling.weights import iter_tensors, weight_files
from ..processing import SAILVLProcessor
from .recipe import Recipe

_PART_PREFIXES = {"vit": "vision_model.", "adapter": "mlp1.", "llm": "language_model."}


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU; NCCL for CUDA tensors)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        # With CUDA, CPU tensors still take part in collectives (the step's loss and counters are reduced on
        # the CPU): NCCL alone rejects them, so CPU tensors go over gloo and CUDA tensors over NCCL.
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        # Leave the group while the interpreter is still whole. Left to interpreter finalisation, gloo's worker
        # threads are torn down with the process and, now and then, abort a run that succeeded (SIGABRT,
        # "terminate called without an active exception"; seen in CI on two torchrun tests).
        atexit.register(_leave_process_group)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def part_of(name: str) -> str:
    for part, prefix in _PART_PREFIXES.items():
        if name.startswith(prefix):
            return part
    raise ConfigError(f"parameter {name!r} belongs to no known part")


def model_source_dir(recipe: Recipe, run_dir: Path, info: DistInfo) -> Path:
    """The checkpoint the architecture, tokenizer and processor come from."""
    init = recipe.init
    if init.random:
        if init.random != "tiny":
            raise ConfigError(f"init.random supports 'tiny', got {init.random!r}")
        directory = run_dir / "init-random-tiny"
        if info.is_main and not (directory / "config.json").is_file():
            from ..tiny import build_random_checkpoint

            build_random_checkpoint(directory, seed=recipe.seed)
        if dist.is_initialized():
            dist.barrier()
        return directory
    source = init.checkpoint or init.llm_from or init.vit_from
    if not source:
        raise ConfigError("init needs checkpoint, llm_from/vit_from, or random")
    return Path(source)


def build_model(recipe: Recipe, run_dir: Path, info: DistInfo, device: torch.device) -> tuple[SAILVLModel, SAILVLProcessor]:
    source = model_source_dir(recipe, run_dir, info)
    dtype = parse_dtype(recipe.dtype)
    model = SAILVLModel.from_pretrained(source, dtype=dtype, device=device)
    for part, other in (("vit", recipe.init.vit_from), ("llm", recipe.init.llm_from)):
        if other and Path(other) != source:
            _load_part(model, Path(other), part)
    if recipe.init.reset_adapter:
        # Basic pre-training starts from a randomly initialised adapter (PAPER.md 2.2, 5.1).
        torch.manual_seed(recipe.seed)
        for module in model.mlp1.modules():
            model._init_weights(module)
    if recipe.attn_implementation:
        try:
            model.language_model.set_attn_implementation(recipe.attn_implementation)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"attn_implementation {recipe.attn_implementation!r} is not available: {err}") from err
    if recipe.gradient_checkpointing:
        model.vision_model.trunk.gradient_checkpointing = True
        model.language_model.activation_checkpointing_enable()
    model.train()
    return model, SAILVLProcessor.from_pretrained(source)


def _load_part(model: SAILVLModel, directory: Path, part: str) -> None:
    prefix = _PART_PREFIXES[part]
    files = {k: v for k, v in weight_files(directory).items() if k.startswith(prefix)}
    state = model.state_dict()
    missing = {k for k in state if k.startswith(prefix)} - set(files)
    if missing:
        raise ConfigError(f"{directory} lacks {len(missing)} {part} weights, e.g. {sorted(missing)[:2]}")
    with torch.no_grad():
        for key, tensor in iter_tensors(files):
            if tensor.shape != state[key].shape:
                raise ConfigError(f"{part} weight {key} has shape {tuple(tensor.shape)} in {directory}, "
                                  f"model expects {tuple(state[key].shape)}")
            state[key].copy_(tensor)


def freeze_parts(model: SAILVLModel, recipe: Recipe) -> None:
    """Only the recipe's trainable parts keep requires_grad (frozen ones get no optimizer state)."""
    for name, param in model.named_parameters():
        trainable = part_of(name) in recipe.trainable
        if trainable and part_of(name) == "vit" and recipe.vit_last_n_blocks is not None:
            first = len(model.vision_model.trunk.blocks) - recipe.vit_last_n_blocks
            block = name.split("trunk.blocks.")[1].split(".")[0] if "trunk.blocks." in name else None
            trainable = (block is not None and int(block) >= first) or "post_trunk_norm" in name
        if trainable and part_of(name) == "llm" and recipe.llm_freeze_layers:
            trainable = ".layers." not in name
        param.requires_grad_(trainable)


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """One group per (part, decay, muon): biases and norms get no weight decay; with `optim.kind: muon` the
    hidden weight matrices form their own groups (training/muon.py)."""
    from .muon import uses_muon

    muon = recipe.optim.kind == "muon"
    groups: dict[tuple[str, bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and recipe.optim.weight_decay > 0
        groups.setdefault((part_of(name), decay, muon and uses_muon(name, param)), []).append(param)
    return [
        {"params": params, "part": part, "peak_lr": recipe.optim.lr[part], "lr": recipe.optim.lr[part],
         "weight_decay": recipe.optim.weight_decay if decay else 0.0, **({"muon": True} if is_muon else {})}
        for (part, decay, is_muon), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW (foreach off: it keeps peak memory flat), or the Muon + AdamW hybrid."""
    groups = param_groups(model, recipe)
    if recipe.optim.kind == "muon":
        from .muon import MuonAdamW

        return MuonAdamW(groups, betas=recipe.optim.betas, eps=recipe.optim.eps)
    return torch.optim.AdamW(groups, betas=recipe.optim.betas, eps=recipe.optim.eps, foreach=False)


def shard_model(model: SAILVLModel, device: torch.device) -> None:
    """FSDP2: shard every ViT block and LLM decoder layer, then the root. bf16 compute on CUDA."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if device.type == "cuda" else MixedPrecisionPolicy()
    for block in model.vision_model.trunk.blocks:
        fully_shard(block, mp_policy=policy)
    for layer in model.language_model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
