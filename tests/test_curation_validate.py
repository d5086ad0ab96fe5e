"""The validate stage, one planted problem per rule, and its helpers (repetition, language, image loader).

Every expected reason is written out by hand from the rule; sizes, pixel counts and ratios are worked out
from how the test file was made, not read back from the code.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sailvl2.curation.language import detect_language
from sailvl2.curation.stages import get_stage
from sailvl2.curation.stages.validate import check_image, record_text, repetition_ratio
from sailvl2.curation.types import CurationError, Item

CAPTION = "A small red car is parked next to the old house in the village."


def _noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _save(image: Image.Image, path: Path, fmt: str = "PNG", **kwargs) -> Path:
    image.save(path, fmt, **kwargs)
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header declares ``width`` x ``height`` but that holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _item(root: Path, image: str | list[str] | None, text: str = CAPTION, item_id: str = "x") -> Item:
    record = {"id": item_id, "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                               {"from": "gpt", "value": text}]}
    if image is not None:
        record["image"] = image
    return Item(item_id, record, str(root))


def _decide(root: Path, image, text: str = CAPTION, **settings):
    stage = get_stage("validate", settings)
    item = _item(root, image, text)
    [decision] = stage.process([item])
    return decision, item


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _save(_noise(120, 80), tmp_path / "good.png")
    return tmp_path


# --------------------------------------------------------------------------------------------- images


def test_good_record_is_kept_with_scores_and_features(root: Path) -> None:
    decision, item = _decide(root, "good.png")
    assert decision.kept and decision.reason is None and decision.stage == "validate"
    assert (decision.scores["width"], decision.scores["height"]) == (120.0, 80.0)
    assert decision.scores["repetition"] == 0.0
    assert item.features["image_sizes"] == [[120, 80]]
    assert len(item.features["image_sha256"][0]) == 64 and len(item.features["phash"][0]) == 2


def test_zero_byte_corrupt_and_missing_images(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    (root / "junk.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert _decide(root, "empty.png")[0].reason == "image: zero bytes"
    assert _decide(root, "junk.jpg")[0].reason == "image: undecodable"
    assert _decide(root, "nowhere.png")[0].reason == f"image: missing file ({root / 'nowhere.png'})"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_images(root: Path, fmt: str) -> None:
    buffer = io.BytesIO()
    _noise(200, 150, seed=2).save(buffer, fmt)
    data = buffer.getvalue()
    (root / "cut").write_bytes(data[: len(data) * 6 // 10])
    assert _decide(root, "cut")[0].reason == "image: truncated"


def test_bomb_header_beyond_pil_limit_is_dropped_without_decoding(root: Path) -> None:
    (root / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    assert _decide(root, "bomb.png")[0].reason == "image: bomb (10000000000 pixels)"


def test_large_blank_png_with_low_pixel_limit(root: Path) -> None:
    global_limit = Image.MAX_IMAGE_PIXELS
    _save(Image.new("L", (2000, 1500)), root / "blank.png")  # a few KB on disk, 3 MP once decoded
    assert (root / "blank.png").stat().st_size < 20_000
    assert _decide(root, "blank.png", max_pixels=1_000_000)[0].reason == "image: bomb (3000000 pixels)"
    assert _decide(root, "blank.png")[0].kept  # within the default limit
    assert Image.MAX_IMAGE_PIXELS == global_limit  # the global limit is left alone


def test_size_rules(root: Path) -> None:
    _save(_noise(20, 100), root / "thin.png")
    _save(_noise(40, 1000), root / "tall.png")
    _save(_noise(400, 300), root / "big.png")
    assert _decide(root, "thin.png")[0].reason == "image: too small (20x100, min side 32)"
    assert _decide(root, "tall.png")[0].reason == "image: aspect ratio (25.0 > 20)"
    assert _decide(root, "tall.png", max_aspect=30)[0].kept
    assert _decide(root, "big.png", max_side=256)[0].reason == "image: too large (400x300, max side 256)"
    (root / "bytes.png").write_bytes((root / "big.png").read_bytes())
    size = (root / "bytes.png").stat().st_size
    assert _decide(root, "bytes.png", max_bytes=1000)[0].reason == f"image: file too large ({size} bytes > 1000)"


def test_exif_orientation_swaps_the_checked_size(root: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a stored 200x60 picture is shown 60 wide, 200 tall
    _save(_noise(200, 60, seed=3), root / "rotated.jpg", "JPEG", exif=exif.tobytes())
    decision, item = _decide(root, "rotated.jpg")
    assert (decision.scores["width"], decision.scores["height"]) == (60.0, 200.0)
    assert item.features["image_sizes"] == [[60, 200]]
    assert _decide(root, "rotated.jpg", max_side=100)[0].reason == "image: too large (60x200, max side 100)"


def test_colour_mode_rule(root: Path) -> None:
    _save(_noise(64, 64, mode="CMYK"), root / "print.jpg", "JPEG")
    assert _decide(root, "print.jpg")[0].reason == "image: colour mode CMYK not allowed"
    assert _decide(root, "print.jpg", modes=["RGB", "CMYK"])[0].kept
    assert _decide(root, "print.jpg", modes=None)[0].kept


def test_second_image_problem_is_located(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    assert _decide(root, ["good.png", "empty.png"])[0].reason == "image: zero bytes (image 2 of 2)"


def test_hostile_batch_never_raises_and_keeps_order(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    (root / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))
    (root / "half.png").write_bytes(_png_claiming(300, 300))  # header fine, pixel data missing
    (root / "noise.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 100)  # PNG signature, garbage after
    names = ["good.png", "empty.png", "bomb.png", "half.png", "noise.bin", "good.png"]
    items = [_item(root, name, item_id=f"i{k}") for k, name in enumerate(names)]
    decisions = get_stage("validate").process(items)
    assert [d.id for d in decisions] == [f"i{k}" for k in range(len(names))]
    assert [d.reason for d in decisions] == [
        None, "image: zero bytes", "image: bomb (2500000000 pixels)", "image: truncated", "image: undecodable",
        None]


def test_check_image_reports_instead_of_raising(root: Path) -> None:
    assert check_image(str(root / "good.png")).image.size == (120, 80)
    assert check_image(str(root)).problem.startswith("unreadable")  # a directory
    assert check_image(str(root / "good.png"), max_pixels=100).problem == "bomb (9600 pixels)"


# --------------------------------------------------------------------------------------------- text


def test_text_length_rules(root: Path) -> None:
    assert _decide(root, "good.png", "Hi", min_text_chars=5, text_from="gpt")[0].reason == \
        "text: too short (2 chars < 5)"
    assert _decide(root, "good.png", "x" * 50, max_text_chars=40, text_from="gpt")[0].reason == \
        "text: too long (50 chars > 40)"
    # text_from: all (the default) joins the turns: "Describe the image." (19) + newline + "Hi" = 22 chars
    assert _decide(root, None, "Hi", min_text_chars=25)[0].reason == "text: too short (22 chars < 25)"
    assert _decide(root, None, "Hi", min_text_chars=22)[0].kept


def test_repetition_ratio_by_hand() -> None:
    assert repetition_ratio("the cat sat on the mat") == 0.0
    assert repetition_ratio("a b c a b c") == pytest.approx(1 / 4)       # abc bca cab abc
    assert repetition_ratio("the cat the cat the cat the cat the cat", 2) == pytest.approx(7 / 9)
    assert repetition_ratio("猫猫猫猫猫", 1) == pytest.approx(4 / 5)        # one token per Han character
    assert repetition_ratio("one two") == 0.0                              # too short to have two trigrams


def test_repetitive_text_is_dropped(root: Path) -> None:
    loop = "The cat sits on the mat. " * 6  # 36 words -> 34 trigrams, 6 distinct -> 28/34 repeat
    decision = _decide(root, "good.png", loop, text_from="gpt")[0]
    assert decision.reason == "text: repetitive (0.82 of word 3-grams repeat)"
    assert decision.scores["repetition"] == pytest.approx(28 / 34, abs=1e-4)


def test_language_rule(root: Path) -> None:
    chinese = "一只红色的小汽车停在村子里的老房子旁边。"
    assert _decide(root, "good.png", chinese, languages=["en"], text_from="gpt")[0].reason == \
        "text: language zh not allowed"
    assert _decide(root, "good.png", chinese, languages=["en", "zh"], text_from="gpt")[0].kept
    assert _decide(root, "good.png", CAPTION, languages="en", text_from="gpt")[0].kept
    nouns = "Cat, dog, bicycle."  # no stopword: undetermined
    assert _decide(root, "good.png", nouns, languages=["en"], text_from="gpt")[0].kept
    assert _decide(root, "good.png", nouns, languages=["en"], text_from="gpt", keep_undetermined=False)[0].reason \
        == "text: language und not allowed"


@pytest.mark.parametrize("text, language", [
    ("A red car is parked next to the old house.", "en"),
    ("一只猫坐在桌子上，旁边有一个杯子。", "zh"),
    ("猫がテーブルの上に座っています。", "ja"),
    ("고양이가 탁자 위에 앉아 있다.", "ko"),
    ("Кошка сидит на столе рядом с чашкой.", "ru"),
    ("Le chat est assis sur la table avec une tasse.", "fr"),
    ("Die Katze sitzt auf dem Tisch und schläft.", "de"),
    ("El gato está sentado en la mesa con los niños.", "es"),
    ("Il gatto è seduto sul tavolo con la sua amica.", "it"),
    ("O gato está sentado na mesa com as crianças e não dorme.", "pt"),
    ("De kat zit op de tafel en het is niet koud.", "nl"),
    ("Kucing itu duduk di atas meja dengan sebuah bola.", "id"),
    ("Con mèo của tôi đang ngồi trên bàn và ngủ.", "vi"),
    ("القطة تجلس على الطاولة", "ar"),
    ("这张图片里有一只猫 and a small dog", "zh"),
    ("12345 !!!", "und"),
])
def test_language_detector_on_hand_labelled_sentences(text: str, language: str) -> None:
    guess = detect_language(text)
    assert guess.language == language
    assert 0.0 <= guess.confidence <= 1.0 and (guess.confidence > 0) == (language != "und")


def test_record_text_selects_turns() -> None:
    record = {"conversations": [{"role": "user", "content": "<image>\nWhat is it?"},
                                {"from": "gpt", "value": "A cat."}]}
    assert record_text(record, "all") == "What is it?\nA cat."
    assert record_text(record, "human") == "What is it?"
    assert record_text(record, "gpt") == "A cat."


def test_bad_settings_raise_curation_error() -> None:
    with pytest.raises(CurationError, match="max_aspect"):
        get_stage("validate", {"max_aspect": 0.5})
    with pytest.raises(CurationError, match="unknown language"):
        get_stage("validate", {"languages": ["english"]})
    with pytest.raises(CurationError, match="min_sides"):
        get_stage("validate", {"min_sides": 3})
