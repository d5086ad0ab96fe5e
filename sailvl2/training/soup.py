"""Model soup: the weighted average of homogeneous checkpoints (PAPER.md 8.1, "Model Soup merges homogeneous
models").

Inputs are read tensor by tensor from their memory-mapped safetensors, so besides the output only one tensor per
input (plus one accumulator) is in memory at a time. Averaging happens in a wider float type and is cast back to
the stored dtype (or the requested one), which makes the soup of N copies of one checkpoint bit-identical to
it. Checkpoints are refused, naming the difference, when their configs (minus volatile fields), key sets or
tensor shapes differ: averaging unrelated parameters would load fine and silently produce garbage.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..configuration import CONFIG_NAME, SAILVLConfig, atomic_write_text
from ..errors import CheckpointError, ConfigError, InputError
from ..modeling.sailvl import parse_dtype
from ..modeling.weights import INDEX_FILE, save_state_dict, weight_files

RECIPE_FILE = "soup.json"
# Config fields that say how a file was written, not what model it holds.
VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "name_or_path", "_commit_hash", "transformers_version", "dtype", "torch_dtype"}
)
# Files of the first checkpoint that are not copied: the weights and config are written anew.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_NOT_COPIED = frozenset({CONFIG_NAME, INDEX_FILE, RECIPE_FILE})
_MAX_LISTED = 5


def normalise_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Uniform when None; otherwise checked (finite, >= 0, positive sum) and scaled to sum to 1."""
    if weights is None:
        return [1.0 / count] * count
    values = [float(w) for w in weights]
    if len(values) != count:
        raise InputError(f"got {len(values)} soup weights for {count} checkpoints; give one weight per checkpoint")
    if not all(math.isfinite(w) for w in values):
        raise InputError(f"soup weights must be finite numbers, got {values}")
    if any(w < 0 for w in values):
        raise InputError(f"soup weights must not be negative, got {values}")
    total = math.fsum(values)
    if total <= 0:
        raise InputError(f"soup weights must have a positive sum, got {values}")
    return [w / total for w in values]


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_volatile(v) for k, v in value.items() if k not in VOLATILE_CONFIG_KEYS}
    if isinstance(value, list):
        return [_strip_volatile(v) for v in value]
    return value


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                out.append(f"{sub} ({a.get(key, '<absent>')!r} vs {b.get(key, '<absent>')!r})")
            else:
                out.extend(_differences(a[key], b[key], sub))
        return out
    return [] if a == b else [f"{path or '<root>'} ({a!r} vs {b!r})"]


def _read_config(directory: Path) -> dict[str, Any]:
    SAILVLConfig.from_pretrained(directory)  # refuses non-SAIL-VL2 or malformed configs with a clear error
    return json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))


def check_homogeneous_configs(directories: Sequence[Path]) -> None:
    """Raise ConfigError naming the fields where a checkpoint's architecture differs from the first one."""
    first = _strip_volatile(_read_config(directories[0]))
    for other in directories[1:]:
        diffs = _differences(first, _strip_volatile(_read_config(other)))
        diffs.sort(key=lambda d: ".model_type " not in f".{d}")  # the most telling difference first
        if diffs:
            more = f" and {len(diffs) - _MAX_LISTED} more" if len(diffs) > _MAX_LISTED else ""
            raise ConfigError(
                f"cannot soup {directories[0]} with {other}: their configs differ in "
                f"{'; '.join(diffs[:_MAX_LISTED])}{more}. Model soup averages homogeneous models only"
            )


class _Reader:
    """Random access to the tensors of one checkpoint; each shard is opened (memory-mapped) once."""

    def __init__(self, directory: Path, stack: ExitStack) -> None:
        self.directory = directory
        self.files = weight_files(directory)
        self._stack = stack
        self._handles: dict[Path, Any] = {}

    def _handle(self, key: str) -> Any:
        path = self.files[key]
        if path not in self._handles:
            try:
                self._handles[path] = self._stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            except (SafetensorError, OSError, ValueError) as err:
                raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
        return self._handles[path]

    def shape(self, key: str) -> tuple[int, ...]:
        try:
            return tuple(self._handle(key).get_slice(key).get_shape())
        except SafetensorError as err:
            raise CheckpointError(f"cannot read {key!r} from {self.files[key]}: {err}") from err

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self._handle(key).get_tensor(key)
        except (SafetensorError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"cannot read {key!r} from {self.files[key]}: {err}") from err


def _check_tensors(readers: Sequence[_Reader]) -> None:
    """Same key set and same shapes everywhere, checked from the headers before any tensor is read."""
    first = readers[0]
    keys = set(first.files)
    for other in readers[1:]:
        missing, extra = sorted(keys - set(other.files)), sorted(set(other.files) - keys)
        if missing or extra:
            raise CheckpointError(
                f"cannot soup {first.directory} with {other.directory}: the latter lacks {len(missing)} weights "
                f"(e.g. {missing[:3]}) and has {len(extra)} others (e.g. {extra[:3]})"
            )
        bad = [f"{k} {first.shape(k)} vs {other.shape(k)}" for k in sorted(keys) if first.shape(k) != other.shape(k)]
        if bad:
            raise CheckpointError(
                f"cannot soup {first.directory} with {other.directory}: tensor shapes differ: "
                + "; ".join(bad[:_MAX_LISTED])
            )


def _average(key: str, readers: Sequence[_Reader], weights: Sequence[float], dtype: torch.dtype | None) -> torch.Tensor:
    first = readers[0].tensor(key)
    if not first.is_floating_point():
        # Integer/bool tensors (counters, masks) cannot be averaged meaningfully; they must agree.
        for reader in readers[1:]:
            if not torch.equal(first, reader.tensor(key)):
                raise CheckpointError(f"cannot soup the non-float tensor {key!r}: it differs in {reader.directory}")
        return first.clone()
    # float64 for fp32/fp64 inputs, float32 for 16-bit ones: wide enough that N equal inputs round back to
    # themselves exactly, while a 16-bit model's accumulator stays at twice (not four times) its size.
    wide = torch.float64 if first.element_size() >= 4 else torch.float32
    out_dtype = dtype or first.dtype
    total = first.to(wide).mul_(weights[0])
    del first
    for reader, weight in zip(readers[1:], weights[1:]):
        total.add_(reader.tensor(key).to(wide), alpha=weight)
    return total.to(out_dtype)


def _copy_side_files(source: Path, target: Path) -> None:
    """Tokenizer, preprocessor, generation config, chat template, remote code: everything but weights/config."""
    for item in sorted(source.iterdir()):
        if item.is_file() and not item.name.startswith(".") and item.name not in _NOT_COPIED \
                and not item.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(item, target / item.name)


def soup(
    checkpoints: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    weights: Sequence[float] | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    max_shard_size: int | str = "5GB",
) -> Path:
    """Average `checkpoints` (weights normalised to sum 1; default uniform) into a new checkpoint at `out`.

    `dtype`: the output dtype of floating tensors (default: each tensor's dtype in the first checkpoint).
    `out` must not exist or be an empty directory; the result appears there complete or not at all.
    """
    if isinstance(checkpoints, (str, os.PathLike)) or not checkpoints:
        raise InputError("soup needs a sequence of at least one checkpoint directory")
    directories = [Path(c) for c in checkpoints]
    norm = normalise_weights(weights, len(directories))
    target_dtype = parse_dtype(dtype)
    if target_dtype is not None and not target_dtype.is_floating_point:
        raise InputError(f"the soup dtype must be a floating type, got {target_dtype}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # also protects the inputs themselves
        raise InputError(f"{out} already exists and is not an empty directory; choose a new output folder")
    check_homogeneous_configs(directories)
    config = SAILVLConfig.from_pretrained(directories[0])

    with ExitStack() as stack:
        readers = [_Reader(d, stack) for d in directories]
        _check_tensors(readers)
        state = {key: _average(key, readers, norm, target_dtype) for key in sorted(readers[0].files)}

    out.parent.mkdir(parents=True, exist_ok=True)
    # Build the whole folder beside `out` and rename it in, so a crash never leaves a half-written soup.
    # Not tempfile.mkdtemp: its 0700 mode would stick to `out` after the rename.
    staging = out.parent / f".{out.name}.soup-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        save_state_dict(state, staging, max_shard_size=max_shard_size)
        floats = [t.dtype for t in state.values() if t.is_floating_point()]
        config.dtype = target_dtype or (floats[0] if floats else config.dtype)
        del state
        config.save_pretrained(staging)
        _copy_side_files(directories[0], staging)
        recipe = {
            "method": "weighted average of homogeneous checkpoints (model soup, PAPER.md 8.1)",
            "inputs": [{"path": str(d.resolve()), "weight": w} for d, w in zip(directories, norm)],
            "weights_given": None if weights is None else [float(w) for w in weights],
            "dtype": str(config.dtype).removeprefix("torch."),
        }
        atomic_write_text(staging / RECIPE_FILE, json.dumps(recipe, indent=2) + "\n")
        os.replace(staging, out)  # POSIX rename may replace an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
