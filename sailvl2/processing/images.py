"""Image loading and the release's dynamic 448-px tiling, reproduced bit for bit but computed faster.

What the release does per image (FACTS.md, "Image preprocessing"): choose a tile grid from the aspect ratio,
resize the whole image to that grid with PIL BICUBIC, crop 448x448 tiles row by row, append a 448x448
thumbnail of the whole image when there is more than one tile, then per tile ``ToTensor`` (x / 255) and
``Normalize`` ((x - mean) / std) in float32.

What we do instead: the same two PIL resizes (they are the only step that decides pixel values, so they must
be PIL BICUBIC exactly), but run concurrently on a small thread pool (PIL releases the GIL while resampling),
then per resized image ONE vectorized uint8 -> float32 copy of its tiles (a [rows, S, cols, S, 3] view,
permuted) into a preallocated [tiles, 3, S, S] tensor and in-place ``div_(255)``, ``sub_(mean)``,
``div_(std)`` with float32 ``[1, 3, 1, 1]`` constants, while the chunk is still in cache. These are the same
float32 operations, element by element, as the release's per-tile ``ToTensor`` + ``Normalize``, so the
values are bit-identical (the golden pixels' sha256 matches).

The steps are small separate functions (grid choice -> :class:`TilePlan` -> resize+copy -> normalize) so a
later variable-grid (AnyRes) or video-frame path can reuse them with other plans.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, ImageLoadError, InputError, TileBudgetError

ImageInput = Union[Image.Image, str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, torch.Tensor]

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ImageInput", "ImageProcessorConfig", "TilePlan", "candidate_grids",
    "closest_grid", "image_size_of", "load_image", "num_tiles_for_size", "plan_tiles", "preprocess_image",
    "preprocess_images",
]

_CHANNELS = (1, 3, 4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


@dataclass
class ImageProcessorConfig:
    """Image settings, stored as the release's ``preprocessor_config.json``.

    File keys: ``max_dynamic_patch`` -> ``max_num`` (10 in the release; ``config.json`` says 12 but the
    official processor uses this file's value), ``image_size``, ``patch_size``, ``image_mean``,
    ``image_std``, ``use_msac``. ``min_num`` / ``use_thumbnail`` are not in the release file (1 and True
    there); they are written as ``min_dynamic_patch`` / ``use_thumbnail`` only when not the default.
    Unknown keys (``pad_input``, and ``auto_map``, which names the release's remote code and is never acted
    on here) are kept in ``extra`` for a faithful round trip.
    """

    image_size: int = 448
    patch_size: int = 14
    min_num: int = 1
    max_num: int = 10
    use_thumbnail: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    use_msac: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in self.image_std)  # type: ignore[assignment]
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError(f"image_mean/image_std need 3 values (std > 0), got {self.image_mean}/{self.image_std}")
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be a positive multiple of patch_size {self.patch_size}")
        if not 1 <= self.min_num <= self.max_num:
            raise ConfigError(f"need 1 <= min_num <= max_num, got min_num={self.min_num}, max_num={self.max_num}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageProcessorConfig":
        data = dict(data)
        keys = {"max_dynamic_patch": "max_num", "min_dynamic_patch": "min_num", "image_size": "image_size",
                "patch_size": "patch_size", "image_mean": "image_mean", "image_std": "image_std",
                "use_msac": "use_msac", "use_thumbnail": "use_thumbnail"}
        kwargs = {field_name: data.pop(key) for key, field_name in keys.items() if key in data}
        try:
            return cls(**kwargs, extra=data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid image processor config: {exc}") from exc

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ImageProcessorConfig":
        path = pathlib.Path(directory) / PREPROCESSOR_CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"missing {PREPROCESSOR_CONFIG_NAME} in {str(directory)!r}") from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {str(path)!r}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} must hold a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The release's key names and order, then non-default extras, then the kept unknown keys."""
        out: dict[str, Any] = {"max_dynamic_patch": self.max_num, "patch_size": self.patch_size,
                               "image_size": self.image_size, "use_msac": self.use_msac,
                               "image_mean": list(self.image_mean), "image_std": list(self.image_std)}
        if self.min_num != 1:
            out["min_dynamic_patch"] = self.min_num
        if not self.use_thumbnail:
            out["use_thumbnail"] = False
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


# --------------------------------------------------------------------------------------------- loading


def load_image(obj: Any) -> Image.Image:
    """Return ``obj`` as a decoded RGB PIL image.

    Accepts a PIL image, a file path (``str`` / ``os.PathLike``), encoded bytes, a ``data:image/...;base64,``
    URI, a numpy array (HWC or HW; uint8, or float in [0, 1]) or a torch tensor (CHW or HWC; uint8 or float
    in [0, 1]). The image is converted to RGB *before* any resizing: the release's processor resizes first,
    so palette ('P') images get NEAREST resampling there, while the evaluation code (and we) convert first
    (FACTS.md). Alpha is dropped (``convert("RGB")``), EXIF orientation is not applied (as in the release).
    """
    if isinstance(obj, Image.Image):
        return _to_rgb(obj, "the given PIL image")
    if isinstance(obj, (str, os.PathLike)):
        name = os.fsdecode(os.fspath(obj))
        if name.startswith("data:"):
            return _open(io.BytesIO(_decode_data_uri(name)), "the data URI")
        if name.startswith(("http://", "https://")):
            raise ImageLoadError(f"cannot load {name!r}: URLs are not fetched; download the image first")
        if not os.path.isfile(name):
            problem = "is a directory, not a file" if os.path.isdir(name) else "not found"
            raise ImageLoadError(f"image file {name!r} {problem}")
        return _open(name, f"image file {name!r}")
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _open(io.BytesIO(bytes(obj)), f"the given {len(obj)} bytes")
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        obj = (tensor.float() if tensor.is_floating_point() and tensor.dtype != torch.float64 else tensor).numpy()
        return _to_rgb(Image.fromarray(_array_to_hwc_uint8(obj, "torch tensor", channels_last=False)), "tensor")
    if isinstance(obj, np.ndarray):
        return _to_rgb(Image.fromarray(_array_to_hwc_uint8(obj, "numpy array", channels_last=True)), "array")
    raise InputError(
        f"cannot use an object of type {type(obj).__module__}.{type(obj).__qualname__} as an image; pass a "
        "PIL image, a path, bytes, a numpy array or a torch tensor"
    )


def image_size_of(obj: Any) -> tuple[int, int]:
    """(width, height) of an image input or a ``(width, height)`` tuple; files only have their header read."""
    if isinstance(obj, tuple) and len(obj) == 2 and all(isinstance(v, int) for v in obj):
        return obj
    if isinstance(obj, Image.Image):
        return obj.size
    if isinstance(obj, (str, os.PathLike)) and os.path.isfile(name := os.fsdecode(os.fspath(obj))):
        try:
            with Image.open(name) as img:
                return img.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"cannot read image file {name!r}: {exc}") from exc
    if isinstance(obj, (bytes, bytearray, memoryview)):  # encoded bytes (Parquet, WebDataset): header only
        try:
            with Image.open(io.BytesIO(bytes(obj))) as img:
                return img.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(f"cannot read the given {len(obj)} bytes as an image: {exc}") from exc
    return load_image(obj).size


def _to_rgb(img: Image.Image, what: str) -> Image.Image:
    try:
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode {what}: {exc}") from exc


def _open(source: str | io.BytesIO, what: str) -> Image.Image:
    # UnidentifiedImageError is an OSError; DecompressionBombError (far above PIL's pixel limit) is not.
    try:
        with Image.open(source) as img:
            return _to_rgb(img, what)
    except ImageLoadError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot decode {what} as an image: {exc}") from exc


def _decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageLoadError("only base64 data URIs ('data:image/...;base64,...') are supported")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ImageLoadError(f"cannot decode the base64 data URI: {exc}") from exc


def _array_to_hwc_uint8(array: np.ndarray, what: str, channels_last: bool) -> np.ndarray:
    """HWC/HW/CHW array -> contiguous HWC uint8 (3 channels, or 2-D gray), validating dtype and range."""
    if array.ndim == 3:
        last_ok, first_ok = array.shape[-1] in _CHANNELS, array.shape[0] in _CHANNELS
        # numpy images are conventionally HWC, torch images CHW; fall back to the other layout if needed.
        if (channels_last and not last_ok and first_ok) or (not channels_last and first_ok):
            array = np.moveaxis(array, 0, -1)
        elif not last_ok:
            raise InputError(f"{what} of shape {tuple(array.shape)} has no channel axis of size 1, 3 or 4")
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise InputError(f"{what} must have 2 (HW) or 3 (HWC/CHW) dimensions, got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {tuple(array.shape)})")
    if array.dtype == np.uint8:
        out = array
    elif np.issubdtype(array.dtype, np.floating):
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        if np.isnan(array).any() or lo < 0.0 or hi > 1.0:
            raise InputError(f"float {what} must hold values in [0, 1], got range [{lo}, {hi}]")
        # Round (not truncate) so uint8 -> x/255 -> uint8 returns the same pixels.
        out = np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        lo, hi = int(array.min()), int(array.max())
        if lo < 0 or hi > 255:
            raise InputError(f"integer {what} must hold values in [0, 255], got range [{lo}, {hi}]")
        out = array.astype(np.uint8)
    else:
        raise InputError(f"{what} has unsupported dtype {array.dtype}; use uint8 or float in [0, 1]")
    if out.ndim == 3 and out.shape[-1] == 4:
        out = out[..., :3]  # same as PIL's RGBA -> RGB conversion: alpha dropped, not composited
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------- tiling plan


@functools.lru_cache(maxsize=64)
def candidate_grids(min_num: int, max_num: int) -> tuple[tuple[int, int], ...]:
    """All (cols, rows) with min_num <= cols*rows <= max_num, sorted by tile count, as the release lists them.

    Grids with the same tile count keep the release's order, which is CPython's iteration order of the
    *set* of tuples the release builds (deterministic for small int tuples). It matters on exact ties.
    """
    grids = {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_num <= i * j <= max_num}
    return tuple(sorted(grids, key=lambda g: g[0] * g[1]))


def closest_grid(width: int, height: int, grids: Sequence[tuple[int, int]], image_size: int = 448) -> tuple[int, int]:
    """Grid whose cols/rows ratio is closest to width/height (the release's ``find_closest_aspect_ratio``).

    Exact tie: a later (larger) grid wins only if the image area exceeds half the grid's pixel area,
    ``width*height > 0.5 * image_size**2 * cols*rows``. No candidates -> (1, 1), the release's default.
    """
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


@dataclass(frozen=True)
class TilePlan:
    """Which tiles an image becomes, in output order, as (grid, first_tile, stop_tile) pieces.

    A grid ``(cols, rows)`` means "the whole image resized to (cols * 448, rows * 448)"; its tiles are
    numbered row by row, left to right. The thumbnail is the grid ``(1, 1)``.
    """

    pieces: tuple[tuple[tuple[int, int], int, int], ...]

    @property
    def num_tiles(self) -> int:
        return sum(stop - start for _, start, stop in self.pieces)

    @property
    def grids(self) -> tuple[tuple[int, int], ...]:
        """The distinct resize targets, each resized once (the 1x1 grid and the thumbnail are the same)."""
        return tuple(dict.fromkeys(grid for grid, _, _ in self.pieces))


def plan_tiles(
    width: int,
    height: int,
    config: ImageProcessorConfig,
    max_num: int | None = None,
    use_msac: bool | None = None,
) -> TilePlan:
    """Tile plan of a ``width`` x ``height`` image, following the release's ``dynamic_preprocess`` (and MSAC).

    Normal: grid g1 tiles, then the thumbnail when g1 has more than one tile. MSAC (FACTS.md): the normal
    list L1, then a second grid g2 (no thumbnail) picked only among grids that do not divide g1 in both
    axes; output L1[:-1] + L2 + L1[-1:].
    """
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive, got {width}x{height}")
    max_num = config.max_num if max_num is None else int(max_num)
    use_msac = config.use_msac if use_msac is None else bool(use_msac)
    if max_num < config.min_num:
        raise TileBudgetError(f"tile budget max_num={max_num} is below min_num={config.min_num}")
    grids = candidate_grids(config.min_num, max_num)
    g1 = closest_grid(width, height, grids, config.image_size)
    n1 = g1[0] * g1[1]
    pieces: list[tuple[tuple[int, int], int, int]] = [(g1, 0, n1)]
    if n1 > 1 and config.use_thumbnail:
        pieces.append(((1, 1), 0, 1))
    if use_msac:
        others = [g for g in grids if g1[0] % g[0] != 0 or g1[1] % g[1] != 0]
        g2 = closest_grid(width, height, others, config.image_size)
        if len(pieces) == 2:  # L1 ends with the thumbnail
            last = pieces.pop()
        else:  # L1 ends with g1's last tile
            last = (g1, n1 - 1, n1)
            pieces = [(g1, 0, n1 - 1)] if n1 > 1 else []
        pieces += [(g2, 0, g2[0] * g2[1]), last]
    return TilePlan(tuple(pieces))


def num_tiles_for_size(
    width: int, height: int, config: ImageProcessorConfig, max_num: int | None = None, use_msac: bool | None = None
) -> int:
    """Number of 448-px tiles (thumbnail included) an image of this size becomes, without resizing anything."""
    return plan_tiles(width, height, config, max_num, use_msac).num_tiles


# --------------------------------------------------------------------------------------------- pixels


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_WORKERS = min(8, os.cpu_count() or 2)


def _forget_pool_after_fork() -> None:
    # A forked child (e.g. a DataLoader worker) inherits the pool object but not its threads: start afresh.
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _pool() -> ThreadPoolExecutor:
    """Process-wide worker pool for PIL resizes (created on first use; PIL releases the GIL while resampling)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_POOL_WORKERS, thread_name_prefix="sailvl2-img")
        return _POOL


def _resize_into(
    image: Image.Image,
    grid: tuple[int, int],
    jobs: list[tuple[int, int, int]],
    out: torch.Tensor,
    norm: tuple[np.ndarray, np.ndarray],
) -> None:
    """Resize ``image`` to ``grid`` once (PIL BICUBIC, as the release), copy tile ranges into ``out`` and
    normalize them in place while they are still in cache.

    ``jobs`` holds (first_tile, stop_tile, out_index). The uint8 HWC array is viewed as
    [rows, S, cols, S, 3] and permuted to [rows, cols, 3, S, S]; ``copy_`` converts to float32.
    """
    cols, rows = grid
    size = out.shape[-1]
    target = (cols * size, rows * size)
    resized = image if image.size == target else image.resize(target, Image.Resampling.BICUBIC)
    # numpy, not torch, for the copy and the normalisation: this runs on pool threads, and torch would start
    # an intra-op thread team per calling thread, oversubscribing the cores (measured: 21 ms -> 15 ms per
    # image on 2 cores). numpy's float32 ufuncs round exactly like torch's, so the values are identical.
    array = np.asarray(resized, dtype=np.uint8)
    tiles = array.reshape(rows, size, cols, size, 3).transpose(0, 2, 4, 1, 3)
    out_array = out.numpy()
    for start, stop, dst in jobs:
        tile = start
        while tile < stop:  # one strided copy per grid row (a row's tiles are not one view of the rows)
            row, col = divmod(tile, cols)
            take = min(stop - tile, cols - col)
            chunk = out_array[dst + tile - start : dst + tile - start + take]
            np.copyto(chunk, tiles[row, col : col + take], casting="unsafe")
            _normalize_(chunk, *norm)
            tile += take


def _norm_constants(config: ImageProcessorConfig) -> tuple[np.ndarray, np.ndarray]:
    """float32 [1, 3, 1, 1] mean and std: the same float32 values torchvision's Normalize builds."""
    mean = np.asarray(config.image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
    return mean, np.asarray(config.image_std, dtype=np.float32).reshape(1, 3, 1, 1)


def _normalize_(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """In place: x / 255, then (x - mean) / std in float32, the exact op sequence of ToTensor + Normalize,
    so every element gets bit-identical values however the tiles are chunked."""
    np.divide(pixels, np.float32(255), out=pixels)
    np.subtract(pixels, mean, out=pixels)
    np.divide(pixels, std, out=pixels)
    return pixels


def preprocess_images(
    images: Sequence[Any],
    config: ImageProcessorConfig,
    max_num: int | Sequence[int] | None = None,
    use_msac: bool | None = None,
    dtype: torch.dtype = torch.float32,
    parallel: bool = True,
) -> tuple[torch.Tensor, list[int]]:
    """Tile and normalize several images at once.

    Returns ``(pixel_values [total_tiles, 3, S, S], tiles_per_image)``; tiles are concatenated in image
    order. ``max_num`` is one budget for all images or one per image. Loading and every distinct resize run
    on a shared pool of min(8, CPUs) threads plus the calling thread, largest first (``parallel=False``: all
    inline); each resize's tiles go straight into one preallocated float32 tensor and are normalized there.
    ``dtype`` other than float32 is a final cast (the release casts its float32 result to bf16 the same way).
    """
    if not images:
        return torch.empty(0, 3, config.image_size, config.image_size, dtype=dtype), []
    budgets = [max_num] * len(images) if max_num is None or isinstance(max_num, int) else list(max_num)
    if len(budgets) != len(images):
        raise InputError(f"got {len(budgets)} max_num values for {len(images)} images")
    loaded = list(_pool().map(load_image, images)) if parallel and len(images) > 1 else [load_image(i) for i in images]
    plans = [plan_tiles(*img.size, config, budget, use_msac) for img, budget in zip(loaded, budgets)]
    counts = [plan.num_tiles for plan in plans]
    size = config.image_size
    out = torch.empty(sum(counts), 3, size, size, dtype=torch.float32)
    norm = _norm_constants(config)

    work: list[tuple[Image.Image, tuple[int, int], list[tuple[int, int, int]]]] = []
    offset = 0
    for img, plan in zip(loaded, plans):
        per_grid: dict[tuple[int, int], list[tuple[int, int, int]]] = {grid: [] for grid in plan.grids}
        for grid, start, stop in plan.pieces:
            per_grid[grid].append((start, stop, offset))
            offset += stop - start
        work += [(img, grid, jobs) for grid, jobs in per_grid.items()]
    # Every thread (the caller too) takes the largest remaining resize, so no one waits on a big one at the end.
    work.sort(key=lambda item: item[1][0] * item[1][1])
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                if not work:
                    return
                job = work.pop()
            _resize_into(*job, out, norm)

    helpers = [_pool().submit(drain) for _ in range(min(_POOL_WORKERS, len(work) - 1))] if parallel else []
    drain()
    for helper in helpers:
        helper.result()
    return (out if dtype == torch.float32 else out.to(dtype)), counts


def preprocess_image(
    image: Any,
    config: ImageProcessorConfig,
    max_num: int | None = None,
    use_msac: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Tiles of one image, [num_tiles, 3, S, S]; the grid resize and the thumbnail resize run concurrently."""
    pixels, _ = preprocess_images([image], config, max_num, use_msac, dtype)
    return pixels
