"""Processing for SAIL-VL2: image loading and tiling, the univl-chat prompt, and the processor that turns
messages + images into ``input_ids`` / ``attention_mask`` / ``pixel_values`` (it owns all token math)."""

from .images import (
    ImageProcessorConfig,
    TilePlan,
    load_image,
    num_tiles_for_size,
    plan_tiles,
    preprocess_image,
    preprocess_images,
)
from .processor import SAILVLProcessor
from .prompt import DEFAULT_SYSTEM_MESSAGE, THINKING_SUFFIX, add_thinking_suffix, build_prompt

__all__ = [
    "DEFAULT_SYSTEM_MESSAGE",
    "THINKING_SUFFIX",
    "ImageProcessorConfig",
    "SAILVLProcessor",
    "TilePlan",
    "add_thinking_suffix",
    "build_prompt",
    "load_image",
    "num_tiles_for_size",
    "plan_tiles",
    "preprocess_image",
    "preprocess_images",
]
