"""sailvl2: open, native SAIL-VL2 (arXiv 2509.14033).

`import sailvl2` registers the `sailvl` config, model and processor with transformers' Auto classes, so
`AutoModel.from_pretrained(release_dir)` and `AutoProcessor.from_pretrained(release_dir)` load the official
checkpoints with no `trust_remote_code`.

Public API:
    sailvl2.load(path, device=None, dtype=None) -> SAILVL2 (chat / batch_chat)
    SAILVLConfig, SAILVLModel, SAILVLProcessor
    sailvl2.errors: the exception types

Importing the package is cheap: torch and transformers (seconds to import) load on the first use of a name
that needs them (PEP 562 module ``__getattr__``), so code that never touches the model (data curation
workers, the CLI's help, the RL rewards) does not pay for them. The Auto-class registration happens then too,
or, when transformers is imported first by other code, right after that import (see
:class:`_RegisterAfterTransformers`), so `import sailvl2` followed by `AutoModel.from_pretrained` still works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from typing import Any

from .errors import (
    CheckpointError,
    ConfigError,
    ContextLengthError,
    ImageLoadError,
    ImagePlaceholderError,
    InputError,
    SailVL2Error,
    TileBudgetError,
)

__version__ = "0.1.0"

__all__ = [
    "SAILVL2",
    "ChatResponse",
    "CheckpointError",
    "ConfigError",
    "ContextLengthError",
    "ImageLoadError",
    "ImagePlaceholderError",
    "InputError",
    "SAILVLConfig",
    "SAILVLModel",
    "SAILVLProcessor",
    "SAILViTConfig",
    "SailVL2Error",
    "TileBudgetError",
    "load",
]

# Public name -> the submodule defining it; imported (after the Auto-class registration) on first access.
_LAZY: dict[str, str] = {
    "SAILViTConfig": "configuration",
    "SAILVLConfig": "configuration",
    "SAILVLModel": "modeling",
    "SAILVLProcessor": "processing",
    "SAILVL2": "api",
    "ChatResponse": "api",
    "load": "api",
}
_registered = False
_transformers_loaded = False  # transformers was imported while registration was pending
_executing = threading.local()  # .depth: sailvl2 submodules this thread is executing (registration waits)


def _register() -> None:
    """Register the sailvl classes with transformers' Auto classes (once; imports torch and transformers)."""
    global _registered
    if _registered:
        return
    _registered = True  # first: the imports below must not re-enter through the import hook
    for finder in [f for f in sys.meta_path if isinstance(f, _RegisterAfterTransformers)]:
        sys.meta_path.remove(finder)
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from .configuration import SAILViTConfig, SAILVLConfig
    from .modeling import SAILVLModel
    from .processing import SAILVLProcessor

    AutoConfig.register(SAILVLConfig.model_type, SAILVLConfig, exist_ok=True)
    AutoConfig.register(SAILViTConfig.model_type, SAILViTConfig, exist_ok=True)
    # The release's auto_map names SAILVLModel for both AutoModel and AutoModelForCausalLM.
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        auto_class.register(SAILVLConfig, SAILVLModel, exist_ok=True)
    AutoProcessor.register(SAILVLConfig, SAILVLProcessor, exist_ok=True)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Runs :func:`_register` once ``transformers`` has been imported, by whoever imports it, so that
    ``import sailvl2`` followed by ``AutoModel.from_pretrained(release_dir)`` works as when the package
    imported transformers eagerly.

    Registering imports sailvl2's model modules, so it cannot run in the middle of importing one of them
    (``sailvl2.modeling`` importing transformers would find itself half-initialised). The finder therefore
    also watches the ``sailvl2.*`` submodules imported while registration is pending, and registers when
    transformers is loaded and the importing thread is executing no sailvl2 submodule any more. It wraps the loaders it finds for
    those imports only and puts the real loader back as soon as the module has executed; ``_register``
    removes the finder.
    """

    def find_spec(self, fullname: str, path: Any, target: types.ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if _registered or not (fullname == "transformers" or fullname.startswith(f"{__name__}.")):
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _WatchedLoader(spec.loader)
                return spec
        return None


class _WatchedLoader(importlib.abc.Loader):
    """A loader wrapper for :class:`_RegisterAfterTransformers`."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        global _transformers_loaded
        name, ours = module.__name__, module.__name__ != "transformers"
        depth = getattr(_executing, "depth", 0)
        _executing.depth = depth + ours
        try:
            self._loader.exec_module(module)
        finally:
            _executing.depth = depth
            # Leave no trace of the wrapper (transformers swaps in a lazy module of its own: restore both).
            for loaded in (module, sys.modules.get(name)):
                spec = getattr(loaded, "__spec__", None)
                if spec is not None and spec.loader is self:
                    spec.loader = self._loader
                if getattr(loaded, "__loader__", None) is self:
                    loaded.__loader__ = self._loader  # type: ignore[union-attr]
        _transformers_loaded |= not ours
        if _transformers_loaded and depth == 0:
            _register()

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        _register()  # before the api module: it needs the registrations
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # A submodule that the eager imports used to load as a side effect (sailvl2.modeling, ...).
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if "transformers" in sys.modules:
    _register()  # transformers is already paid for: register now, as before
elif not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
