"""Reading and writing weights in the release layout, with safetensors only (never pickle).

Key map (ours -> release): the module tree of `SAILVLModel` is named after the release keys, so the map is
the identity on these prefixes; it is spelled out here so a rename anywhere in the model fails the
key-set test against `release/model.safetensors.index.json` instead of silently writing other names.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Release key prefixes -> the SAILVLModel submodule that owns them (FACTS.md "Checkpoint layout").
RELEASE_PREFIXES: dict[str, str] = {
    "vision_model.": "SAIL-ViT (modeling/vision.py)",
    "mlp1.": "pixel-shuffle adapter (modeling/projector.py)",
    "language_model.": "the transformers causal LM (modeling/language.py)",
}


def to_release_key(name: str) -> str:
    """Our parameter name -> the key the release stores it under."""
    if not name.startswith(tuple(RELEASE_PREFIXES)):
        raise CheckpointError(f"parameter {name!r} has no place in the release layout")
    return name


def from_release_key(key: str) -> str:
    """A release key -> our parameter name."""
    return key


def weight_files(directory: Path) -> dict[str, Path]:
    """Map every stored key to the safetensors file that holds it (sharded index or single file)."""
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
        files = {key: directory / name for key, name in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{index} lists the shard {shard.name}, which is missing from {directory}")
        return files
    single = directory / SINGLE_FILE
    if single.is_file():
        with _open(single) as handle:
            return {key: single for key in handle.keys()}
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise CheckpointError(
            f"{directory} holds only pickle weights (.bin/.pt); sailvl2 reads safetensors only, "
            "because unpickling a file can run arbitrary code"
        )
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err


def iter_tensors(files: dict[str, Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (key, tensor) shard by shard; each shard is memory-mapped once."""
    by_file: dict[Path, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    for path, keys in by_file.items():
        with _open(path) as handle:
            present = set(handle.keys())
            for key in keys:
                if key not in present:
                    raise CheckpointError(f"{path.name} does not contain {key!r}, although the index says it does")
                try:
                    yield key, handle.get_tensor(key)
                except (SafetensorError, RuntimeError, ValueError) as err:
                    raise CheckpointError(f"cannot read {key!r} from {path}: {err}") from err


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def save_state_dict(
    state: dict[str, torch.Tensor], directory: Path, max_shard_size: int | str = "5GB"
) -> list[str]:
    """Write `state` (release key names) as safetensors shards plus an index, atomically.

    Files are written into a temporary folder beside `directory` and moved in only once all are complete;
    stale weight files of an earlier save are removed so the folder never mixes two checkpoints.
    """
    directory.mkdir(parents=True, exist_ok=True)
    limit = _parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][key] = tensor
        shard_bytes += size
    total = len(shards)
    names = [SINGLE_FILE] if total == 1 else [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
    staging = Path(tempfile.mkdtemp(prefix=".sailvl2-save-", dir=directory))
    try:
        for name, shard in zip(names, shards):
            save_file(shard, str(staging / name), metadata={"format": "pt"})
        if total > 1:
            index = {
                "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                "weight_map": {key: name for name, shard in zip(names, shards) for key in shard},
            }
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
            names = [*names, INDEX_FILE]
        for stale in [*directory.glob("model*.safetensors"), directory / INDEX_FILE]:
            if stale.exists() and stale.name not in names:
                stale.unlink()
        for name in names:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return names
