"""Slot-layout charts and tables (synth/charts.py, session 13): every label and value character centred in its
own ViT-patch slot, answers still re-derived by the checker, and the dense stage's per-patch character labels."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from sailvl2.nano.dense import CHARACTERS, dense_labels
from sailvl2.synth import CHART_READ_VERSION, check_record, check_suite, generate_suite, scene_from_dict
from sailvl2.processing.images import ImageProcessorConfig
from sailvl2.synth.charts import ChartScene, TableScene, sample_chart_scene, sample_table_scene
from sailvl2.synth.tasks import chart_qas, table_qas
from sailvl2.training.focus import box_token_positions

SLOT = 28
COMPARISONS = {"charts/largest", "charts/smallest", "charts/table_argmax"}


def _dark_slots(image: np.ndarray, inset: int = 3) -> dict[tuple[int, int], tuple[float, float]]:
    """(slot column, slot row) -> ink centroid inside the slot, for slots whose interior (``inset`` px in from
    each edge, which skips the table rules on the slot borders) holds any non-white pixel."""
    ink = (255 * 3 - image.astype(int).sum(-1)) > 90
    found = {}
    for row in range(image.shape[0] // SLOT):
        for col in range(image.shape[1] // SLOT):
            inside = ink[row * SLOT + inset:(row + 1) * SLOT - inset, col * SLOT + inset:(col + 1) * SLOT - inset]
            ys, xs = np.nonzero(inside)
            if len(xs):
                found[(col, row)] = (xs.mean() + inset, ys.mean() + inset)
    return found


def _glyph_slots(scene) -> dict[tuple[int, int], str]:
    return {(int(x // SLOT), int(y // SLOT)): char for char, x, y in scene.character_centres()}


@pytest.mark.parametrize("chart", ["bar", "line", "pie"])
def test_slot_charts_draw_each_character_in_its_own_slot(chart: str) -> None:
    rng = random.Random(chart)
    for _ in range(30):
        scene = sample_chart_scene(rng, 168, 168, chart, slot=SLOT)
        assert 2 <= len(scene.values) <= 3 and all(10 <= v <= 99 for v in scene.values) and scene.title == ""
        assert all(1 <= len(label) <= (1 if chart == "pie" else 2) for label in scene.labels)
        glyphs = _glyph_slots(scene)
        assert len(glyphs) == sum(len(label) + 2 for label in scene.labels)  # no two characters share a slot
        drawn = _dark_slots(np.asarray(scene.render()))
        if chart == "pie":  # the legend's two columns: swatches in column 4 of the even rows, glyphs elsewhere
            swatches = {(4, 2 * k) for k in range(len(scene.values))}
            assert {p for p in drawn if p[0] >= 4} == set(glyphs) | swatches
        else:  # the value and label rows hold the glyphs only; the plot (bars, line, axis) stays above them
            assert {p for p in drawn if p[1] >= 4} == set(glyphs)
            assert all(row >= 4 for _, row in glyphs)
        for place in glyphs:  # each glyph near its slot's centre
            cx, cy = drawn[place]
            assert abs(cx - 13.5) < 6 and abs(cy - 13.5) < 7, (scene, place, cx, cy)
        assert scene_from_dict(scene.to_dict()) == scene


def test_slot_tables_draw_each_character_in_its_own_slot() -> None:
    rng = random.Random(5)
    for _ in range(30):
        scene = sample_table_scene(rng, 168, 168, slot=SLOT)
        assert (len(scene.rows), len(scene.columns)) == (2, 2)  # what fits in 3 x 3 blocks with the names
        assert all(10 <= v <= 99 for row in scene.cells for v in row)
        glyphs = _glyph_slots(scene)
        assert set(_dark_slots(np.asarray(scene.render()))) == set(glyphs)  # the rules lie on slot borders
        for r, name in enumerate(scene.rows):  # row r's name, then its values, on slot row 2(r + 1)
            line = "".join(glyphs.get((col, 2 * (r + 1)), "") for col in range(6))
            assert line == name + "".join(map(str, scene.cells[r]))
        assert scene_from_dict(scene.to_dict()) == scene
    # 224 px holds more: up to 4 rows would need 10 slot rows, so 3 rows and 3 columns at most.
    big = [sample_table_scene(rng, 224, 224, slot=SLOT) for _ in range(60)]
    assert max(len(t.rows) for t in big) == 3 and max(len(t.columns) for t in big) == 3
    with pytest.raises(ValueError, match="too few 28-px slots"):
        sample_table_scene(rng, 140, 168, slot=SLOT)
    with pytest.raises(ValueError, match="only slot-layout"):
        TableScene(168, 168, ("X",), ("A",), ((1,),)).character_centres()


def _glyphs_in(scene, box) -> str:
    """The characters whose slot centres lie inside a pixel box, in drawing order."""
    x1, y1, x2, y2 = box
    return "".join(char for char, x, y in scene.character_centres() if x1 < x < x2 and y1 < y < y2)


@pytest.mark.parametrize("chart", ["bar", "line", "pie"])
def test_category_blocks_hold_their_label_and_value(chart: str) -> None:
    """A category's focus block holds exactly its own label and value characters (no other category's), and
    maps to exactly one nano LLM token (training/focus.py)."""
    rng = random.Random(f"blocks-{chart}")
    config = ImageProcessorConfig(image_size=168, max_num=1)
    for _ in range(20):
        scene = sample_chart_scene(rng, 168, 168, chart, slot=SLOT)
        tokens = []
        for k, (label, value) in enumerate(zip(scene.labels, scene.values)):
            box = scene.category_box(k)
            assert sorted(_glyphs_in(scene, box)) == sorted(label + str(value))
            x1, y1, x2, y2 = box
            unit = [x1 * 1000 / 168, y1 * 1000 / 168, x2 * 1000 / 168, y2 * 1000 / 168]
            tokens += box_token_positions(unit, (168, 168), config, 1, 9)
        # one token each, all different: bars / lines on the bottom token row, pie entries in the right column
        assert len(tokens) == len(set(tokens)) == len(scene.values)
        assert all(t // 3 == 2 for t in tokens) if chart != "pie" else all(t % 3 == 2 for t in tokens)
    with pytest.raises(ValueError, match="only slot-layout"):
        sample_chart_scene(rng, 168, 168, chart).category_box(0)


def test_table_blocks_hold_their_cell_and_name() -> None:
    rng = random.Random(11)
    for _ in range(20):
        scene = sample_table_scene(rng, 168, 168, slot=SLOT)
        for r, name in enumerate(scene.rows):
            assert _glyphs_in(scene, scene.block_box(r + 1, 0)) == name
            for c, column in enumerate(scene.columns):
                assert _glyphs_in(scene, scene.block_box(r + 1, c + 1)) == str(scene.cells[r][c])
                assert _glyphs_in(scene, scene.block_box(0, c + 1)) == column


def test_chart_questions_focus_on_their_subjects_and_the_checker_recomputes_them() -> None:
    """Slot layout: a value question's focus is its category, largest / smallest the answer's category, a
    comparison both, a table cell its block, a column's largest row that cell and the row's name; whole-chart
    questions and the free layout carry none. The independent checker recomputes every box and rejects a moved
    or missing one."""
    bars = ChartScene(168, 168, "bar", "", ("A", "Bo", "C"), (34, 57, 12), ("red",), slot=SLOT)
    qas = {qa.task: qa for qa in chart_qas(bars, random.Random(0))}
    assert qas["charts/largest"].focus == ((0, 56, 112, 112, 168),)  # Bo: slot columns 2-3, rows 4-5
    assert qas["charts/smallest"].focus == ((0, 112, 112, 168, 168),)  # C
    assert len(qas["charts/compare"].focus) == 2 and len(qas["charts/value"].focus) == 1
    assert qas["charts/count"].focus == () and qas["charts/type"].focus == ()
    table = TableScene(168, 168, ("X", "Y"), ("A", "Bo"), ((12, 34), (57, 11)), slot=SLOT)
    argmax = [qa for qa in table_qas(table, random.Random(3)) if qa.task == "charts/table_argmax"]
    column = 0 if argmax[0].question.endswith("X?") else 1
    best = 1 if column == 0 else 0  # column X: 57 (row Bo); column Y: 34 (row A)
    # two subjects, tagged in order (training/focus.py): the cell, then the row's name
    assert argmax[0].focus == ((0, *table.block_box(best + 1, column + 1), 0), (0, *table.block_box(best + 1, 0), 1))
    assert [box[5] for box in qas["charts/compare"].focus] == [0, 1] and len(qas["charts/value"].focus[0]) == 5
    free = sample_chart_scene(random.Random(1), 168, 168, "bar")
    assert all(qa.focus == () for qa in chart_qas(free, random.Random(0)))


def test_free_layout_charts_serialise_as_before() -> None:
    free = sample_chart_scene(random.Random(0), 168, 168, "bar")
    assert "slot" not in free.to_dict() and free.title and scene_from_dict(free.to_dict()) == free
    table = sample_table_scene(random.Random(0), 168, 168)
    assert "slot" not in table.to_dict() and scene_from_dict(table.to_dict()) == table
    assert dense_labels(free.to_dict(), grid=3)["chars"] == [None] * 9  # characters not tracked


def test_dense_labels_of_slot_charts_by_hand() -> None:
    none = len(CHARACTERS)
    ids = {char: CHARACTERS.index(char) for char in "ABo3457XY12"}
    # Bar chart: category k's value on slot row 4 and label on row 5, slot columns 2k and 2k + 1; the 2 x 2
    # patches of token 6 + k are (row 4: col 2k, 2k + 1; row 5: col 2k, 2k + 1).
    bars = ChartScene(168, 168, "bar", "", ("A", "Bo"), (34, 57), ("red",), slot=SLOT).to_dict()
    slots = dense_labels(bars, grid=3, patches=6)["char_slots"]
    assert slots[6] == [ids["3"], ids["4"], ids["A"], none]
    assert slots[7] == [ids["5"], ids["7"], ids["B"], ids["o"]]
    assert all(s == [none] * 4 for k, s in enumerate(slots) if k not in (6, 7))
    # Pie legend entry k: label at slot (5, 2k), value at (4, 2k + 1) and (5, 2k + 1): token 2 + 3k.
    pie = ChartScene(168, 168, "pie", "", ("X", "Y"), (12, 47), ("red", "blue"), slot=SLOT).to_dict()
    slots = dense_labels(pie, grid=3, patches=6)["char_slots"]
    assert slots[2] == [none, ids["X"], ids["1"], ids["2"]] and slots[5] == [none, ids["Y"], ids["4"], ids["7"]]
    # Table cell (r, c) is token 3r + c, its text on the token's upper patch row.
    table = TableScene(168, 168, ("X", "Y"), ("A", "Bo"), ((12, 34), (57, 11)), slot=SLOT).to_dict()
    slots = dense_labels(table, grid=3, patches=6)["char_slots"]
    assert [slots[k][:2] for k in range(9)] == [
        [none, none], [ids["X"], none], [ids["Y"], none], [ids["A"], none], [ids["1"], ids["2"]],
        [ids["3"], ids["4"]], [ids["B"], ids["o"]], [ids["5"], ids["7"]], [ids["1"], ids["1"]]]
    assert all(s[2:] == [none, none] for s in slots)
    labels = dense_labels(table, grid=3)  # the multi-hot form: the characters of each token's cell
    assert labels["chars"][4] == [1.0 if c in "12" else 0.0 for c in CHARACTERS]


def test_chart_slot_suite_passes_the_checker(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    manifest = generate_suite(out, seed=4, sizes={"train": 160, "test": 60},
                              families=["charts", "reasoning", "captions"], image_size=168, workers=1, chart_slot=SLOT)
    assert manifest["chart_slot"] == SLOT and "text_slot" not in manifest
    report = check_suite(out)
    assert report.failures == [] and report.checked == 220
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    focused = [r for r in records if r["task"] in ("charts/value", "charts/largest", "charts/smallest",
                                                  "charts/compare", "charts/table_cell", "charts/table_argmax")]
    assert focused and all(len(r["focus"][0]) in (1, 2) for r in focused)
    assert not any("focus" in r for r in records if r["task"] in ("charts/count", "charts/type", "charts/table_rows"))
    for record in focused[:20]:  # a box moved by one block, or a missing one, is caught
        x1, y1, x2, y2, *tag = record["focus"][0][0][1:]
        moved = [0, *(((x1 + 333) % 1000, y1, (x1 + 333) % 1000 + (x2 - x1), y2) if x1 < 600 else
                        (x1 - 333, y1, x2 - 333, y2)), *tag]
        broken = dict(record, focus=[[moved, *record["focus"][0][1:]]])
        assert any("is not the subject's block" in f for f in check_record(broken))
        missing = {k: v for k, v in record.items() if k != "focus"}
        assert check_record(missing) and "needs one focus entry" in check_record(missing)[0]
    pairs = [r for r in focused if len(r["focus"][0]) == 2]
    assert pairs and all([box[5] for box in r["focus"][0]] == [0, 1] for r in pairs)
    for record in pairs[:10]:  # a pair's subjects must be tagged in the question's order
        untagged = dict(record, focus=[[box[:5] for box in record["focus"][0]]])
        swapped = dict(record, focus=[[[*box[:5], 1 - box[5]] for box in record["focus"][0]]])
        assert "subject tag" in check_record(untagged)[0] and "subject tag" in check_record(swapped)[0]
    scenes = [json.loads(line)["scene"] for line in (out / "train.jsonl").read_text().splitlines()]
    charts = [s for s in scenes if s["type"] in ("chart", "table")]
    assert len(charts) > 40 and {s["slot"] for s in charts} == {SLOT}
    captions = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    chart_captions = [r["answer"] for r in captions
                      if r["task"].startswith("captions") and r["scene"]["type"] == "chart"]
    assert chart_captions and not any("titled" in text for text in chart_captions)


def test_chart_images_add_a_train_only_read_out_stream(tmp_path: Path) -> None:
    """chart_images: extra charts and tables asked for one value or cell or a comparison, train split only (stream
    `charts-read`), answers re-derived by the checker, drawn by the ladder's mixtures, the rest unchanged."""
    sizes = {"train": 80, "test": 30}
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    plain_manifest = generate_suite(plain, seed=7, sizes=sizes, families=["charts", "shapes"], image_size=168,
                                    workers=1, chart_slot=SLOT)
    manifest = generate_suite(extra, seed=7, sizes=sizes, families=["charts", "shapes"], image_size=168, workers=1,
                              chart_slot=SLOT, chart_images=25)
    assert manifest["chart_images"] == 25
    for name in ("train.jsonl", "test.jsonl", "families/train-charts.jsonl"):
        assert (plain / name).read_bytes() == (extra / name).read_bytes()
    rows = [json.loads(line) for line in (extra / "families" / "train-charts-read.jsonl").read_text().splitlines()]
    tasks = [row["task"] for row in rows]
    # Read-outs, and comparisons in ~40 % of the items (a tie asks the read-out instead).
    assert len(rows) == 25 and set(tasks) <= {"charts/value", "charts/table_cell", *COMPARISONS}
    assert {"charts/value", "charts/table_cell"} <= set(tasks) and 3 <= sum(t in COMPARISONS for t in tasks) <= 17
    assert manifest["chart_read_version"] == CHART_READ_VERSION and "chart_read_version" not in plain_manifest
    assert all(row["scene"]["slot"] == SLOT and row["image"].startswith("../images/chart-reads/") for row in rows)
    report = check_suite(extra)
    assert report.failures == [] and report.checked == 80 + 30 + 25
    assert report.shared_scenes == {"test&train": 0}  # the stream's scenes belong to the train split
    mixtures = {name: (extra / "mixtures" / f"{name}.yaml").read_text() for name in ("multitask", "sft", "cot")}
    for name, repeat in (("multitask", 0.5), ("sft", 0.25), ("cot", 0.25)):
        assert f'{{name: "charts-read", path: "../families/train-charts-read.jsonl", max_num: 1, repeat: {repeat}}}' \
            in mixtures[name]
    assert "charts-read" not in (plain / "mixtures" / "multitask.yaml").read_text()
    with pytest.raises(ValueError, match="chart_images must be >= 0"):
        generate_suite(tmp_path / "bad", sizes=sizes, chart_images=-1)
