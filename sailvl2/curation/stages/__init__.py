"""The stage registry: pipeline YAML names -> stage classes.

A stage module registers its classes with ``@register_stage("name")``; the class constructor takes the
stage's YAML settings as keyword arguments. Built-in stage modules are imported lazily, on the first lookup,
and one that is missing (not written yet, or an optional dependency absent) does not break the others.
Stages of other packages register themselves when their module is imported (a pipeline's ``plugins`` list).

Public API:
    register_stage(name)          class decorator
    get_stage(name, settings)     a new stage instance, settings checked against the constructor
    available_stages()            the registered names (after importing the built-in modules)
    is_global_stage(stage)        True for GlobalStage (process_all), False for MapStage (process)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ...errors import CurationError

__all__ = ["available_stages", "get_stage", "is_global_stage", "register_stage"]

# Modules of this package that define stages; imported on first lookup. Missing ones are skipped.
_BUILTIN_MODULES = ("validate", "dedup", "judge", "synthesis", "balance")
_REGISTRY: dict[str, type] = {}
_builtins_loaded = False
_T = TypeVar("_T", bound=type)


def register_stage(name: str) -> Callable[[_T], _T]:
    """Register a stage class under ``name`` (its ``name`` attribute is set to it unless the class body sets
    one)."""
    if not isinstance(name, str) or not name.strip():
        raise CurationError(f"a stage name must be a non-empty string, got {name!r}")

    def decorate(cls: _T) -> _T:
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise CurationError(f"stage name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        if not isinstance(vars(cls).get("name"), str):  # its own name, not one inherited from a base stage
            cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTIN_MODULES:
        full = f"{__name__}.{module}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:  # the module exists but one of its own imports is missing: say so
                raise


def available_stages() -> list[str]:
    """Every registered stage name, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_stage(name: str, settings: Mapping[str, Any] | None = None) -> Any:
    """A new instance of the stage registered as ``name``, built from its YAML ``settings``."""
    if name not in _REGISTRY:
        _load_builtins()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise CurationError(f"unknown stage {name!r}; registered stages: {available_stages()}")
    settings = dict(settings or {})
    _check_settings(name, cls, settings)
    try:
        stage = cls(**settings)
    except CurationError:
        raise
    except (TypeError, ValueError) as exc:
        raise CurationError(f"stage {name!r}: bad settings {settings}: {exc}") from exc
    if not (callable(getattr(stage, "process", None)) or callable(getattr(stage, "process_all", None))):
        raise CurationError(f"stage {name!r} ({cls.__qualname__}) has neither process() nor process_all()")
    return stage


def is_global_stage(stage: Any) -> bool:
    """A stage with ``process_all`` runs over the whole dataset in the driver; one with ``process`` per shard."""
    return callable(getattr(stage, "process_all", None))


def _check_settings(name: str, cls: type, settings: dict[str, Any]) -> None:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: the constructor checks for itself
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    allowed = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise CurationError(f"stage {name!r}: unknown setting(s) {unknown}; allowed: {allowed}")
