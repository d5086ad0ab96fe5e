"""Image tiles that are decoded only by the rank that trains them.

Visual packing (packing.py) needs every sample's token count and tile count on every rank, because each rank
builds the same global batch and deals its rows (trainer.deal_rows). It does not need the pixels. Under
`torchrun`, the encoder therefore plans each image's tiles from its header alone (`image_size_of` reads no
pixel data for files and encoded bytes). Decoding, resizing and normalising wait until a rank asks for the
pixels of one of its own rows, so each image is decoded once per step instead of once per rank.

A file whose header reads but whose data is broken (a truncated JPEG) then fails late, on one rank, inside a
step. The trainer keeps every rank in step: it runs that row with black tiles and zero loss weight, and it
logs and counts the row (trainer.py, `late_image_errors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ImageLoadError
from ..processing import preprocess_images
from ..processing.images import ImageProcessorConfig

__all__ = ["LazyPixels", "concat_pixels", "materialize"]


class LazyPixels:
    """The tiles of one sample's images (or of a packed row's samples), made on first `materialize()`."""

    def __init__(self, images: Sequence[Any] = (), config: ImageProcessorConfig | None = None,
                 budget: int | None = None, num_tiles: int = 0, parts: Sequence[Any] = ()) -> None:
        self.images, self.config, self.budget = list(images), config, budget
        self.parts = list(parts)  # a packed row: the samples' own tensors or LazyPixels, in order
        self.num_tiles = num_tiles if not self.parts else sum(_tiles(part) for part in self.parts)
        self._tensor: torch.Tensor | None = None

    def materialize(self) -> torch.Tensor:
        if self._tensor is None:
            if self.parts:
                self._tensor = torch.cat([materialize(part) for part in self.parts])
            else:
                self._tensor, tiles = preprocess_images(self.images, self.config, max_num=self.budget)
                if sum(tiles) != self.num_tiles:  # the header lied about the size: the plan no longer holds
                    raise ImageLoadError(f"images {self.images!r} decoded to {sum(tiles)} tiles, their headers "
                                         f"planned {self.num_tiles}")
        return self._tensor

    def zeros(self) -> torch.Tensor:
        """Black (all-zero) tiles of the planned shape: the stand-in for a row whose images fail to decode."""
        size = self._image_size()
        return torch.zeros(self.num_tiles, 3, size, size)

    def _image_size(self) -> int:
        if self.config is not None:
            return self.config.image_size
        for part in self.parts:
            if isinstance(part, LazyPixels):
                return part._image_size()
            return int(part.shape[-1])
        raise ValueError("LazyPixels without images")


def _tiles(pixels: Any) -> int:
    return pixels.num_tiles if isinstance(pixels, LazyPixels) else int(pixels.shape[0])


def materialize(pixels: Any) -> torch.Tensor | None:
    """A tensor (or None) from a tensor, None or LazyPixels."""
    return pixels.materialize() if isinstance(pixels, LazyPixels) else pixels


def concat_pixels(parts: Sequence[Any]) -> Any:
    """One row's pixels from its samples': a tensor when all are tensors, else a lazy concatenation."""
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    if all(torch.is_tensor(part) for part in parts):
        return torch.cat(parts)
    return LazyPixels(parts=parts)
