"""Dedup stages and their hashing helpers, measured on generated data with planted duplicates.

Truth comes from how the data was made: each planted duplicate is recorded as an (original, copy) pair and
the similar-but-different negatives are recorded as non-pairs. A found pair is (kept id, dropped id) from the
stage's decisions; precision and recall are computed over unordered pairs.
"""

from __future__ import annotations

import io
import random
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sailvl2.curation.minhash import LSHIndex, MinHasher, choose_bands, jaccard, shingles
from sailvl2.curation.phash import HammingIndex, _dct_matrix, hamming, phash
from sailvl2.curation.stages import get_stage
from sailvl2.curation.types import CurationError, Item

# --------------------------------------------------------------------------------------------- image data


def _layout(rng: random.Random) -> tuple:
    width, height = rng.randint(120, 260), rng.randint(120, 260)
    shapes = []
    for _ in range(rng.randint(3, 8)):
        x0, y0 = rng.uniform(-0.1, 0.9), rng.uniform(-0.1, 0.9)
        box = (x0, y0, x0 + rng.uniform(0.1, 0.6), y0 + rng.uniform(0.1, 0.6))
        points = [(rng.random(), rng.random()) for _ in range(rng.randint(3, 6))]
        word = "".join(rng.choice("ABCDEFGHKLMNPRSTUVWXYZ") for _ in range(rng.randint(2, 6)))
        shapes.append((rng.choice(["ellipse", "rect", "poly", "line", "text"]), box, points, word))
    return width, height, shapes, rng.uniform(0, 2 * np.pi)


def _paint(layout: tuple, rng: random.Random) -> Image.Image:
    """The layout drawn with fresh random colours over a random linear gradient."""
    width, height, shapes, angle = layout
    c0, c1 = (np.array([rng.randint(0, 255) for _ in range(3)], float) for _ in range(2))
    yy, xx = np.mgrid[0:height, 0:width]
    t = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    t = ((t - t.min()) / (np.ptp(t) + 1e-9))[..., None]
    image = Image.fromarray((c0 * (1 - t) + c1 * t).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for kind, (x0, y0, x1, y1), points, word in shapes:
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        box = (x0 * width, y0 * height, x1 * width, y1 * height)
        if kind == "ellipse":
            draw.ellipse(box, fill=colour)
        elif kind == "rect":
            draw.rectangle(box, fill=colour)
        elif kind == "poly":
            draw.polygon([(px * width, py * height) for px, py in points], fill=colour)
        elif kind == "line":
            draw.line(box, fill=colour, width=5)
        else:
            draw.text(box[:2], word, fill=colour, font_size=max(10, height // 7))
    return image


def _variant(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(60, 90))
        return Image.open(io.BytesIO(buffer.getvalue()))
    if kind == "resize":
        scale = rng.uniform(0.5, 1.5)
        return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    assert kind == "crop"
    w, h = image.size
    left, top, right, bottom = (rng.uniform(0.02, 0.05) for _ in range(4))
    return image.crop((round(left * w), round(top * h), round(w - right * w), round(h - bottom * h)))


def _item(root: Path, item_id: str, image: str | None, text: str) -> Item:
    record = {"id": item_id, "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                               {"from": "gpt", "value": text}]}
    if image is not None:
        record["image"] = image
    return Item(item_id, record, str(root))


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[list[Item], set[frozenset[str]], dict[str, str]]:
    """200 distinct pictures; 160 get one planted copy (40 each exact / JPEG / resize / crop), 40 get a
    same-layout-other-colours negative. Returns shuffled items, the true pairs, and each copy's kind."""
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    entries, truth, kinds = [], set(), {}
    for k in range(200):
        layout = _layout(rng)
        original = _paint(layout, rng)
        original.save(root / f"o{k}.png")
        entries.append((f"o{k}", f"o{k}.png", f"Picture {k}."))
        kind = ("exact", "jpeg", "resize", "crop", "similar")[k % 5]
        if kind == "exact":
            (root / f"c{k}.png").write_bytes((root / f"o{k}.png").read_bytes())
        elif kind == "similar":
            _paint(layout, rng).save(root / f"c{k}.png")
        else:
            _variant(original, kind, rng).save(root / f"c{k}.png")
        entries.append((f"c{k}", f"c{k}.png", f"Picture {k}." if kind == "exact" else f"Copy {k}."))
        if kind != "similar":
            truth.add(frozenset((f"o{k}", f"c{k}")))
            kinds[f"c{k}"] = kind
    rng.shuffle(entries)
    return [_item(root, *entry) for entry in entries], truth, kinds


def _found_pairs(decisions) -> set[frozenset[str]]:
    pairs = set()
    for decision in decisions:
        if not decision.kept:
            match = re.fullmatch(r"duplicate: of (\S+)( \(.*\))?", decision.reason)
            assert match, decision.reason
            pairs.add(frozenset((match.group(1), decision.id)))
    return pairs


def _precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(1, len(found)), hits / len(truth)


def test_image_dedup_precision_recall(image_set) -> None:
    items, truth, kinds = image_set
    decisions = list(get_stage("image_dedup").process_all(items))
    assert [d.id for d in decisions] == [item.id for item in items]
    found = _found_pairs(decisions)
    precision, recall = _precision_recall(found, truth)
    print(f"image_dedup: {len(found)} pairs found, {len(truth)} planted, precision {precision:.3f}, "
          f"recall {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95
    for kind in ("exact", "jpeg", "resize", "crop"):  # every planted kind is found, not just on average
        planted = {pair for pair in truth if any(kinds.get(i) == kind for i in pair)}
        assert len(found & planted) >= 0.9 * len(planted), kind
    # the earlier item of each found pair is the one kept
    position = {item.id: n for n, item in enumerate(items)}
    dropped = {d.id for d in decisions if not d.kept}
    assert all(min(pair, key=position.get) not in dropped for pair in found)


def test_crop_tolerance_is_what_finds_crops(image_set) -> None:
    items, truth, kinds = image_set
    found = _found_pairs(get_stage("image_dedup", {"crop_tolerant": False}).process_all(items))
    crops = {pair for pair in truth if any(kinds.get(i) == "crop" for i in pair)}
    resized = {pair for pair in truth if any(kinds.get(i) == "resize" for i in pair)}
    assert len(found & resized) == len(resized)
    assert len(found & crops) < 0.9 * len(crops)  # a whole-image hash alone misses many 2-5% crops


def test_exact_dedup_finds_exact_copies_only(image_set) -> None:
    items, truth, kinds = image_set
    found = _found_pairs(get_stage("exact_dedup").process_all(items))
    exact = {pair for pair in truth if any(kinds.get(i) == "exact" for i in pair)}
    assert found == exact


def test_exact_dedup_text_matters(tmp_path: Path) -> None:
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "a.png")
    items = [_item(tmp_path, "1", "a.png", "What is 2+2?"), _item(tmp_path, "2", "a.png", "What is 2-2?"),
             _item(tmp_path, "3", "a.png", "What  is 2+2? "), _item(tmp_path, "4", None, "What is 2+2?")]
    reasons = [d.reason for d in get_stage("exact_dedup").process_all(items)]
    assert reasons == [None, None, "duplicate: of 1", None]
    reasons = [d.reason for d in get_stage("exact_dedup", {"text_from": "none"}).process_all(items)]
    assert reasons == [None, "duplicate: of 1", "duplicate: of 1", None]


def test_image_dedup_match_text_keeps_other_questions(tmp_path: Path) -> None:
    _paint(_layout(random.Random(5)), random.Random(6)).save(tmp_path / "a.png")
    items = [_item(tmp_path, "q1", "a.png", "Red."), _item(tmp_path, "q2", "a.png", "Blue.")]
    items[1].record["conversations"][0]["value"] = "<image>\nWhat colour is the car?"
    assert [d.kept for d in get_stage("image_dedup").process_all(items)] == [True, False]
    assert [d.kept for d in get_stage("image_dedup", {"match_text": "human"}).process_all(items)] == [True, True]


# --------------------------------------------------------------------------------------------- text data

_ADJ = ("red blue green small large old young wooden shiny striped fluffy tall narrow bright dark quiet busy "
        "empty crowded rusty golden pale curly smooth").split()
_NOUN = ("cat dog car bicycle tree house boat man woman child bird horse table lamp chair bridge train bus kite "
         "flower clock umbrella window mountain river").split()
_TEMPLATES = [
    "A {a} {n} {v} near a {a} {n} in the {p}.", "There is a {a} {n} and a {a} {n} beside the {n}.",
    "The {n} looks {a} while the {n} {v} in the {p}.", "In the background, a {a} {n} {v} under a {a} {n}.",
    "Two {a} {n}s and one {n} appear in a {a} {p}.", "The photo shows a {a} {p} with a {n} and a {a} {n}.",
]
_SLOTS = {"a": _ADJ, "n": _NOUN, "v": "sits stands rests waits lies leans sleeps plays".split(),
          "p": "park street kitchen beach garden forest station market field harbor office village".split()}


def _fill(templates: list[str], rng: random.Random) -> str:
    return " ".join(re.sub(r"\{(\w)\}", lambda m: rng.choice(_SLOTS[m.group(1)]), t) for t in templates)


def _near_duplicate(text: str, rng: random.Random) -> str:
    """1-3 words replaced, then maybe some words upper-cased, punctuation changed, everything lower-cased."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        words[rng.randrange(len(words))] = rng.choice(_ADJ + _NOUN)
    if rng.random() < 0.5:
        words = [w.upper() if rng.random() < 0.2 else w for w in words]
    out = " ".join(words)
    if rng.random() < 0.5:
        out = out.replace(".", "!").replace(",", "")
    return out.lower() if rng.random() < 0.5 else out


@pytest.fixture(scope="module")
def text_set() -> tuple[list[Item], set[frozenset[str]]]:
    """300 distinct captions (2-4 templated sentences); 150 get a near-duplicate, 100 get a negative that
    reuses the same sentence templates with fresh words."""
    rng = random.Random(1)
    entries, truth = [], set()
    for k in range(300):
        templates = rng.sample(_TEMPLATES, rng.randint(2, 4))
        text = _fill(templates, rng)
        entries.append((f"t{k}", text))
        if k < 150:
            entries.append((f"d{k}", _near_duplicate(text, rng)))
            truth.add(frozenset((f"t{k}", f"d{k}")))
        elif k < 250:
            entries.append((f"s{k}", _fill(templates, rng)))
    rng.shuffle(entries)
    return [_item(Path("."), item_id, None, text) for item_id, text in entries], truth


def test_text_dedup_precision_recall(text_set) -> None:
    items, truth = text_set
    decisions = list(get_stage("text_dedup", {"text_from": "gpt"}).process_all(items))
    assert [d.id for d in decisions] == [item.id for item in items]
    found = _found_pairs(decisions)
    precision, recall = _precision_recall(found, truth)
    print(f"text_dedup: {len(found)} pairs found, {len(truth)} planted, precision {precision:.3f}, "
          f"recall {recall:.3f}")
    assert precision >= 0.95 and recall >= 0.95
    # LSH only proposes; every reported pair really reaches the threshold (exact Jaccard of shingles)
    texts = {item.id: item.record["conversations"][1]["value"] for item in items}
    for pair in found:
        a, b = sorted(pair)
        assert jaccard(shingles(texts[a]), shingles(texts[b])) >= 0.6


def test_text_dedup_same_images_and_short_texts(tmp_path: Path) -> None:
    Image.new("RGB", (40, 40), (1, 2, 3)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 40), (200, 2, 3)).save(tmp_path / "b.png")
    question = "What is the colour of the large square in this picture?"
    items = [_item(tmp_path, "1", "a.png", question), _item(tmp_path, "2", "b.png", question),
             _item(tmp_path, "3", "a.png", question.upper()), _item(tmp_path, "4", "a.png", "Yes."),
             _item(tmp_path, "5", "a.png", "Yes.")]
    plain = [d.reason for d in get_stage("text_dedup", {"text_from": "gpt"}).process_all(items)]
    assert plain == [None, "duplicate: of 1 (jaccard 1.00)", "duplicate: of 1 (jaccard 1.00)", None, None]
    paired = get_stage("text_dedup", {"text_from": "gpt", "same_images": True}).process_all(items)
    assert [d.reason for d in paired] == [None, None, "duplicate: of 1 (jaccard 1.00)", None, None]


# --------------------------------------------------------------------------------------------- helpers


def test_dct_matrix_is_orthonormal_and_flat_image_hashes_to_zero() -> None:
    matrix = _dct_matrix(32)
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(32), atol=1e-12)
    np.testing.assert_allclose(matrix[0], np.full(32, 1 / np.sqrt(32)))  # the DC row of an orthonormal DCT-II
    # flat: every AC coefficient is 0, so only the positive DC term is above the median (0)
    assert phash(Image.new("RGB", (50, 30), (90, 120, 30))) == 1 << 63
    assert phash(Image.new("L", (50, 30), 0)) == 0
    assert hamming(0b1011, 0b0110) == 3


def test_hamming_index_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(4)
    base = [int(v) for v in rng.integers(0, 2**63, 60, dtype=np.int64)]
    values = base + [v ^ (1 << int(b)) ^ (1 << int(c)) for v, b, c in zip(base, *rng.integers(0, 64, (2, 60)))]
    for distance in (0, 2, 6, 31):
        index = HammingIndex(distance)
        for key, value in enumerate(values):
            index.add(key, value)
        for key, value in enumerate(values):
            expected = [(other, hamming(value, v)) for other, v in enumerate(values) if hamming(value, v) <= distance]
            assert list(index.near(value)) == expected
    with pytest.raises(ValueError):
        HammingIndex(40)


def test_shingles_and_minhash_estimate() -> None:
    assert shingles("Ab, C!", "char", 3) == {"ab ", "b c"}
    assert shingles("The cat; the CAT", "word", 2) == {"the cat", "cat the"}
    assert shingles("...", "char", 5) == frozenset()
    rng = random.Random(2)
    hasher = MinHasher(256, seed=7)
    for _ in range(20):
        a = {f"s{rng.randrange(300)}" for _ in range(120)}
        b = set(list(a)[: rng.randrange(10, 110)]) | {f"s{rng.randrange(300)}" for _ in range(40)}
        estimate = float(np.mean(hasher.signature(a) == hasher.signature(b)))
        assert abs(estimate - jaccard(a, b)) < 0.13  # ~4 standard deviations of a 256-sample estimate
    assert np.array_equal(MinHasher(64, 3).signature({"x", "y"}), MinHasher(64, 3).signature({"y", "x"}))


def test_lsh_bands_and_candidates() -> None:
    bands, rows = choose_bands(0.6, 128)
    assert bands * rows <= 128
    assert 1 - (1 - 0.7 ** rows) ** bands > 0.95 and 1 - (1 - 0.3 ** rows) ** bands < 0.2
    hasher, index = MinHasher(128), LSHIndex(128, bands, rows)
    words = [f"w{k}" for k in range(100)]
    index.add("base", hasher.signature(set(words)))
    index.add("other", hasher.signature({f"z{k}" for k in range(100)}))
    assert index.candidates(hasher.signature(set(words[:95]))) == ["base"]


def test_bad_dedup_settings() -> None:
    with pytest.raises(CurationError, match="max_distance"):
        get_stage("image_dedup", {"max_distance": 40})
    with pytest.raises(CurationError, match="threshold"):
        get_stage("text_dedup", {"threshold": 1.5})
    with pytest.raises(CurationError, match="text_from"):
        get_stage("exact_dedup", {"text_from": "everything"})


def test_pairs_of_distinct_images_stay_far_apart(image_set) -> None:
    items, _, _ = image_set
    originals = [item for item in items if item.id.startswith("o")][:60]
    hashes = [phash(Image.open(Path(item.root) / item.record["image"])) for item in originals]
    assert min(hamming(a, b) for a, b in combinations(hashes, 2)) > 8
