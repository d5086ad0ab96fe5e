"""The pipeline file: YAML -> typed, checked dataclasses.

Example (relative paths resolve against the YAML file's folder)::

    inputs:
      - {path: data/captions.jsonl}                 # JSONL, Parquet, WebDataset .tar (globs and lists too)
      - {path: shards/*.tar, format: webdataset}
      - {path: imgs/, format: folder}               # name.jpg + name.txt (or name.json) caption pairs
    output: out/curated
    shard_size: 1000                                # items per work shard and per curated output shard
    images: reference                               # output image paths: absolute (reference) or copied (copy)
    contact_sheet: 16                               # kept and dropped examples shown in the report
    plugins: [mypackage.stages]                     # modules imported first (they register more stages)
    stages:
      - {stage: validate, min_side: 32, max_aspect: 20}
      - {stage: exact_dedup}

Every problem raises ``CurationError`` naming the key (and the file).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CurationError

__all__ = ["IMAGE_MODES", "INPUT_FORMATS", "InputSpec", "PipelineConfig", "StageSpec", "load_pipeline"]

INPUT_FORMATS = ("jsonl", "parquet", "webdataset", "folder")
IMAGE_MODES = ("reference", "copy")
_TOP_KEYS = ("inputs", "output", "shard_size", "images", "contact_sheet", "plugins", "stages")
_INPUT_KEYS = ("path", "format", "image_root", "kind")


@dataclass(frozen=True)
class InputSpec:
    """One input: a file, a glob, a list of files, or (``format: folder``) a folder of images + captions.
    ``image_root`` overrides the folder relative image paths resolve against (default: the data file's)."""

    path: str | tuple[str, ...]
    format: str | None = None
    image_root: str | None = None
    kind: str = "direct"

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in INPUT_FORMATS:
            raise CurationError(f"input {self.path!r}: unknown format {self.format!r}; expected one of "
                                f"{INPUT_FORMATS}")


@dataclass(frozen=True)
class StageSpec:
    """One ``stages`` entry: the registered stage name and its settings (every other key of the entry)."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineConfig:
    inputs: tuple[InputSpec, ...]
    output: str
    stages: tuple[StageSpec, ...] = ()
    shard_size: int = 1000
    images: str = "reference"
    contact_sheet: int = 16
    plugins: tuple[str, ...] = ()
    base_dir: str | None = None  # the YAML file's folder: plugin modules may live there

    def __post_init__(self) -> None:
        if not self.inputs:
            raise CurationError("a pipeline needs at least one input")
        for key in ("shard_size", "contact_sheet"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "shard_size" else 0):
                raise CurationError(f"'{key}' must be an integer >= {1 if key == 'shard_size' else 0}, "
                                    f"got {value!r}")
        if self.images not in IMAGE_MODES:
            raise CurationError(f"'images' must be one of {IMAGE_MODES}, got {self.images!r}")

    def import_plugins(self) -> None:
        """Import the ``plugins`` modules, which register their stages. The YAML file's folder joins
        ``sys.path`` (for good, so spawned workers, which copy it, import the same modules)."""
        if self.plugins and self.base_dir and self.base_dir not in sys.path:
            sys.path.append(self.base_dir)
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise CurationError(f"cannot import plugin module {module!r}: {exc}") from exc

    def build_stages(self) -> list[Any]:
        """One new instance per stage entry (plugins imported first); raises on unknown names or settings."""
        from .stages import get_stage

        self.import_plugins()
        stages = []
        for index, spec in enumerate(self.stages):
            try:
                stages.append(get_stage(spec.name, spec.settings))
            except CurationError as exc:
                raise CurationError(f"stages[{index}]: {exc}") from exc
        names = [getattr(stage, "name", spec.name) for stage, spec in zip(stages, self.stages)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # decisions are keyed by stage name, so a name may appear once
            raise CurationError(f"stage(s) {repeated} appear more than once in the pipeline")
        return stages

    def fingerprint(self) -> str:
        """A hash of everything that decides the output (not ``output``, ``contact_sheet``): a resumed run
        refuses to continue an output folder written by a different pipeline."""
        content = asdict(self)
        for key in ("output", "contact_sheet", "base_dir"):
            content.pop(key)
        blob = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | os.PathLike | None = None) -> "PipelineConfig":
        """Build from parsed YAML; relative input paths, ``image_root`` and ``output`` resolve against
        ``base_dir``."""
        if not isinstance(data, Mapping):
            raise CurationError(f"a pipeline must be a mapping with 'inputs', 'output' and 'stages', "
                                f"got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
        if unknown:
            raise CurationError(f"unknown pipeline key(s) {unknown}; allowed: {list(_TOP_KEYS)}")
        for key in ("inputs", "output"):
            if data.get(key) in (None, "", []):
                raise CurationError(f"the pipeline needs '{key}'")
        if not isinstance(data["output"], str):
            raise CurationError(f"'output' must be a folder path, got {data['output']!r}")
        entries = data["inputs"]
        if not isinstance(entries, list):
            entries = [entries]
        inputs = tuple(_input(entry, index, base_dir) for index, entry in enumerate(entries))
        stages = data.get("stages") or []
        if not isinstance(stages, list):
            raise CurationError(f"'stages' must be a list of {{stage: NAME, ...settings}}, got {stages!r:.80}")
        plugins = data.get("plugins") or []
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise CurationError(f"'plugins' must be a list of module names, got {plugins!r}")
        options = {key: data[key] for key in ("shard_size", "images", "contact_sheet") if key in data}
        return cls(inputs=inputs, output=_resolve(data["output"], base_dir),
                   stages=tuple(_stage(entry, index) for index, entry in enumerate(stages)),
                   plugins=tuple(plugins), base_dir=None if base_dir is None else os.fspath(base_dir), **options)


def load_pipeline(path: str | os.PathLike, check_stages: bool = True) -> PipelineConfig:
    """Read a pipeline YAML file; with ``check_stages`` every stage is built once so that unknown names and
    settings fail here, naming the entry, rather than after the first shard."""
    import yaml

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError as exc:
        raise CurationError(f"pipeline file {path!r} not found") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CurationError(f"cannot read pipeline file {path!r}: {exc}") from exc
    try:
        config = PipelineConfig.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))
        if check_stages:
            config.build_stages()
    except CurationError as exc:
        raise CurationError(f"{path}: {exc}") from exc
    return config


def _input(entry: Any, index: int, base_dir: str | os.PathLike | None) -> InputSpec:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, Mapping):
        raise CurationError(f"inputs[{index}] must be a path or a mapping with 'path', got {entry!r:.80}")
    unknown = sorted(set(map(str, entry)) - set(_INPUT_KEYS))
    if unknown:
        raise CurationError(f"inputs[{index}]: unknown key(s) {unknown}; allowed: {list(_INPUT_KEYS)}")
    path = entry.get("path")
    if isinstance(path, list) and path and all(isinstance(p, str) for p in path):
        resolved: str | tuple[str, ...] = tuple(_resolve(p, base_dir) for p in path)
    elif isinstance(path, str) and path:
        resolved = _resolve(path, base_dir)
    else:
        raise CurationError(f"inputs[{index}]: 'path' must be a path or a list of paths, got {path!r}")
    root = entry.get("image_root")
    if root is not None and not isinstance(root, str):
        raise CurationError(f"inputs[{index}]: 'image_root' must be a folder path, got {root!r}")
    try:
        return InputSpec(resolved, entry.get("format"), None if root is None else _resolve(root, base_dir),
                         entry.get("kind", "direct"))
    except CurationError as exc:
        raise CurationError(f"inputs[{index}]: {exc}") from exc


def _stage(entry: Any, index: int) -> StageSpec:
    if isinstance(entry, str):
        entry = {"stage": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("stage"), str):
        raise CurationError(f"stages[{index}] must be a mapping with a 'stage' name, got {entry!r:.80}")
    settings = {str(key): value for key, value in entry.items() if key != "stage"}
    return StageSpec(entry["stage"], settings)


def _resolve(path: str, base_dir: str | os.PathLike | None) -> str:
    path = os.path.expanduser(path)
    if base_dir is None or os.path.isabs(path) or "://" in path:
        return path
    return os.path.normpath(os.path.join(os.fspath(base_dir), path))
