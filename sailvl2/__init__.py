"""sailvl2: open, native SAIL-VL2 (arXiv 2509.14033).

`import sailvl2` registers the `sailvl` config, model and processor with transformers' Auto classes, so
`AutoModel.from_pretrained(release_dir)` and `AutoProcessor.from_pretrained(release_dir)` load the official
checkpoints with no `trust_remote_code`.

Public API:
    sailvl2.load(path, device=None, dtype=None) -> SAILVL2 (chat / batch_chat)
    SAILVLConfig, SAILVLModel, SAILVLProcessor
    sailvl2.errors: the exception types
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration import SAILViTConfig, SAILVLConfig
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
from .modeling import SAILVLModel
from .processing import SAILVLProcessor

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(SAILVLConfig.model_type, SAILVLConfig, exist_ok=True)
    AutoConfig.register(SAILViTConfig.model_type, SAILViTConfig, exist_ok=True)
    # The release's auto_map names SAILVLModel for both AutoModel and AutoModelForCausalLM.
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        auto_class.register(SAILVLConfig, SAILVLModel, exist_ok=True)
    AutoProcessor.register(SAILVLConfig, SAILVLProcessor, exist_ok=True)


_register()

from .api import SAILVL2, ChatResponse, load  # noqa: E402  (needs the registrations above)

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
