"""VLMEvalKit TSV reading/writing (hand-built files with PIL-made base64 PNGs, good and bad rows) and the
benchmark registry (published tile budgets from PAPER.md 2.3)."""

from __future__ import annotations

import base64
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from sailvl2.errors import ConfigError
from sailvl2.evaluation.datasets import BenchmarkItem, DatasetError, load_tsv, write_tsv
from sailvl2.evaluation.registry import BenchmarkKind, BenchmarkSpec, get_spec


def _png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _pixel(image: Image.Image) -> tuple[int, int, int]:
    return image.getpixel((0, 0))


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
HEADER = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category"]


def _good_and_bad_rows():
    red, green, blue = _b64(_png(RED)), _b64(_png(GREEN)), _b64(_png(BLUE))
    return [
        # good rows
        ["1", red, "What colour?", "Look closely.", "red", "green", "blue", "", "A", "colour", "perception"],
        ["2", json.dumps([green, blue]), "Which is blue?", "", "first", "second", "", "", "B", "multi", ""],
        ["3", str([blue, red]), "Python-list images", "nan", "x", "y", "", "", "A", "multi", ""],
        ["4", "1", "Same image as row 1?", "", "yes", "no", "", "", "A", "ref", ""],
        ["5", "", "Text only\twith a tab", "", "p", "q", "", "", "B", "text", ""],
        # bad rows
        ["6", _b64(b"definitely not an image"), "q", "", "a", "b", "", "", "A", "", ""],
        ["7", "@@@not base64@@@" * 10, "q", "", "a", "b", "", "", "A", "", ""],
        ["8", red, "q", "", "a", "b", "", "", "", "", ""],  # no answer
        ["9", red, "q", "", "a", "", "c", "", "A", "", ""],  # option gap A, C
        ["10", red, "q", "", "a", "b", "", "", "D", "", ""],  # answer not an option
        ["1", red, "duplicate", "", "a", "b", "", "", "A", "", ""],
        ["11", red, "too few fields"],
        ["12", "[not a list", "q", "", "a", "b", "", "", "A", "", ""],  # neither a list nor base64
    ]


def test_load_tsv_reads_good_rows_and_counts_bad_ones(tmp_path):
    path = _write(tmp_path / "MMBench_DEV_EN.tsv", HEADER, _good_and_bad_rows())
    loaded = load_tsv(path)
    assert loaded.name == "MMBench_DEV_EN"
    assert loaded.spec.kind is BenchmarkKind.MULTIPLE_CHOICE
    assert [item.index for item in loaded.items] == ["1", "2", "3", "4", "5"]
    assert loaded.skipped == {
        "undecodable_image": 3,
        "missing_answer": 1,
        "bad_options": 1,
        "answer_not_in_options": 1,
        "duplicate_index": 1,
        "malformed_row": 1,
    }
    assert sorted(loaded.skipped_indices["undecodable_image"]) == ["12", "6", "7"]
    assert loaded.skipped_indices["malformed_row"] == ["11"]
    assert "5 items loaded" in loaded.summary() and "1 missing_answer" in loaded.summary()

    first, second, third, fourth, fifth = loaded.items
    assert first.question == "What colour?" and first.hint == "Look closely."
    assert first.options == {"A": "red", "B": "green", "C": "blue"} and list(first.options) == ["A", "B", "C"]
    assert first.answer == "A" and first.category == "colour" and first.extra == {"l2-category": "perception"}
    assert [_pixel(img) for img in first.images] == [RED]
    assert first.images[0].size == (8, 6) and first.images[0].mode == "RGB"
    assert [_pixel(img) for img in second.images] == [GREEN, BLUE]
    assert [_pixel(img) for img in third.images] == [BLUE, RED]
    assert third.hint is None  # "nan" is pandas' missing value
    assert fourth.image_data == first.image_data  # image given as a reference to row 1
    assert fifth.images == [] and fifth.question == "Text only\twith a tab" and fifth.extra == {}


def test_image_path_column_and_missing_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png(GREEN))
    (tmp_path / "imgs" / "b.png").write_bytes(_png(BLUE))
    rows = [
        ["1", "", "imgs/a.png", "q1", "ans"],
        ["2", "", json.dumps(["imgs/a.png", "imgs/b.png"]), "q2", "ans"],
        ["3", "", "imgs/missing.png", "q3", "ans"],
        ["4", _b64(_png(RED)), "somewhere/else.png", "q4", "ans"],  # base64 wins over image_path
    ]
    loaded = load_tsv(_write(tmp_path / "DocVQA_VAL.tsv", ["index", "image", "image_path", "question", "answer"], rows))
    assert [item.index for item in loaded.items] == ["1", "2", "4"]
    assert loaded.skipped == {"missing_image_file": 1}
    assert [_pixel(img) for img in loaded.items[1].images] == [GREEN, BLUE]
    assert loaded.items[1].image_paths == ["imgs/a.png", "imgs/b.png"]
    assert [_pixel(img) for img in loaded.items[2].images] == [RED]
    assert loaded.spec.kind is BenchmarkKind.SHORT_ANSWER and loaded.spec.max_num == 18


def test_fields_longer_than_the_csv_default_limit(tmp_path):
    csv.field_size_limit(131072)  # csv's default; load_tsv must raise it itself
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    image = _b64(buffer.getvalue())
    assert len(image) > 131072
    loaded = load_tsv(_write(tmp_path / "x.tsv", ["index", "image", "question", "answer"], [["7", image, "q", "a"]]))
    assert np.array_equal(np.asarray(loaded.items[0].images[0]), noise)


def test_file_level_problems_raise(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_tsv(tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty"):
        load_tsv(tmp_path / "empty.tsv")
    with pytest.raises(DatasetError, match="question"):
        load_tsv(_write(tmp_path / "noq.tsv", ["index", "image", "answer"], [["1", "", "a"]]))
    no_answer = _write(tmp_path / "MMBench_TEST_EN.tsv", ["index", "question", "A", "B"], [["1", "q", "x", "y"]])
    with pytest.raises(DatasetError, match="require_answer=False"):
        load_tsv(no_answer)
    loaded = load_tsv(no_answer, require_answer=False)
    assert loaded.items[0].answer is None and loaded.items[0].options == {"A": "x", "B": "y"}


def test_validate_images_off_defers_decoding_errors(tmp_path):
    rows = [["1", _b64(b"not an image"), "q", "a"]]
    loaded = load_tsv(_write(tmp_path / "x.tsv", ["index", "image", "question", "answer"], rows), validate_images=False)
    assert len(loaded.items) == 1 and loaded.skipped == {}
    from sailvl2.errors import ImageLoadError

    with pytest.raises(ImageLoadError):
        loaded.items[0].images


def test_write_tsv_round_trip(tmp_path):
    items = [
        BenchmarkItem.from_images(
            1, 'Quote " tab\t and\nnewline', [Image.new("RGB", (5, 4), RED)], answer="B",
            options={"A": "一", "B": "二"}, hint="提示", category="cat", extra={"source": "synth"},
        ),
        BenchmarkItem.from_images(2, "two images", [Image.new("RGB", (3, 3), GREEN), Image.new("L", (2, 2), 200)],
                                  answer="12.5"),
        BenchmarkItem(index="3", question="no image", answer="yes"),
    ]
    path = write_tsv(items, tmp_path / "out" / "suite.tsv")
    assert sorted(p.name for p in path.parent.iterdir()) == ["suite.tsv"]  # no temp file left behind
    loaded = load_tsv(path)
    assert loaded.skipped == {}
    assert len(loaded.items) == 3
    for original, read in zip(items, loaded.items):
        assert read.index == original.index and read.question == original.question
        assert read.answer == original.answer and read.options == original.options
        assert read.hint == original.hint and read.category == original.category
        assert read.extra == original.extra and read.image_data == original.image_data
    assert [_pixel(img) for img in loaded.items[1].images] == [GREEN, (200, 200, 200)]
    assert loaded.items[0].images[0].size == (5, 4)


def test_write_tsv_rejects_extra_fields_that_clash(tmp_path):
    with pytest.raises(DatasetError, match="clash"):
        write_tsv([BenchmarkItem(index="1", question="q", extra={"A": "x"})], tmp_path / "x.tsv")


# ------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("name", "kind", "max_num"),
    [
        # Budgets from the issue / PAPER.md 2.3: 10 default; 12 ChartQA, MMMU, MME-RealWorld, VCR, OCRVQA;
        # 18 DocVQA, DUDE, MMLongBench-Doc, SlideVQA; 24 InfoVQA, OCRBench, HRBench.
        ("MMBench_DEV_EN_V11", "multiple_choice", 10),
        ("mmstar", "multiple_choice", 10),
        ("ChartQA_TEST", "short_answer", 12),
        ("MMMU_DEV_VAL", "multiple_choice", 12),
        ("MME-RealWorld-CN", "multiple_choice", 12),
        ("mme_realworld", "multiple_choice", 12),
        ("VCR_EN_EASY_500", "open_answer", 12),
        ("OCRVQA_TESTCORE", "short_answer", 12),
        ("DocVQA_VAL", "short_answer", 18),
        ("DUDE", "short_answer", 18),
        ("MMLongBench_DOC", "short_answer", 18),
        ("SLIDEVQA", "short_answer", 18),
        ("InfoVQA_TEST", "short_answer", 24),
        ("OCRBench", "short_answer", 24),
        ("HRBench8K", "multiple_choice", 24),
        ("MME", "yes_no", 10),
        ("HallusionBench", "yes_no", 10),
        ("MathVista_MINI", "open_answer", 10),
        ("RefCOCO+_testA", "grounding", 10),
        ("Video-MME", "video", 1),
        ("MMBench-Video", "video", 1),
    ],
)
def test_registry_kinds_and_tile_budgets(name, kind, max_num):
    spec = get_spec(name)
    assert spec.name == name and spec.kind.value == kind and spec.max_num == max_num
    assert spec.total_max_num == 64


def test_registry_details_and_unknown_names():
    assert get_spec("MMMU_DEV_VAL").upscale == 2.0 and get_spec("MMStar").upscale == 1.0
    assert get_spec("MMStar").use_msac is True and get_spec("TempCompass").use_msac is False
    assert get_spec("LongVideoBench").num_frames == 16
    assert get_spec("MMStar").max_new_tokens == 1024 and get_spec("MMStar").thinking_max_new_tokens == 4096
    assert get_spec("my_suite", columns=["index", "question", "A", "B", "answer"]).kind is BenchmarkKind.MULTIPLE_CHOICE
    assert get_spec("my_suite", columns=["index", "question", "answer"]).kind is BenchmarkKind.OPEN_ANSWER
    assert get_spec("my_suite").max_num == 10
    with pytest.raises(ConfigError):
        get_spec("")
    with pytest.raises(ConfigError, match="unknown kind"):
        BenchmarkSpec("x", "essay")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="total_max_num"):
        BenchmarkSpec("x", BenchmarkKind.OPEN_ANSWER, max_num=65)
    assert BenchmarkSpec("x", "yes_no").kind is BenchmarkKind.YES_NO  # type: ignore[arg-type]


def test_write_tsv_gives_normal_file_permissions(tmp_path):
    import os
    import stat

    from sailvl2.evaluation.datasets import BenchmarkItem, write_tsv

    path = write_tsv([BenchmarkItem(index="1", question="q", answer="a")], tmp_path / "out.tsv")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
