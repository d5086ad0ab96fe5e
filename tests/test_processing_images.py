"""Image loading, grid choice, MSAC and the fast tiling path (bit-exact against a per-tile release-style path)."""

from __future__ import annotations

import io
import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from sailvl2.errors import ConfigError, ImageLoadError, InputError, TileBudgetError
from sailvl2.processing.images import (
    ImageProcessorConfig,
    candidate_grids,
    closest_grid,
    load_image,
    num_tiles_for_size,
    plan_tiles,
    preprocess_image,
    preprocess_images,
)

from .conftest import GOLDEN_CKPT, GOLDEN_IMAGES

CFG = ImageProcessorConfig()
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _release_style_tiles(image: Image.Image, grid: tuple[int, int], thumbnail: bool) -> list[Image.Image]:
    """What the release does (FACTS.md): resize whole image, crop row by row, thumbnail last."""
    cols, rows = grid
    resized = image.resize((448 * cols, 448 * rows), Image.Resampling.BICUBIC)
    tiles = [resized.crop(((k % cols) * 448, (k // cols) * 448, (k % cols + 1) * 448, (k // cols + 1) * 448))
             for k in range(cols * rows)]
    if thumbnail and len(tiles) > 1:
        tiles.append(image.resize((448, 448), Image.Resampling.BICUBIC))
    return tiles


def _release_style_normalize(tiles: list[Image.Image]) -> torch.Tensor:
    """Per tile ToTensor (x / 255, CHW) then Normalize ((x - mean) / std), stacked: the release's float math."""
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    out = []
    for tile in tiles:
        x = torch.from_numpy(np.array(tile)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        out.append(x.sub_(mean).div_(std))
    return torch.stack(out)


# --------------------------------------------------------------------------------------------- grid choice


@pytest.mark.parametrize(
    "size, grid",
    [((800, 600), (3, 2)), ((300, 1000), (1, 3)), ((1000, 250), (4, 1)), ((448, 448), (1, 1)), ((4000, 100), (10, 1))],
)
def test_grid_choice_hand_computed(size, grid):
    # 800/600 = 1.33: (3,2)=1.5 is the closest (diff 0.17) among grids with <= 10 tiles; 300/1000 = 0.3 -> 1/3.
    assert closest_grid(*size, candidate_grids(1, 10)) == grid


def test_grid_tie_rule_prefers_larger_grid_only_for_large_images():
    grids = candidate_grids(1, 2)  # (1,1), (1,2), (2,1)
    # 3:2 is exactly between 1:1 and 2:1 (diff 0.5 each). 600*400 = 240000 > 0.5*448^2*2 = 200704 -> (2, 1).
    assert closest_grid(600, 400, grids) == (2, 1)
    # 540*360 = 194400 < 200704 -> keep the first, (1, 1).
    assert closest_grid(540, 360, grids) == (1, 1)


def test_candidate_grids_sorted_by_tile_count():
    grids = candidate_grids(1, 10)
    assert len(grids) == 27 and grids[0] == (1, 1)
    assert all(a[0] * a[1] <= b[0] * b[1] for a, b in zip(grids, grids[1:]))
    assert candidate_grids(2, 4) == tuple(g for g in candidate_grids(1, 4) if g != (1, 1))
    assert closest_grid(800, 600, ()) == (1, 1)  # no candidates: the release's default


def test_plan_without_thumbnail_for_single_tile_and_config_switch():
    assert plan_tiles(448, 448, CFG).num_tiles == 1
    assert plan_tiles(800, 600, CFG).num_tiles == 7
    assert plan_tiles(800, 600, ImageProcessorConfig(use_thumbnail=False)).num_tiles == 6
    assert plan_tiles(800, 600, CFG, max_num=1).num_tiles == 1


# --------------------------------------------------------------------------------------------- MSAC


@pytest.mark.parametrize(
    "size, g2, total",
    [
        # g1 (3,2): grids dividing it in both axes are excluded; (2,2)=1.0 wins (diff 0.33; (3,3) ties but is
        # too big for the image). 6 + 4 + thumbnail.
        ((800, 600), (2, 2), 11),
        # g1 (1,1) (one tile, no thumbnail): (2,2) matches 1:1 exactly; output 4 tiles, then the single crop.
        ((448, 448), (2, 2), 5),
        # g1 (1,3): (1,4)=0.25 is the closest remaining grid to 0.3. 3 + 4 + thumbnail.
        ((300, 1000), (1, 4), 8),
    ],
)
def test_msac_hand_computed(size, g2, total):
    plan = plan_tiles(*size, CFG, use_msac=True)
    assert plan.num_tiles == total
    assert plan.pieces[-2] == (g2, 0, g2[0] * g2[1])


def test_msac_pixels_are_first_pass_then_second_pass_then_last():
    image = _random_image(800, 600, seed=3)
    msac = preprocess_image(image, CFG, use_msac=True)
    first = _release_style_normalize(_release_style_tiles(image, (3, 2), thumbnail=True))
    second = _release_style_normalize(_release_style_tiles(image, (2, 2), thumbnail=False))
    assert torch.equal(msac, torch.cat([first[:-1], second, first[-1:]]))
    single = preprocess_image(_random_image(448, 448, seed=4), CFG, use_msac=True)
    assert single.shape[0] == 5
    assert torch.equal(single[-1], preprocess_image(_random_image(448, 448, seed=4), CFG)[0])


def test_msac_without_thumbnail_moves_last_crop_to_the_end():
    config = ImageProcessorConfig(use_thumbnail=False, use_msac=True)
    image = _random_image(800, 600, seed=5)
    first = _release_style_normalize(_release_style_tiles(image, (3, 2), thumbnail=False))
    second = _release_style_normalize(_release_style_tiles(image, (2, 2), thumbnail=False))
    assert torch.equal(preprocess_image(image, config), torch.cat([first[:-1], second, first[-1:]]))


# --------------------------------------------------------------------------------------------- fast tiling


@pytest.mark.parametrize("size", [(800, 600), (300, 1000), (1000, 250), (448, 448), (37, 501), (1200, 1199)])
def test_fast_path_bit_identical_to_release_style_path(size):
    image = _random_image(*size, seed=size[0])
    grid = closest_grid(*size, candidate_grids(1, 10))
    expected = _release_style_normalize(_release_style_tiles(image, grid, thumbnail=True))
    got = preprocess_image(image, CFG)
    assert got.dtype == torch.float32 and got.is_contiguous()
    assert torch.equal(got, expected)


def test_num_tiles_helper_matches_tiles_produced():
    rng = np.random.default_rng(7)
    sizes = [(1, 1), (1, 900), (900, 1), (2000, 20), (448, 896), *(tuple(int(v) for v in rng.integers(16, 1600, 2)) for _ in range(8))]
    images = [_random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    for max_num, msac in [(10, False), (4, True), (6, False)]:
        pixels, counts = preprocess_images(images, CFG, max_num=max_num, use_msac=msac)
        assert counts == [num_tiles_for_size(w, h, CFG, max_num, msac) for w, h in sizes]
        assert pixels.shape == (sum(counts), 3, 448, 448)


def test_batch_equals_single_images_and_serial_equals_threaded():
    images = [_random_image(800, 600, 1), _random_image(300, 1000, 2), _random_image(448, 448, 3)]
    batched, counts = preprocess_images(images, CFG)
    assert counts == [7, 4, 1]
    assert torch.equal(batched, torch.cat([preprocess_image(img, CFG) for img in images]))
    serial, _ = preprocess_images(images, CFG, parallel=False)
    assert torch.equal(batched, serial)
    per_image, counts = preprocess_images(images, CFG, max_num=[1, 2, 1])
    assert counts == [1, 3, 1] and per_image.shape[0] == 5
    with pytest.raises(InputError, match="2 max_num values for 3 images"):
        preprocess_images(images, CFG, max_num=[1, 2])


def test_pixel_dtype_is_a_final_cast_and_empty_batch():
    image = _random_image(500, 400)
    assert torch.equal(preprocess_image(image, CFG, dtype=torch.bfloat16), preprocess_image(image, CFG).to(torch.bfloat16))
    pixels, counts = preprocess_images([], CFG)
    assert pixels.shape == (0, 3, 448, 448) and counts == []


def test_tile_budget_below_min_num():
    with pytest.raises(TileBudgetError, match="below min_num"):
        plan_tiles(800, 600, ImageProcessorConfig(min_num=2), max_num=1)


# --------------------------------------------------------------------------------------------- loading


def test_every_input_form_gives_the_same_pixels(tmp_path: pathlib.Path):
    reference = _random_image(61, 47, seed=11)
    array = np.asarray(reference)
    path = tmp_path / "image.png"
    reference.save(path)
    buffer = io.BytesIO()
    reference.save(buffer, format="PNG")
    import base64

    forms = [
        reference, str(path), path, path.read_bytes(), bytearray(path.read_bytes()), memoryview(buffer.getvalue()),
        "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
        array.copy(), array.astype(np.float32) / 255, np.moveaxis(array, -1, 0).copy(),
        torch.from_numpy(array.copy()).permute(2, 0, 1), torch.from_numpy(array.copy()),
        torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255, torch.from_numpy(array.astype(np.float64) / 255),
        np.dstack([array, np.full(array.shape[:2], 255, np.uint8)]),
    ]
    for form in forms:
        image = load_image(form)
        assert image.mode == "RGB" and image.size == (61, 47), type(form)
        assert np.array_equal(np.asarray(image), array), type(form)


def test_modes_converted_to_rgb_and_gray_arrays():
    gray = Image.fromarray(np.arange(64 * 32, dtype=np.uint32).reshape(32, 64).astype(np.uint8), "L")
    expected = np.asarray(gray.convert("RGB"))
    for form in (gray, np.asarray(gray), np.asarray(gray)[..., None], torch.from_numpy(np.asarray(gray).copy())[None]):
        assert np.array_equal(np.asarray(load_image(form)), expected)
    rgba = Image.new("RGBA", (10, 10), (10, 20, 30, 0))
    palette = _random_image(20, 20).convert("P")
    for image in (rgba, palette, Image.new("1", (5, 5)), Image.new("CMYK", (5, 5)), Image.new("LA", (5, 5))):
        assert load_image(image).mode == "RGB"
    assert load_image(rgba).getpixel((0, 0)) == (10, 20, 30)
    # Palette images are converted before resizing (evaluation code), so the resize is bicubic on RGB.
    assert np.array_equal(np.asarray(load_image(palette)), np.asarray(palette.convert("RGB")))


def test_load_errors_name_the_problem(tmp_path: pathlib.Path, monkeypatch):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageLoadError, match="nope.png"):
        load_image(missing)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        load_image(str(corrupt))
    with pytest.raises(ImageLoadError, match="bytes"):
        load_image(b"definitely not an image")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="URL"):
        load_image("https://example.com/cat.png")
    with pytest.raises(InputError, match="dict"):
        load_image({"image": "x.png"})
    with pytest.raises(InputError, match="int"):
        load_image(42)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image(np.full((4, 4, 3), 2.0, np.float32))
    with pytest.raises(InputError, match="channel"):
        load_image(np.zeros((5, 5, 7), np.uint8))
    with pytest.raises(InputError, match="dimensions"):
        load_image(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    # A decompression bomb (far above PIL's pixel limit) is a load error, not a crash.
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="big.png"):
        load_image(big)


# --------------------------------------------------------------------------------------------- config


def test_config_from_release_file_and_round_trip(tmp_path: pathlib.Path):
    config = ImageProcessorConfig.from_pretrained(GOLDEN_CKPT)
    assert (config.max_num, config.min_num, config.image_size, config.patch_size) == (10, 1, 448, 14)
    assert config.image_mean == MEAN and config.image_std == STD and config.use_msac is False
    original = json.loads((GOLDEN_CKPT / "preprocessor_config.json").read_text())
    assert config.to_dict() == original  # unknown keys (auto_map, pad_input) survive
    changed = ImageProcessorConfig(max_num=12, min_num=2, use_thumbnail=False)
    assert ImageProcessorConfig.from_dict(changed.to_dict()) == changed


def test_config_errors(tmp_path: pathlib.Path):
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        ImageProcessorConfig.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="min_num"):
        ImageProcessorConfig(min_num=5, max_num=2)
    with pytest.raises(ConfigError, match="patch_size"):
        ImageProcessorConfig(image_size=450)
    with pytest.raises(ConfigError, match="image_mean"):
        ImageProcessorConfig.from_dict({"image_mean": [0.5, 0.5]})


def test_golden_images_are_rgb_and_load_unchanged():
    for path in sorted(GOLDEN_IMAGES.glob("*.png")):
        with Image.open(path) as raw:
            assert np.array_equal(np.asarray(load_image(path)), np.asarray(raw.convert("RGB")))
