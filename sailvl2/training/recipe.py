"""Recipes: one YAML file per training stage, read into typed dataclasses, with `key=value` overrides.

    name: basic_pretrain
    init: {checkpoint: path/to/model}           # or {vit_from: A, llm_from: B} or {random: tiny}
    trainable: [adapter]                         # vit | adapter | llm; vit_last_n_blocks: 4
    optim: {lr: {adapter: 2.0e-4}, weight_decay: 0.0, grad_clip: 1.0}
    schedule: {kind: cosine, warmup_steps: 100, min_lr_ratio: 0.1}
    packing: {max_seq_len: 8192, buffer_size: 64, overlong: truncate, loss_reduction: token}
    data: {mixture: mixture.yaml}                # or {synthetic: {num_samples: 32}}
    global_batch_rows: 8                         # packed rows per optimizer step, all ranks together
    max_steps: 1000                              # or max_tokens: 1.0e9
    adalrs: {enabled: true}                      # PAPER.md 7
    lora: {targets: llm, r: 16, alpha: 32}       # optional: LoRA adapters instead of full training
    focus: {weight: 1.0, layers: [1], heads: [0]} # optional: focus supervision (training/focus.py)
    moe: {aux_loss_coef: 0.001}                  # MoE LLMs: global-batch load balancing (training/moe_balance.py)

Every section has a dataclass with defaults; unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .focus import FocusConfig
from .moe_balance import MoEConfig
from .packing import PackingConfig
from .schedule import ScheduleConfig

PARTS = ("vit", "adapter", "llm")
RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class InitConfig:
    checkpoint: str | None = None  # a whole SAIL-VL2 checkpoint
    vit_from: str | None = None  # SAIL-VL2 checkpoint whose vision_model to take
    llm_from: str | None = None  # SAIL-VL2 checkpoint whose language_model to take
    random: str | None = None  # "tiny": a random tiny model (debug recipe)
    reset_adapter: bool = False  # re-initialise mlp1 randomly (basic pre-training, PAPER.md 5.1)


@dataclass(frozen=True)
class OptimConfig:
    # "adamw", or "muon": Muon on the hidden weight matrices and AdamW on the rest (training/muon.py)
    kind: str = "adamw"
    lr: dict[str, float] = field(default_factory=lambda: {"vit": 1e-5, "adapter": 1e-4, "llm": 1e-5})
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    mixture: str | None = None
    synthetic: dict[str, Any] | None = None
    max_num: int | None = None  # tiles per image (default: the processor's)
    check_images: bool = False
    error_budget: float = 0.01
    # Draw the next step's rows in a background thread during the current step (training/prefetch.py). Off by
    # default: on 2 CPU cores, where torch's own threads already fill both cores, the nano multi-task step got
    # slower with it (0.66 -> ~0.75 s; session 15). Meant for GPU hosts with cores to spare.
    prefetch: bool = False


@dataclass(frozen=True)
class Recipe:
    name: str = "unnamed"
    stage: str = ""  # which paper stage this reproduces, for the logs
    init: InitConfig = InitConfig()
    trainable: tuple[str, ...] = PARTS
    vit_last_n_blocks: int | None = None
    # Train only the LLM's token embeddings, final norm and LM head; its decoder layers stay frozen. The
    # nano warm-up uses it: a from-scratch LLM that trains its layers learns the answer prior first and
    # stops reading the image, a frozen random body stays steerable by the vision features (docs/nano-sessions.md).
    llm_freeze_layers: bool = False
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    packing: PackingConfig = PackingConfig()
    data: DataConfig = DataConfig()
    adalrs: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None  # LoRAConfig fields (training/lora.py); trains adapters only
    focus: FocusConfig = FocusConfig()  # attention supervision on records with focus boxes; off by default
    moe: MoEConfig = MoEConfig()  # load-balancing loss, used only when the LLM is a mixture of experts
    global_batch_rows: int = 1
    max_steps: int | None = None
    max_tokens: float | None = None
    seed: int = 0
    dtype: str = "float32"
    # bf16 autocast on a CPU with native bf16 matrix products (training/precision.py); ignored elsewhere.
    cpu_bf16: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # e.g. flash_attention_2 on GPU: varlen attention for packed rows
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    keep_last: int = 2
    output_dir: str = "runs/{name}"

    def __post_init__(self) -> None:
        unknown = set(self.trainable) - set(PARTS)
        if unknown or not self.trainable:
            raise ConfigError(f"trainable must list some of {PARTS}, got {list(self.trainable)}")
        if self.max_steps is None and self.max_tokens is None:
            raise ConfigError("a recipe needs max_steps or max_tokens")
        if self.global_batch_rows < 1:
            raise ConfigError(f"global_batch_rows must be >= 1, got {self.global_batch_rows}")
        parts = self.trainable if self.lora is None else _lora_parts(self.lora)
        missing = [part for part in parts if part not in self.optim.lr]
        if missing:
            raise ConfigError(f"optim.lr has no learning rate for trainable part(s) {missing}")
        if self.optim.kind not in ("adamw", "muon"):
            raise ConfigError(f"optim.kind must be 'adamw' or 'muon', got {self.optim.kind!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


def _lora_parts(lora: dict[str, Any]) -> tuple[str, ...]:
    targets = lora.get("targets", "llm")
    return {"llm": ("llm",), "vit": ("vit",), "both": ("vit", "llm")}.get(targets, ("llm",))


_SECTIONS = {"init": InitConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "packing": PackingConfig,
             "data": DataConfig, "focus": FocusConfig, "moe": MoEConfig}


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> Recipe:
    values = dict(values)
    for key, cls in _SECTIONS.items():
        if key in values:
            section = values[key] or {}
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: {key} must be a mapping")
            if key == "optim" and "betas" in section:
                section = {**section, "betas": tuple(section["betas"])}
            values[key] = _build(cls, section, f"{where}.{key}")
    if "trainable" in values:
        values["trainable"] = tuple(values["trainable"])
    return _build(Recipe, values, where)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key} is not a section")
    node[keys[-1]] = value


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-6` (no dot) as a string; learning rates are written that way, so read them as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML (a path, or the name of a shipped recipe) and apply `key=value` overrides
    (values parsed as YAML, dotted keys for sections: `optim.lr.llm=1e-5`)."""
    file = Path(path)
    if not file.is_file() and (RECIPE_DIR / f"{path}.yaml").is_file():
        file = RECIPE_DIR / f"{path}.yaml"
    if not file.is_file():
        raise ConfigError(f"recipe {path} not found (a YAML file, or one of {sorted(p.stem for p in RECIPE_DIR.glob('*.yaml'))})")
    try:
        tree = _yaml(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{file} is not valid YAML: {err}") from err
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), _yaml(raw))
    base = file.parent
    # Paths inside a recipe are relative to the recipe file.
    for section, key in (("init", "checkpoint"), ("init", "vit_from"), ("init", "llm_from"), ("data", "mixture")):
        value = (tree.get(section) or {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
            tree[section][key] = str(base / value)
    return recipe_from_dict(tree, str(file))
