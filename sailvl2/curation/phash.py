"""Perceptual image hash (64-bit DCT pHash) and a banded index for Hamming-distance search.

The hash is the classic DCT pHash: the image is turned to luminance, shrunk to 32x32, transformed with an
orthonormal 2-D DCT-II, and the 8x8 lowest-frequency coefficients are compared with their median (one bit
each, 1 = above the median). Re-encoding, resizing and small crops move only a few of those bits, while
different pictures differ in about half of them. numpy has no DCT, so the 32x32 DCT-II matrix is built here.

:class:`HammingIndex` finds every stored hash within ``max_distance`` bits without comparing all pairs. It
splits the 64 bits into ``max_distance + 1`` bands: two hashes that differ in at most ``d`` bits cannot differ
in all ``d + 1`` bands (pigeonhole), so they share at least one band value exactly and meet in that band's
bucket. Candidates from the buckets are then checked with the true distance, so the search is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterator

import numpy as np
from PIL import Image

__all__ = ["HASH_BITS", "HammingIndex", "hamming", "phash"]

HASH_BITS = 64
_SIDE = 32   # the image is shrunk to 32x32 before the DCT (the published pHash size)
_KEEP = 8    # 8x8 low-frequency coefficients -> 64 bits


def _dct_matrix(size: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (``D @ x`` is the DCT of a column vector ``x``)."""
    k = np.arange(size, dtype=np.float64)[:, None]
    n = np.arange(size, dtype=np.float64)[None, :]
    matrix = np.sqrt(2.0 / size) * np.cos(np.pi * (2.0 * n + 1.0) * k / (2.0 * size))
    matrix[0, :] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_SIDE)
_BIT_WEIGHTS = [1 << (HASH_BITS - 1 - i) for i in range(HASH_BITS)]


def phash(image: Image.Image) -> int:
    """The 64-bit perceptual hash of ``image`` (any mode; apply EXIF orientation before calling).

    Bit ``63 - (8 * row + col)`` is set when DCT coefficient ``(row, col)`` exceeds the median of the 64
    low-frequency coefficients by more than rounding noise (so the hash does not depend on floating-point
    details): a flat image hashes to ``1 << 63`` (only its DC term is above the median), a black one to 0.
    """
    gray = image if image.mode == "L" else image.convert("L")  # alpha is ignored, as in RGB conversion
    gray = gray.resize((_SIDE, _SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    pixels = np.asarray(gray, dtype=np.float64)
    coefficients = (_DCT @ pixels @ _DCT.T)[:_KEEP, :_KEEP].ravel()
    bits = coefficients > np.median(coefficients) + 1e-6
    return sum(weight for weight, bit in zip(_BIT_WEIGHTS, bits.tolist()) if bit)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def _band_masks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, mask) of ``max_distance + 1`` contiguous bands covering the 64 bits as evenly as possible."""
    count = max_distance + 1
    bands, start = [], 0
    for index in range(count):
        width = HASH_BITS // count + (1 if index < HASH_BITS % count else 0)
        bands.append((start, (1 << width) - 1))
        start += width
    return bands


class HammingIndex:
    """Stored hashes, searchable for all within ``max_distance`` bits (exact, via pigeonhole banding).

    ``max_distance`` must be in 0..31: beyond that the bands are one bit wide and every bucket holds about
    half the data, so the index would be no faster than comparing all pairs.
    """

    def __init__(self, max_distance: int) -> None:
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or not 0 <= max_distance <= 31:
            raise ValueError(f"max_distance must be an integer in 0..31, got {max_distance!r}")
        self.max_distance = max_distance
        self._bands = _band_masks(max_distance)
        self._buckets: list[defaultdict[int, list[int]]] = [defaultdict(list) for _ in self._bands]
        self._keys: list[Hashable] = []
        self._hashes: list[int] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable, value: int) -> None:
        """Store ``value`` under ``key`` (keys are returned by :meth:`near`; they need not be unique)."""
        slot = len(self._keys)
        self._keys.append(key)
        self._hashes.append(value)
        for (shift, mask), bucket in zip(self._bands, self._buckets):
            bucket[(value >> shift) & mask].append(slot)

    def near(self, value: int) -> Iterator[tuple[Hashable, int]]:
        """(key, distance) of every stored hash within ``max_distance`` of ``value``, in insertion order."""
        slots: set[int] = set()
        for (shift, mask), bucket in zip(self._bands, self._buckets):
            slots.update(bucket.get((value >> shift) & mask, ()))
        for slot in sorted(slots):
            distance = hamming(self._hashes[slot], value)
            if distance <= self.max_distance:
                yield self._keys[slot], distance
