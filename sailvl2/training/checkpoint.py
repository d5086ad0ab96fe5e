"""Training checkpoints: model, optimizer, schedule, data position, RNG states, AdaLRS state.

Layout of `RUN/checkpoints/step-00000120/`:
    model/                 the model in the release layout (config.json + safetensors): loadable as is
    optimizer.safetensors  every optimizer state tensor, keyed `<param name>::<state key>`
    rng.rankR.safetensors  each rank's torch CPU (and CUDA) generator states; rng.rankR.json python/numpy
    state.json             step, counters, optimizer param groups, data position, AdaLRS...
Under FSDP2 `model/` and `optimizer.safetensors` are replaced by per-rank shards (sharded.py); the full
model is written only by the final export.

Everything is safetensors or JSON (nothing is pickled). A checkpoint is written into a temporary folder
and renamed into place only when complete, so a kill at any moment leaves either the previous checkpoint
or the new one, never half of one; older ones beyond `keep_last` are then removed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from ..errors import CheckpointError
from ..modeling.weights import iter_tensors, save_state_dict, weight_files
from .sharded import is_sharded, load_shards, load_snapshot_shards, save_shards, save_snapshot_shards

_STATE_FILE = "state.json"


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / _STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    host = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *[int(x) if isinstance(x, (int, np.integer)) else float(x)
                                                       for x in np_state[2:]]],
    }
    return tensors, host


def restore_rng_state(tensors: dict[str, torch.Tensor], host: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, state, gauss = host["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = host["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _full_state(model: Any, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Model and optimizer state as full (unsharded) CPU tensors keyed by parameter name; a collective
    under FSDP2 (every rank must call it), a plain read otherwise."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def save_snapshot(directory: Path, snapshot: Any) -> None:
    """An AdaLRS rollback point (model + optimizer state dicts) as safetensors + JSON."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in snapshot.model_state.items()}, str(directory / "model.safetensors"))
    optim = snapshot.optimizer_state
    tensors = {f"{index}::{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
               for index, entry in optim["state"].items() for key, value in entry.items()}
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "groups.json").write_text(json.dumps({"param_groups": optim["param_groups"],
                                                       "extra": snapshot.extra}))


def load_snapshot(directory: Path, model: Any = None, optimizer: torch.optim.Optimizer | None = None,
                  rank: int = 0, world_size: int = 1) -> Any:
    """The AdaLRS rollback point saved with a checkpoint; sharded ones (FSDP2) need the live model and
    optimizer to lay their shards out."""
    from .adalrs import Snapshot

    if any(directory.glob("model.rank*-of-*.safetensors")):
        if model is None or optimizer is None:
            raise CheckpointError(f"{directory} is a sharded AdaLRS snapshot: load it with the model and optimizer")
        return load_snapshot_shards(directory, model, optimizer, rank, world_size)

    meta = json.loads((directory / "groups.json").read_text())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(directory / "optimizer.safetensors")).items():
        index, name = key.split("::")
        state.setdefault(int(index), {})[name] = value
    return Snapshot(load_file(str(directory / "model.safetensors")),
                    {"state": state, "param_groups": meta["param_groups"]}, meta["extra"])


def save_checkpoint(
    root: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    keep_last: int = 2, rank: int = 0, world_size: int = 1, snapshot: Any = None,
) -> Path:
    """Write a complete checkpoint atomically and prune old ones. One process: full tensors. Under FSDP2
    (`world_size` > 1): every rank writes its own shards (sharded.py), rank 0 the shared state; a
    collective, so every rank must call it. Returns the checkpoint folder."""
    final = _step_dir(root, step)
    staging = root / f".tmp-{final.name}"
    sharded = world_size > 1
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    if sharded:
        dist.barrier()
        groups = save_shards(staging, model, optimizer, rank, world_size)
        if snapshot is not None:  # every rank holds its own shards of the rollback point
            save_snapshot_shards(staging / "adalrs_snapshot", snapshot, rank, world_size)
    else:
        model_state, optim_state = _full_state(model, optimizer)
        (staging / "model").mkdir()
        save_state_dict(model_state, staging / "model")
        model.config.save_pretrained(staging / "model")
        tensors = {
            f"{name}::{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
            for name, entry in optim_state["state"].items() for key, value in entry.items()
        }
        save_file(tensors, str(staging / "optimizer.safetensors"))
        groups = optim_state["param_groups"]
    rng_tensors, rng_host = rng_state()
    save_file(rng_tensors, str(staging / f"rng.rank{rank:05d}.safetensors"))
    (staging / f"rng.rank{rank:05d}.json").write_text(json.dumps(rng_host))
    if sharded:
        dist.barrier()
    if rank == 0:
        if snapshot is not None and not sharded:
            save_snapshot(staging / "adalrs_snapshot", snapshot)
        record = {**state, "step": step, "optimizer_param_groups": groups, "world_size": world_size}
        (staging / _STATE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
        for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    if sharded:
        dist.barrier()  # nobody moves on (or reads) before the checkpoint is in place
    return final


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer, rank: int = 0,
                    world_size: int = 1) -> dict[str, Any]:
    """Restore model weights, optimizer state and this rank's RNG from `path`; returns the saved state."""
    state_file = path / _STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete training checkpoint (no {_STATE_FILE})")
    record = json.loads(state_file.read_text())
    if is_sharded(path):
        load_shards(path, model, optimizer, rank, world_size, record["optimizer_param_groups"])
    else:
        model_state = dict(iter_tensors(weight_files(path / "model")))
        optim_entries: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in load_file(str(path / "optimizer.safetensors")).items():
            name, state_key = key.split("::")
            optim_entries.setdefault(name, {})[state_key] = value
        optim_state = {"state": optim_entries, "param_groups": record["optimizer_param_groups"]}
        try:
            set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                           options=StateDictOptions(full_state_dict=True, strict=True))
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"{path} does not match this model/optimizer: {err}") from err
    rng_rank = rank if (path / f"rng.rank{rank:05d}.safetensors").is_file() else 0
    restore_rng_state(load_file(str(path / f"rng.rank{rng_rank:05d}.safetensors")),
                      json.loads((path / f"rng.rank{rng_rank:05d}.json").read_text()))
    return record


def export_model(model: Any, directory: Path, is_main: bool) -> None:
    """Full weights in the release layout (a collective under FSDP2: every rank calls it, rank 0 writes)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if is_main:
        shutil.rmtree(directory, ignore_errors=True)
        save_state_dict(state, directory)
        model.config.save_pretrained(directory)
