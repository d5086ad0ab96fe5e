"""LoRA fine-tuning of SAIL-VL2 through PEFT, with a merge back to the release layout.

Adapters are injected in place (`peft.inject_adapter_in_model`) into `model.language_model` and/or
`model.vision_model`, so the outer `SAILVLModel` keeps its class, forward and loading code; `get_peft_model`
would wrap it in a `PeftModel` whose forward and `save_pretrained` are not ours. Everything that is not a
LoRA weight is frozen. `merge_lora` folds the adapters into the base weights and removes every PEFT wrapper,
so `model.state_dict()` has exactly the release keys again and `model.save_pretrained` exports the release
layout. Adapters are stored as safetensors only (`adapter_model.safetensors` + `adapter_config.json`).

Qwen3-MoE keeps its experts as fused 3-D parameters; PEFT maps `gate_proj`/`up_proj`/`down_proj` onto them
(parameter wrappers), which do not support dropout, hence the default `dropout=0.0`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..configuration import atomic_write_text
from ..errors import CheckpointError, ConfigError, InputError
from ..modeling.sailvl import SAILVLModel

LLM_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VIT_TARGET_MODULES: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.fc3")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FORMAT = "sailvl2-lora"

# targets -> the SAILVLModel sub-modules that get adapters. `mlp1` (two small linear layers) is no LoRA target;
# like every other non-LoRA weight it is frozen by apply_lora, and a caller who wants it trained unfreezes it.
_PARTS: dict[str, tuple[str, ...]] = {
    "llm": ("language_model",),
    "vit": ("vision_model",),
    "both": ("vision_model", "language_model"),
}
_DEFAULT_MODULES = {"language_model": LLM_TARGET_MODULES, "vision_model": VIT_TARGET_MODULES}
_ADAPTER_NAME = "default"  # PEFT's adapter name; dropped from the stored keys so files do not depend on it
_CONFIG_ATTR = "_sailvl2_lora_config"


@dataclass(frozen=True)
class LoRAConfig:
    """Where and how big the adapters are.

    `target_modules=None` uses the defaults of each chosen part (LLM: q/k/v/o/gate/up/down projections; ViT:
    `attn.qkv`, `attn.proj`, `mlp.fc1..3`). Explicit names are tried in every chosen part and must match at
    least one layer in each; a name matches a module whose dotted path equals it or ends with `.name`.
    """

    targets: str = "llm"
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.targets not in _PARTS:
            raise ConfigError(f"LoRA targets must be one of {sorted(_PARTS)}, got {self.targets!r}")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ConfigError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if self.target_modules is not None:
            names = (self.target_modules,) if isinstance(self.target_modules, str) else tuple(self.target_modules)
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ConfigError(f"LoRA target_modules must be non-empty module names, got {self.target_modules!r}")
            object.__setattr__(self, "target_modules", names)  # lists from JSON/YAML -> hashable tuple

    def modules_for(self, part: str) -> tuple[str, ...]:
        return self.target_modules or _DEFAULT_MODULES[part]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules) if self.target_modules else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LoRAConfig":
        known = {"targets", "r", "alpha", "dropout", "target_modules"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown LoRA config fields {sorted(unknown)}")
        return cls(**data)


def _is_lora_name(name: str) -> bool:
    return any(part.startswith("lora_") for part in name.split("."))


def _stored_key(name: str) -> str:
    """`...q_proj.lora_A.default.weight` -> `...q_proj.lora_A.weight` (drop the adapter name)."""
    parts = name.split(".")
    kept = [p for i, p in enumerate(parts) if not (p == _ADAPTER_NAME and i and parts[i - 1].startswith("lora_"))]
    return ".".join(kept)


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith("." + target)


def _tuner_layer_class() -> type:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError as err:  # peft is an optional dependency (the `train` extra)
        raise ImportError("LoRA needs peft: pip install 'sailvl2[train]'") from err
    return BaseTunerLayer


def has_lora(model: torch.nn.Module) -> bool:
    """True if LoRA adapters are injected (and not yet merged)."""
    tuner_layer = _tuner_layer_class()
    return any(isinstance(m, tuner_layer) for m in model.modules())


def apply_lora(model: SAILVLModel, config: LoRAConfig) -> SAILVLModel:
    """Inject fresh LoRA adapters (B = 0, so outputs are unchanged) and freeze every other weight."""
    if not isinstance(model, SAILVLModel):
        raise InputError(f"apply_lora needs a SAILVLModel, got {type(model).__name__}")
    if not isinstance(config, LoRAConfig):
        raise InputError(f"apply_lora needs a LoRAConfig, got {type(config).__name__}")
    if has_lora(model):  # also reports a missing peft clearly
        raise InputError("the model already has LoRA adapters; merge_lora() them first or start from a fresh model")
    parts = _PARTS[config.targets]
    # Check every part before touching any, so a bad name never leaves a half-wrapped model behind.
    for part in parts:
        names = [n for n, _ in getattr(model, part).named_modules()]
        if not any(_matches(n, t) for n in names for t in config.modules_for(part)):
            raise ConfigError(f"LoRA target_modules {list(config.modules_for(part))} match no layer of {part}")
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    flags = {name: param.requires_grad for name, param in model.named_parameters()}
    for part in parts:
        peft_config = PeftLoraConfig(
            r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
            target_modules=list(config.modules_for(part)), bias="none",
        )
        try:
            inject_adapter_in_model(peft_config, getattr(model, part), adapter_name=_ADAPTER_NAME)
        except ValueError as err:  # PEFT's refusals (unsupported layer, dropout on MoE experts, ...)
            _remove_wrappers(model, merge=False)  # undo the parts already wrapped
            for name, param in model.named_parameters():
                param.requires_grad_(flags[name])
            raise ConfigError(f"cannot add LoRA to {part}: {err}") from err
    for name, param in model.named_parameters():
        param.requires_grad_(_is_lora_name(name))
    setattr(model, _CONFIG_ATTR, config)
    return model


def _lora_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    params = {_stored_key(n): p for n, p in model.named_parameters() if _is_lora_name(n)}
    if not params:
        raise InputError("the model has no LoRA adapters (call apply_lora or load_adapter first)")
    return params


def lora_state_dict(model: SAILVLModel) -> dict[str, torch.Tensor]:
    """The adapter weights only, keyed by their module path without PEFT's adapter name (detached views)."""
    return {key: param.detach() for key, param in _lora_parameters(model).items()}


def save_adapter(model: SAILVLModel, directory: str | os.PathLike) -> Path:
    """Write `adapter_model.safetensors` and `adapter_config.json` (each file replaced atomically)."""
    config = getattr(model, _CONFIG_ATTR, None)
    state = {k: v.to("cpu").contiguous() for k, v in lora_state_dict(model).items()}
    if config is None:
        raise InputError("the model's adapters were not added by apply_lora/load_adapter; their config is unknown")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{ADAPTER_WEIGHTS}.tmp-{os.getpid()}"
    try:
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / ADAPTER_WEIGHTS)
    finally:
        tmp.unlink(missing_ok=True)
    record = {"format": ADAPTER_FORMAT, "lora": config.to_dict()}
    atomic_write_text(directory / ADAPTER_CONFIG, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return directory


def read_adapter_config(directory: str | os.PathLike) -> LoRAConfig:
    file = Path(directory) / ADAPTER_CONFIG
    if not file.is_file():
        raise CheckpointError(f"no {ADAPTER_CONFIG} in {directory} (not a sailvl2 LoRA adapter folder)")
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(record, dict) or record.get("format") != ADAPTER_FORMAT \
            or not isinstance(record.get("lora"), dict):
        raise CheckpointError(f"{file} is not a {ADAPTER_FORMAT} adapter config")
    return LoRAConfig.from_dict(record["lora"])


def load_adapter(model: SAILVLModel, directory: str | os.PathLike) -> SAILVLModel:
    """Load a saved adapter; injects it first if the model has none (the model must be the same base)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    file = directory / ADAPTER_WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"no {ADAPTER_WEIGHTS} in {directory}")
    injected = not has_lora(model)
    if injected:
        apply_lora(model, config)
    elif getattr(model, _CONFIG_ATTR, None) != config:
        raise ConfigError(
            f"the model's adapters ({getattr(model, _CONFIG_ATTR, None)}) differ from those in {directory} ({config})"
        )
    try:
        _copy_adapter_weights(_lora_parameters(model), file)
    except BaseException:
        if injected:  # leave the model as it came: fresh adapters hold no weights worth keeping
            _remove_wrappers(model, merge=False)
        raise
    return model


def _copy_adapter_weights(params: dict[str, torch.nn.Parameter], file: Path) -> None:
    """Check every key and shape first, then copy, so a bad file never leaves half-loaded adapters."""
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            stored = set(handle.keys())
            if stored != set(params):
                missing, extra = sorted(set(params) - stored), sorted(stored - set(params))
                raise CheckpointError(
                    f"{file} does not fit the model: {len(missing)} adapter weights missing (e.g. {missing[:3]}), "
                    f"{len(extra)} unexpected (e.g. {extra[:3]})"
                )
            for key, param in params.items():
                shape = tuple(handle.get_slice(key).get_shape())
                if shape != tuple(param.shape):
                    raise CheckpointError(f"{file}: {key} has shape {shape}, the model's adapter {tuple(param.shape)}")
            with torch.no_grad():
                for key, param in params.items():
                    param.copy_(handle.get_tensor(key))
    except CheckpointError:
        raise
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read {file}: {err}") from err


def merge_lora(model: SAILVLModel) -> SAILVLModel:
    """Fold the adapters into the base weights and remove all PEFT wrappers (in place; returns the model).

    Afterwards the module tree and `state_dict()` keys are those of a plain `SAILVLModel` and every weight is
    trainable again, as after `from_pretrained`.
    """
    if not has_lora(model):
        raise InputError("the model has no LoRA adapters to merge")
    _remove_wrappers(model, merge=True)
    return model


def _remove_wrappers(model: SAILVLModel, merge: bool) -> None:
    """Replace every PEFT wrapper by its base layer, folding the adapter in first when `merge`."""
    tuner_layer = _tuner_layer_class()
    tuner_names = [n for n, m in model.named_modules() if isinstance(m, tuner_layer)]
    # Only the outermost wrappers are replaced; nested ones (PEFT's MoE parameter wrappers) merge through them.
    outermost = [n for n in tuner_names if not any(n.startswith(t + ".") for t in tuner_names)]
    with torch.no_grad():
        for name in outermost:
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            layer = getattr(parent, child_name)
            try:
                if hasattr(layer, "unload_and_optionally_merge_module"):
                    base = layer.unload_and_optionally_merge_module(merge=merge, safe_merge=True, adapter_names=None)
                else:
                    if merge:
                        layer.merge(safe_merge=True)
                    base = layer.get_base_layer()
            except ValueError as err:  # safe_merge found non-finite values
                raise CheckpointError(f"cannot merge the adapter of {name}: {err}") from err
            setattr(parent, child_name, base)
    for module in model.modules():
        if "peft_config" in vars(module):
            del module.peft_config  # set by inject_adapter_in_model; stale once the wrappers are gone
    if hasattr(model, _CONFIG_ATTR):
        delattr(model, _CONFIG_ATTR)
    for param in model.parameters():
        param.requires_grad_(True)
