"""The dense vision stage of the nano ladder: labels from scene descriptions, and a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sailvl2.nano.dense import (
    CHARACTERS,
    IGNORE,
    SHAPE_ATTRIBUTES,
    DenseConfig,
    DenseHeads,
    box_iou,
    cell_of,
    dense_labels,
    load_images,
    sample_batches,
    train_dense,
)
from sailvl2.nano.ladder import _corpus
from sailvl2.nano.model import NANO_IMAGE_SIZE, build_nano_init
from sailvl2.synth import generate_suite
from sailvl2.synth.scene import TextScene


def _shape(kind: str, colour: str, size: str, row: int, col: int, cx: int, cy: int) -> dict:
    return {"kind": kind, "colour": colour, "size": size, "row": row, "col": col, "cx": cx, "cy": cy, "half": 9}


def test_shape_labels_by_hand() -> None:
    scene = {"type": "shapes", "width": 168, "height": 168, "background": "white",
             "shapes": [_shape("star", "blue", "small", 0, 2, 140, 30),
                        _shape("circle", "red", "large", 2, 0, 28, 150)]}
    labels = dense_labels(scene, grid=3)
    none_kind, none_colour = len(SHAPE_ATTRIBUTES["kind"]), len(SHAPE_ATTRIBUTES["colour"])
    # (140, 30) -> row 0, col 2 -> cell 2; (28, 150) -> row 2, col 0 -> cell 6.
    assert labels["kind"] == [none_kind, none_kind, SHAPE_ATTRIBUTES["kind"].index("star"), none_kind, none_kind,
                              none_kind, SHAPE_ATTRIBUTES["kind"].index("circle"), none_kind, none_kind]
    assert labels["colour"][2] == SHAPE_ATTRIBUTES["colour"].index("blue")
    assert labels["colour"][6] == SHAPE_ATTRIBUTES["colour"].index("red")
    assert labels["colour"].count(none_colour) == 7
    assert labels["size"][6] == SHAPE_ATTRIBUTES["size"].index("large")
    assert all(sum(cell) == 0 for cell in labels["chars"])  # no text in a shapes scene
    assert labels["row"] == [0, 0, 0, 1, 1, 1, 2, 2, 2] and labels["column"] == [0, 1, 2] * 3
    # A 4 x 4 token grid: the scene row / column under each token's centre (1/8, 3/8, 5/8, 7/8 of the side).
    finer = dense_labels(scene, grid=4)
    assert finer["row"] == [0] * 4 + [1] * 4 + [1] * 4 + [2] * 4 and finer["column"] == [0, 1, 1, 2] * 4


def test_box_labels_by_hand() -> None:
    scene = {"type": "shapes", "width": 168, "height": 168, "background": "white",
             "shapes": [_shape("square", "red", "small", 1, 1, 70, 80)]}
    labels = dense_labels(scene, grid=3)
    # The square's outline runs from (61, 71) to (79, 89); its box is (61, 71, 80, 90) with exclusive ends
    # (the grounding answers' box), and cell 4's corner is (56, 56).
    assert labels["box"][4] == pytest.approx([5 / 56, 15 / 56, 24 / 56, 34 / 56])
    assert all(box is None for k, box in enumerate(labels["box"]) if k != 4)  # no shape
    text = dense_labels(TextScene(168, 168, "white", "ab", "black", 20, 28, 56, "word").to_dict(), grid=3)
    assert text["box"] == [None] * 9
    iou = box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0]]),
                  torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 3.0, 3.0]]))
    assert iou.tolist() == pytest.approx([1 / 7, 1.0, 0.0])  # overlap 1 of 4 + 4 - 1; equal; degenerate


def test_box_digit_labels_by_hand() -> None:
    """The digits of the grounding answer's 0-1000 box, on the shape's token only."""
    scene = {"type": "shapes", "width": 168, "height": 168, "background": "white",
             "shapes": [_shape("square", "red", "small", 1, 1, 70, 80)]}
    labels = dense_labels(scene, grid=3)
    # Box (61, 71, 80, 90) px of 168: 61 / 168 * 1000 = 363.1 -> 363, 422.6 -> 423, 476.2 -> 476, 535.7 -> 536.
    assert labels["box_digits"][4] == [3, 6, 3, 4, 2, 3, 4, 7, 6, 5, 3, 6]
    assert all(digits == [IGNORE] * 12 for k, digits in enumerate(labels["box_digits"]) if k != 4)
    corner = {"type": "shapes", "width": 168, "height": 168, "background": "white",
              "shapes": [{**_shape("circle", "blue", "small", 0, 0, 12, 12), "half": 9}]}
    # Box (3, 3, 22, 22) px: 17.9 -> 18 and 131.0 -> 131, so the hundreds digit of 18 is 0.
    assert dense_labels(corner, grid=3)["box_digits"][0] == [0, 1, 8, 0, 1, 8, 1, 3, 1, 1, 3, 1]


def test_box_digit_head_learns_and_spells_boxes(tiny_suite: Path) -> None:
    """With box_digit_weight the digit loss falls, the summary reports the share of held-out boxes spelled with
    IoU >= 0.5, and a head whose logits pick the true digits scores every box."""
    from sailvl2.errors import ConfigError

    torch.set_num_threads(1)
    summary = train_dense(tiny_suite / "init", tiny_suite / "data", tiny_suite / "digits",
                          DenseConfig(steps=150, batch_images=8, lr=2e-3, eval_images=32, box_digit_weight=1.0),
                          show_progress=False)
    losses = [json.loads(line)["loss_box_digits"] for line in
              (tiny_suite / "digits" / "metrics.jsonl").read_text().splitlines() if "loss_box_digits" in line]
    assert len(losses) > 100 and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    assert 0.0 <= summary["heldout_accuracy"]["box_digits"] <= 1.0
    with pytest.raises(ConfigError, match="box_digit_weight"):
        DenseConfig(box_digit_weight=-1.0)
    # The spelling: features = one-hot of the wanted logits, head = identity, so argmax is the true digits;
    # a second token gets the digits of a box shifted right by 100 units (IoU 0 against the true box).
    heads = DenseHeads(120, box_digit_weight=1.0)
    with torch.no_grad():
        heads.box_digits.weight.copy_(torch.eye(120))
        heads.box_digits.bias.zero_()
    true = [3, 6, 3, 4, 2, 3, 4, 7, 6, 5, 3, 6]  # spells (363, 423, 476, 536)
    shifted = [4, 6, 3, 4, 2, 3, 5, 7, 6, 5, 3, 6]  # (463, 423, 576, 536): overlap 13 of 113 wide
    features = torch.zeros(1, 2, 120)
    for token, digits in enumerate((true, shifted)):
        for place, digit in enumerate(digits):
            features[0, token, place * 10 + digit] = 1.0
    batch = {name: torch.full((1, 2), IGNORE) for name in (*SHAPE_ATTRIBUTES, "row", "column")}
    batch.update(chars_mask=torch.zeros(1, 2, dtype=torch.bool), chars=torch.zeros(1, 2, len(CHARACTERS)),
                 box=torch.full((1, 2, 4), float("nan")), box_digits=torch.tensor([[true, true]]))
    assert heads.correct(features, batch)["box_digits"] == (1, 2)


def test_cell_of_edges() -> None:
    assert cell_of(0, 0, 168, 168, 3) == 0
    assert cell_of(55.9, 56, 168, 168, 3) == 3  # x in column 0, y on row 1's first pixel
    assert cell_of(167, 167, 168, 168, 3) == 8
    assert cell_of(168, 168, 168, 168, 3) == 8  # clamped
    assert cell_of(100, 10, 224, 224, 4) == 1


def test_text_labels_place_every_character_in_its_cell() -> None:
    scene = TextScene(168, 168, "white", "Bd7", "black", 40, 10, 60, "word").to_dict()
    labels = dense_labels(scene, grid=3)
    assert all(v == IGNORE for v in labels["kind"])  # shape heads ignore text scenes
    placed = {CHARACTERS[k]: cell for cell, hot in enumerate(labels["chars"]) for k, v in enumerate(hot) if v}
    assert sorted(placed) == ["7", "B", "d"]
    x1, y1, x2, y2 = scene["box"]
    for char, cell in placed.items():  # every character lies inside the text box, in its row of cells
        row, col = divmod(cell, 3)
        assert row == int(((y1 + y2) / 2) * 3 / 168)
        assert col * 56 <= x2 and (col + 1) * 56 >= x1
    assert placed["B"] <= placed["d"] <= placed["7"]  # left to right


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dense")
    generate_suite(root / "data", seed=3, sizes={"train": 240, "test": 60}, families=["shapes", "ocr"],
                   image_size=NANO_IMAGE_SIZE, workers=1)
    build_nano_init(root / "init", _corpus(root / "data" / "train.jsonl"), seed=0)
    return root


def test_labels_match_suite_scenes(tiny_suite: Path) -> None:
    images = load_images(tiny_suite / "data", "train", grid=3)
    records = [json.loads(line) for line in (tiny_suite / "data" / "train.jsonl").read_text().splitlines()]
    assert len(images) == len({r["image"] for r in records})  # one entry per distinct image
    shapes = {r["image"]: r["scene"] for r in records if r["scene"]["type"] == "shapes"}
    for path, labels in images:
        scene = shapes.get(str(path.relative_to(tiny_suite / "data")))
        if scene is None:
            continue
        occupied = [k for k, v in enumerate(labels["kind"]) if v != len(SHAPE_ATTRIBUTES["kind"])]
        # The scenes' 3 x 3 shape grid is the token grid at 168 px: a shape's cell is its (row, col).
        assert sorted(occupied) == sorted(s["row"] * 3 + s["col"] for s in scene["shapes"])


def test_training_moves_only_the_vision_side_and_keeps_the_release_layout(tiny_suite: Path) -> None:
    torch.set_num_threads(1)
    summary = train_dense(tiny_suite / "init", tiny_suite / "data", tiny_suite / "run",
                          DenseConfig(steps=150, batch_images=8, lr=2e-3, eval_images=32), show_progress=False)
    before = load_file(tiny_suite / "init" / "model.safetensors")
    after = load_file(tiny_suite / "run" / "final" / "model.safetensors")
    assert before.keys() == after.keys()  # heads dropped: the release's keys, nothing else
    llm = [k for k in before if k.startswith("language_model.")]
    vision = [k for k in before if k.startswith(("vision_model.", "mlp1."))]
    assert llm and vision
    assert all(torch.equal(before[k], after[k]) for k in llm)
    assert sum(not torch.equal(before[k], after[k]) for k in vision) == len(vision)
    losses = [json.loads(line)["loss"] for line in (tiny_suite / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 150 and sum(losses[-10:]) < 0.6 * sum(losses[:10])
    assert set(summary["heldout_accuracy"]) >= {"kind", "colour", "size", "row", "column"}
    assert "box" not in summary["heldout_accuracy"]  # the box head is off by default
    # Colour is a linear read-out of the cell's pixels: 150 steps already beat the 1-in-7 guess.
    assert summary["heldout_accuracy"]["colour"] > 0.3
    for name in ("tokenizer.json", "preprocessor_config.json"):  # the same tokenizer and processor settings
        saved = json.loads((tiny_suite / "run" / "final" / name).read_text())
        assert saved == json.loads((tiny_suite / "init" / name).read_text())


def test_char_slots_of_a_slot_layout_scene_by_hand() -> None:
    # "ab cd" in 28-px slots from (28, 56): "ab" on patch row 2, "cd" on patch row 3, patch columns 1 and 2.
    scene = TextScene(168, 168, "white", "ab cd", "black", 20, 28, 56, "phrase", slot=28).to_dict()
    labels = dense_labels(scene, grid=3, patches=6)
    none = len(CHARACTERS)
    a, b, c, d = (CHARACTERS.index(ch) for ch in "abcd")
    # Patch (row 2, col 1) is token (1, 0) = 3, its top-right patch; patch (2, 2) is token 4's top-left; and so on.
    assert labels["char_slots"][3] == [none, a, none, c]
    assert labels["char_slots"][4] == [b, none, d, none]
    assert all(slots == [none] * 4 for k, slots in enumerate(labels["char_slots"]) if k not in (3, 4))
    shapes = dense_labels({"type": "shapes", "width": 168, "height": 168, "background": "white", "shapes": []},
                          grid=3, patches=6)
    assert shapes["char_slots"] == [[none] * 4] * 9
    assert "char_slots" not in dense_labels(scene, grid=3)  # only with the patch grid


def test_box_head_learns_the_shapes_boxes(tiny_suite: Path) -> None:
    """With box_weight the box loss falls, and the summary reports the share of held-out boxes with IoU >= 0.5."""
    torch.set_num_threads(1)
    summary = train_dense(tiny_suite / "init", tiny_suite / "data", tiny_suite / "box",
                          DenseConfig(steps=150, batch_images=8, lr=2e-3, eval_images=32, box_weight=4.0),
                          show_progress=False)
    losses = [json.loads(line)["loss_box"] for line in (tiny_suite / "box" / "metrics.jsonl").read_text().splitlines()
              if "loss_box" in line]
    assert len(losses) > 100 and sum(losses[-10:]) < 0.6 * sum(losses[:10])
    assert 0.0 <= summary["heldout_accuracy"]["box"] <= 1.0


def test_char_slot_head_learns_slot_layout_text(tmp_path: Path) -> None:
    """The per-patch character head trains on a slot-layout suite (its loss falls) and reports a held-out
    per-character accuracy."""
    torch.set_num_threads(1)
    generate_suite(tmp_path / "data", seed=5, sizes={"train": 200, "test": 40}, families=["ocr"],
                   image_size=NANO_IMAGE_SIZE, workers=1, text_slot=28)
    build_nano_init(tmp_path / "init", _corpus(tmp_path / "data" / "train.jsonl"), seed=0)
    summary = train_dense(tmp_path / "init", tmp_path / "data", tmp_path / "run",
                          DenseConfig(steps=120, batch_images=16, lr=2e-3, eval_images=40, char_target="slots"),
                          show_progress=False)
    losses = [json.loads(line)["loss_chars"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert "chars" in summary["heldout_accuracy"]


def test_char_target_and_text_share_are_checked() -> None:
    from sailvl2.errors import ConfigError

    with pytest.raises(ConfigError, match="char_target"):
        DenseConfig(char_target="words")
    with pytest.raises(ConfigError, match="text_share"):
        DenseConfig(text_share=1.0)
    with pytest.raises(ConfigError, match="box_weight"):
        DenseConfig(box_weight=-1.0)


def test_text_share_fixes_the_text_images_per_batch(tiny_suite: Path) -> None:
    images = load_images(tiny_suite / "data", "train", grid=3)
    is_text = {str(path): labels["chars"][0] is not None and all(v == IGNORE for v in labels["kind"])
               for path, labels in images}
    assert 0 < sum(is_text.values()) < len(images)  # the fixture suite has shapes and text images
    batches = sample_batches(images, DenseConfig(batch_images=16, text_share=0.5))
    for _ in range(20):
        batch = next(batches)
        assert len(batch) == 16 and sum(is_text[str(path)] for path, _ in batch) == 8
        assert len({str(path) for path, _ in batch}) == 16  # no image twice in one batch
    uniform = sample_batches(images, DenseConfig(batch_images=16))
    counts = [sum(is_text[str(path)] for path, _ in next(uniform)) for _ in range(50)]
    assert len(set(counts)) > 1  # uniform batches: the text count varies



def test_text_share_leaves_out_slot_charts(tmp_path: Path) -> None:
    """Slot-layout charts and tables have character labels but are not text images: the text half of each
    batch holds text scenes only (run 23 counted the charts and its held-out words fell; session 13)."""
    suite = tmp_path / "data"
    generate_suite(suite, seed=6, sizes={"train": 120, "test": 10}, families=["ocr", "charts"],
                   image_size=NANO_IMAGE_SIZE, workers=1, text_slot=28, chart_slot=28)
    images = load_images(suite, "train", grid=3, patches=6)
    kinds = {str(path): labels["type"] for path, labels in images}
    charts = [labels for _, labels in images if labels["type"] in ("chart", "table")]
    assert charts and all(labels["chars"][0] is not None for labels in charts)  # their characters are labelled
    batches = sample_batches(images, DenseConfig(batch_images=8, text_share=0.5))
    for _ in range(20):
        assert sum(kinds[str(path)] == "text" for path, _ in next(batches)) == 4


def test_extra_streams_add_their_images_to_training(tmp_path: Path) -> None:
    """A train-only reading stream's images (paths relative to families/) join the training images with labels
    from their own scenes; a missing stream is a DataError naming it."""
    from sailvl2.data.errors import DataError

    suite = tmp_path / "data"
    generate_suite(suite, seed=4, sizes={"train": 30, "test": 10}, families=["shapes"], image_size=NANO_IMAGE_SIZE,
                   workers=1, text_slot=28, letter_images=6)
    base = load_images(suite, "train", grid=3, patches=6)
    both = load_images(suite, "train", grid=3, patches=6, extra_streams=("ocr-letters",))
    assert both[: len(base)] == base and len(both) == len(base) + 6
    letters = [json.loads(line) for line in (suite / "families" / "train-ocr-letters.jsonl").read_text().splitlines()]
    for (path, labels), record in zip(both[len(base):], letters):
        assert path == suite / "images" / "letters" / Path(record["image"]).name and path.is_file()
        # the character slots hold exactly the string's letters
        drawn = "".join(CHARACTERS[c] for slots in labels["char_slots"] for c in slots if c < len(CHARACTERS))
        assert sorted(drawn) == sorted(record["answer"])
    with pytest.raises(DataError, match="ocr-numbers"):
        load_images(suite, "train", grid=3, extra_streams=("ocr-numbers",))


def test_structure_labels_of_shapes_by_hand() -> None:
    """Counts (session 15): every token holds the total; a shape's token how many share its colour / kind."""
    scene = {"type": "shapes", "width": 168, "height": 168, "background": "white",
             "shapes": [_shape("star", "blue", "small", 0, 2, 140, 30),    # cell 2
                        _shape("circle", "red", "large", 2, 0, 28, 150),   # cell 6
                        _shape("star", "red", "small", 1, 1, 84, 84)]}     # cell 4
    labels = dense_labels(scene, grid=3)
    assert labels["total"] == [3] * 9
    assert labels["same_colour"] == [0, 0, 1, 0, 2, 0, 2, 0, 0]  # blue 1, the two reds 2
    assert labels["same_kind"] == [0, 0, 2, 0, 2, 0, 1, 0, 0]  # the two stars 2, the circle 1
    assert labels["rank"] == [IGNORE] * 9  # no chart


def test_structure_labels_of_slot_charts_and_tables_by_hand() -> None:
    """Ranks: a bar chart's categories sit in the bottom token row, a pie's legend in the right token column,
    a table's data cells from token (1, 1); 1 = largest, 2 = smallest, 3 = between; ties are left out."""
    from sailvl2.synth.charts import ChartScene, TableScene

    bar = ChartScene(168, 168, "bar", "", ("A", "B", "C"), (58, 63, 45), ("green",), slot=28).to_dict()
    assert dense_labels(bar, grid=3)["rank"] == [0, 0, 0, 0, 0, 0, 3, 1, 2]
    pie = ChartScene(168, 168, "pie", "", ("P", "Q"), (30, 70), ("blue", "red"), slot=28).to_dict()
    assert dense_labels(pie, grid=3)["rank"] == [0, 0, 2, 0, 0, 1, 0, 0, 0]
    tied = ChartScene(168, 168, "line", "", ("A", "B", "C"), (63, 63, 45), ("green",), slot=28).to_dict()
    assert dense_labels(tied, grid=3)["rank"] == [0, 0, 0, 0, 0, 0, IGNORE, IGNORE, IGNORE]
    # columns Q1 = (47, 64), Q2 = (84, 50): each column ranked on its own
    table = TableScene(168, 168, ("Q1", "Q2"), ("Al", "Bo"), ((47, 84), (64, 50)), slot=28).to_dict()
    labels = dense_labels(table, grid=3)
    assert labels["rank"] == [0, 0, 0, 0, 2, 1, 0, 1, 2]
    assert labels["total"] == labels["same_colour"] == [IGNORE] * 9  # no shapes
    free = ChartScene(168, 168, "bar", "", ("A", "B", "C"), (5, 9, 1), ("green",)).to_dict()
    assert dense_labels(free, grid=3)["rank"] == [IGNORE] * 9  # free layout: categories not on the grid


def test_structure_heads_learn_and_are_reported(tiny_suite: Path) -> None:
    """With structure_weight the count losses fall and the summary reports held-out count accuracies; the
    heads are dropped with the others (release keys only)."""
    from sailvl2.errors import ConfigError

    torch.set_num_threads(1)
    summary = train_dense(tiny_suite / "init", tiny_suite / "data", tiny_suite / "structure",
                          DenseConfig(steps=150, batch_images=8, lr=2e-3, eval_images=32, structure_weight=1.0),
                          show_progress=False)
    rows = [json.loads(line) for line in (tiny_suite / "structure" / "metrics.jsonl").read_text().splitlines()]
    total = [row["loss_total"] for row in rows if "loss_total" in row]
    assert len(total) > 100 and sum(total[-10:]) < 0.8 * sum(total[:10])
    assert {"total", "same_colour", "same_kind"} <= set(summary["heldout_accuracy"])
    saved = load_file(tiny_suite / "structure" / "final" / "model.safetensors")
    assert saved.keys() == load_file(tiny_suite / "init" / "model.safetensors").keys()
    with pytest.raises(ConfigError, match="structure_weight"):
        DenseConfig(structure_weight=-1.0)
    with pytest.raises(ConfigError, match="structure_targets"):
        DenseConfig(structure_weight=1.0, structure_targets=("total", "colourfulness"))
    # only the chosen targets get a head (the ladder trains "total" and "rank")
    heads = DenseHeads(32, structure_weight=0.3, structure_targets=("total", "rank"))
    assert sorted(heads.structure) == ["rank", "total"]
    assert not DenseHeads(32).structure  # off by default
