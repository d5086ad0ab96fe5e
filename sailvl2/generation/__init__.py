"""Generation: KV-cached batched decoding and next-token sampling."""

from .generate import generate, stream_tokens
from .sampling import SamplingSettings, select_next_tokens

__all__ = ["SamplingSettings", "generate", "select_next_tokens", "stream_tokens"]
