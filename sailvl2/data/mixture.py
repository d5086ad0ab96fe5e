"""The data mixture: which datasets a run trains on, and how often each is drawn (a YAML file).

Example (relative paths resolve against the YAML file's folder)::

    datasets:
      - name: captions                  # unique; used in stats, logs and resume states
        path: data/captions.jsonl       # a file, a glob ("shards/ocr-*.tar"), a list of files, or an HF dir
        repeat: 2                       # dataset-level resampling: every record twice per epoch
        max_num: 6                      # tile limit for this dataset's images (default: the processor's)
      - name: ocr
        path: shards/ocr-*.tar
        format: webdataset              # optional; inferred from the path
        repeat: 0.5                     # a seeded half of the records each epoch
      - name: reasoning
        path: data/math.parquet
        image_root: /mnt/images         # relative image paths in the file resolve here
        kind: cot                       # default kind of records that do not say
        repeat: 1

One scheme per mixture: every dataset gives ``repeat`` (epochs of known length, the paper's dataset-level
resampling), or every dataset gives ``weight`` (an endless weighted draw). Datasets that give neither get
``repeat: 1`` / ``weight: 1`` of the scheme the others use; a mixture that gives neither anywhere uses
``repeat: 1`` (one pass over everything per epoch). See :class:`sailvl2.data.stream.MixtureStream` for
exactly how each scheme draws.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .errors import DataError
from .readers import FORMATS, SourceSpec
from .records import KINDS

__all__ = ["DatasetConfig", "MixtureConfig", "MixtureItem", "MixtureStream"]

_DATASET_KEYS = ("name", "path", "format", "image_root", "weight", "repeat", "max_num", "kind")
_TOP_KEYS = ("datasets",)


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset of a mixture. ``weight`` and ``repeat`` are exclusive; ``None`` means "the default"."""

    name: str
    path: str | tuple[str, ...]
    format: str | None = None
    image_root: str | None = None
    weight: float | None = None
    repeat: float | None = None
    max_num: int | None = None
    kind: str = "direct"

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"every dataset needs a non-empty string 'name', got {self.name!r}")
        if self.weight is not None and self.repeat is not None:
            raise ConfigError(f"{where} gives both 'weight' and 'repeat'; use one")
        for key in ("weight", "repeat"):
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
            if value < 0:
                raise ConfigError(f"{where}: '{key}' must be >= 0, got {value}")
            object.__setattr__(self, key, float(value))
        if self.max_num is not None and (isinstance(self.max_num, bool) or not isinstance(self.max_num, int)
                                         or self.max_num < 1):
            raise ConfigError(f"{where}: 'max_num' must be a positive integer, got {self.max_num!r}")
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"{where}: unknown format {self.format!r}; expected one of {FORMATS}")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: 'kind' must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.path, (str, os.PathLike)):
            if not isinstance(self.path, Sequence) or not self.path:
                raise ConfigError(f"{where}: 'path' must be a path or a non-empty list of paths")
            object.__setattr__(self, "path", tuple(os.fspath(p) for p in self.path))
        else:
            object.__setattr__(self, "path", os.fspath(self.path))
        try:  # fail at config time, naming the dataset, rather than hours into a run
            source = self.source
            source.files()  # resolved_format() alone would not look at the files when format is given
            source.resolved_format()
        except DataError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(self.path, self.format, self.image_root, self.kind)


@dataclass(frozen=True)
class MixtureConfig:
    """The datasets of one run; ``mode`` is ``"repeat"`` or ``"weight"`` (see the module docstring)."""

    datasets: tuple[DatasetConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if not self.datasets:
            raise ConfigError("a mixture needs at least one dataset")
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"dataset names must be unique; repeated: {duplicates}")
        weighted = [d.name for d in self.datasets if d.weight is not None]
        repeated = [d.name for d in self.datasets if d.repeat is not None]
        if weighted and repeated:
            raise ConfigError(f"one scheme per mixture: {weighted} give 'weight' but {repeated} give 'repeat'")
        if sum(self.rates()) <= 0:
            raise ConfigError(f"every dataset has {self.mode} 0; nothing would ever be drawn")

    @property
    def mode(self) -> str:
        return "weight" if any(d.weight is not None for d in self.datasets) else "repeat"

    def rates(self) -> list[float]:
        """Each dataset's weight (weight mode) or repeat count (repeat mode), defaults filled in."""
        key = self.mode
        return [1.0 if getattr(d, key) is None else float(getattr(d, key)) for d in self.datasets]

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | os.PathLike | None = None) -> "MixtureConfig":
        """Build from parsed YAML/JSON; relative ``path`` / ``image_root`` resolve against ``base_dir``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a mixture must be a mapping with a 'datasets' list, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"unknown mixture key(s) {unknown}; allowed: {list(_TOP_KEYS)}")
        entries = data.get("datasets")
        if not isinstance(entries, list) or not entries:
            raise ConfigError("'datasets' must be a non-empty list of datasets")
        datasets = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"datasets[{index}] must be a mapping, got {type(entry).__name__}")
            label = f"datasets[{index}] ({entry.get('name', 'unnamed')!r})"
            unknown = sorted(set(map(str, entry)) - set(_DATASET_KEYS))
            if unknown:
                raise ConfigError(f"{label}: unknown key(s) {unknown}; allowed: {list(_DATASET_KEYS)}")
            missing = [key for key in ("name", "path") if entry.get(key) in (None, "")]
            if missing:
                raise ConfigError(f"{label}: missing {' and '.join(repr(k) for k in missing)}")
            fields = dict(entry)
            path = fields["path"]
            if isinstance(path, list):
                if not all(isinstance(p, str) for p in path):
                    raise ConfigError(f"{label}: 'path' entries must be strings")
                fields["path"] = tuple(_resolve(p, base_dir) for p in path)
            elif isinstance(path, str):
                fields["path"] = _resolve(path, base_dir)
            else:
                raise ConfigError(f"{label}: 'path' must be a string or a list of strings, got {path!r}")
            if fields.get("image_root") is not None:
                if not isinstance(fields["image_root"], str):
                    raise ConfigError(f"{label}: 'image_root' must be a string")
                fields["image_root"] = _resolve(fields["image_root"], base_dir)
            try:
                datasets.append(DatasetConfig(**fields))
            except TypeError as exc:  # e.g. a YAML list where a number belongs, caught by a comparison
                raise ConfigError(f"{label}: {exc}") from exc
        return cls(tuple(datasets))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "MixtureConfig":
        """Read a mixture YAML file (see the module docstring for the layout)."""
        try:
            import yaml
        except ImportError as exc:
            raise ImportError("reading a mixture YAML needs pyyaml: pip install 'sailvl2[train]'") from exc
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"mixture file {path!r} not found") from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read mixture file {path!r}: {exc}") from exc
        try:
            return cls.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def _resolve(path: str, base_dir: str | os.PathLike | None) -> str:
    path = os.path.expanduser(path)
    if base_dir is None or os.path.isabs(path):
        return path
    return os.path.join(os.fspath(base_dir), path)


# The stream lives in its own module (this one holds the config); both are importable from here.
from .stream import MixtureItem, MixtureStream  # noqa: E402
