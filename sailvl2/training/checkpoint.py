"""Training checkpoints: model, optimizer, schedule, data position, RNG states, AdaLRS state.

Layout of `RUN/checkpoints/step-00000120/`:
    model/                 the model in the release layout (config.json + safetensors): loadable as is
    optimizer.safetensors  every optimizer state tensor, keyed `<param name>::<state key>`
    rng.safetensors        the torch CPU (and CUDA) generator states
    state.json             step, counters, optimizer param groups, data position, python/numpy RNG, AdaLRS...

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
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ..errors import CheckpointError
from ..modeling.weights import iter_tensors, save_state_dict, weight_files

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


def load_snapshot(directory: Path) -> Any:
    from .adalrs import Snapshot

    meta = json.loads((directory / "groups.json").read_text())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(directory / "optimizer.safetensors")).items():
        index, name = key.split("::")
        state.setdefault(int(index), {})[name] = value
    return Snapshot(load_file(str(directory / "model.safetensors")),
                    {"state": state, "param_groups": meta["param_groups"]}, meta["extra"])


def save_checkpoint(
    root: Path, step: int, model: Any, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    keep_last: int = 2, is_main: bool = True, snapshot: Any = None,
) -> Path:
    """Write a complete checkpoint atomically (rank 0 writes) and prune old ones. Returns its folder."""
    final = _step_dir(root, step)
    model_state, optim_state = _full_state(model, optimizer)
    if not is_main:
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    (staging / "model").mkdir()
    save_state_dict(model_state, staging / "model")
    model.config.save_pretrained(staging / "model")
    tensors = {
        f"{name}::{key}": (value if torch.is_tensor(value) else torch.tensor(value)).contiguous()
        for name, entry in optim_state["state"].items() for key, value in entry.items()
    }
    save_file(tensors, str(staging / "optimizer.safetensors"))
    rng_tensors, rng_host = rng_state()
    save_file(rng_tensors, str(staging / "rng.safetensors"))
    if snapshot is not None:
        save_snapshot(staging / "adalrs_snapshot", snapshot)
    record = {**state, "step": step, "optimizer_param_groups": optim_state["param_groups"], "rng": rng_host}
    (staging / _STATE_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model weights, optimizer state and RNG from `path` (every rank reads the files);
    returns the saved state dict."""
    state_file = path / _STATE_FILE
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete training checkpoint (no {_STATE_FILE})")
    record = json.loads(state_file.read_text())
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
    restore_rng_state(load_file(str(path / "rng.safetensors")), record["rng"])
    return record
