"""Sharded checkpoints under FSDP2: every rank writes its own shards, nothing is gathered.

Files per rank: `model.rankRRRRR-of-WWWWW.safetensors` and `optimizer.rank...safetensors` hold the local
shard of every parameter and optimizer tensor (`DTensor.to_local()`), plus `rng.rank....safetensors`.
Loading wraps each local shard back into a DTensor with the live parameter's mesh and placements, so a run
resumes on the same number of ranks without ever holding a full copy of the model. (A different number of
ranks needs the full-weights export: `final/`, or `sailvl2 train ... --no-resume` from it.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from ..errors import CheckpointError

_OPTIONS = StateDictOptions(full_state_dict=False)


def _name(kind: str, rank: int, world: int) -> str:
    return f"{kind}.rank{rank:05d}-of-{world:05d}.safetensors"


def _local(value: Any) -> torch.Tensor:
    tensor = value if torch.is_tensor(value) else torch.tensor(value)
    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.detach().to("cpu").contiguous()


def is_sharded(path: Path) -> bool:
    return any(path.glob("model.rank*-of-*.safetensors"))


def save_shards(directory: Path, model: Any, optimizer: torch.optim.Optimizer, rank: int, world: int) -> list:
    """Write this rank's shards into `directory`; returns the optimizer param groups (same on every rank)."""
    model_state, optim_state = get_state_dict(model, optimizer, options=_OPTIONS)
    save_file({k: _local(v) for k, v in model_state.items()}, str(directory / _name("model", rank, world)))
    tensors = {f"{fqn}::{key}": _local(value) for fqn, entry in optim_state["state"].items()
               for key, value in entry.items()}
    save_file(tensors, str(directory / _name("optimizer", rank, world)))
    return optim_state["param_groups"]


def load_shards(path: Path, model: Any, optimizer: torch.optim.Optimizer, rank: int, world: int,
                param_groups: list) -> None:
    model_file = path / _name("model", rank, world)
    if not model_file.is_file():
        saved = len(list(path.glob("model.rank*-of-*.safetensors")))
        raise CheckpointError(f"{path} was saved by {saved} ranks; this run has {world}. Resume with the same "
                              "number of processes, or start a new run from the full-weights export")
    live, _ = get_state_dict(model, optimizer, options=_OPTIONS)

    def wrap(fqn: str, local: torch.Tensor) -> torch.Tensor:
        spec = live[fqn]
        if isinstance(spec, DTensor):
            return DTensor.from_local(local.to(spec.device), spec.device_mesh, spec.placements,
                                      shape=spec.shape, stride=spec.stride())
        return local.to(spec.device)

    model_state = {fqn: wrap(fqn, local) for fqn, local in load_file(str(model_file)).items()}
    optim_entries: dict[str, dict[str, torch.Tensor]] = {}
    for key, local in load_file(str(path / _name("optimizer", rank, world))).items():
        fqn, state_key = key.split("::")
        # Moments are sharded like their parameter; the step counter is a plain scalar.
        optim_entries.setdefault(fqn, {})[state_key] = local if state_key == "step" else wrap(fqn, local)
    set_state_dict(model, optimizer, model_state_dict=model_state,
                   optim_state_dict={"state": optim_entries, "param_groups": param_groups}, options=_OPTIONS)


def save_snapshot_shards(directory: Path, snapshot: Any, rank: int, world: int) -> None:
    """This rank's part of an AdaLRS rollback point (a `Snapshot` of sharded state dicts); rank 0 also writes
    the param groups and extras. The optimizer state is keyed by parameter index, as `state_dict()` gives it."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: _local(v) for k, v in snapshot.model_state.items()}, str(directory / _name("model", rank, world)))
    optim = snapshot.optimizer_state
    tensors = {f"{index}::{key}": _local(value) for index, entry in optim["state"].items()
               for key, value in entry.items()}
    save_file(tensors, str(directory / _name("optimizer", rank, world)))
    if rank == 0:
        (directory / "groups.json").write_text(json.dumps({"param_groups": optim["param_groups"],
                                                           "extra": snapshot.extra}))


def load_snapshot_shards(directory: Path, model: Any, optimizer: torch.optim.Optimizer, rank: int,
                         world: int) -> Any:
    """The rollback point saved by :func:`save_snapshot_shards`, its local shards wrapped back into DTensors
    laid out like the live model's and optimizer's (call after the checkpoint itself is loaded)."""
    from .adalrs import Snapshot

    model_file = directory / _name("model", rank, world)
    if not model_file.is_file():
        raise CheckpointError(f"{directory} has no AdaLRS snapshot shard for rank {rank} of {world}")
    live_model = model.state_dict()
    live_optim = optimizer.state_dict()["state"]

    def like(spec: Any, local: torch.Tensor) -> torch.Tensor:
        if isinstance(spec, DTensor):
            return DTensor.from_local(local.to(spec.device), spec.device_mesh, spec.placements,
                                      shape=spec.shape, stride=spec.stride())
        return local.to(spec.device) if torch.is_tensor(spec) else local

    model_state = {k: like(live_model[k], v) for k, v in load_file(str(model_file)).items()}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, local in load_file(str(directory / _name("optimizer", rank, world))).items():
        index, name = key.split("::")
        live = live_optim.get(int(index), {}).get(name)
        if live is None:
            raise CheckpointError(f"the AdaLRS snapshot in {directory} has optimizer state {key} that this "
                                  "optimizer does not")
        state.setdefault(int(index), {})[name] = like(live, local)
    meta = json.loads((directory / "groups.json").read_text())
    return Snapshot(model_state, {"state": state, "param_groups": meta["param_groups"]}, meta["extra"])

