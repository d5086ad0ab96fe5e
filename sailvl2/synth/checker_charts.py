"""The independent checker's chart and table part (see checker.py): answers recomputed from the scene
description, and the focus boxes of slot-layout charts recomputed from the layout as the charts module's
docstring states it, with separate code (nothing here calls synth/charts.py).

Slot layout, in slots of ``scene["slot"]`` px: a bar or line chart's category k takes slot columns 2k and 2k + 1
of the last two slot rows (value above label); a pie's legend entry k takes the last two slot columns of slot
rows 2k and 2k + 1; a table's block (r, c), names counted (row 0 = column names, column 0 = row names), takes slot
columns 2c, 2c + 1 and slot rows 2r, 2r + 1. Every block is one nano LLM token.
"""

from __future__ import annotations

from typing import Any

from .checker_pixels import expect
from .checker_pixels import match_question as _match

__all__ = ["chart_answer", "check_chart_focus"]


def _only(items: list[Any], what: str) -> Any:
    expect(len(items) == 1, f"{what} picks {len(items)} entries, not exactly one")
    return items[0]


def chart_answer(task: str, q: str, scene: dict[str, Any]) -> str:
    if scene["type"] == "table":
        rows, cols, cells = scene["rows"], scene["columns"], scene["cells"]
        if task == "charts/table_cell":
            r, c = _match(r"In the table, what is the value in row (.+) and column (.+)\?", q)
            return str(cells[rows.index(r)][cols.index(c)])
        if task == "charts/table_argmax":
            c = cols.index(_match(r"Which row has the largest value in column (.+)\?", q)[0])
            column = [row[c] for row in cells]
            return _only([r for r, v in zip(rows, column) if v == max(column)], "argmax")
        expect(task == "charts/table_rows", f"task {task!r} on a table")
        _match(r"How many rows of data does the table have\?", q)
        return str(len(rows))
    table = dict(zip(scene["labels"], scene["values"]))
    expect(len(table) == len(scene["labels"]), "duplicate chart labels")
    if task == "charts/value":
        return str(table[_match(r"What is the value of (.+)\?", q)[0]])
    if task in ("charts/largest", "charts/smallest"):
        word = _match(r"Which category has the (largest|smallest) value\?", q)[0]
        best = (max if word == "largest" else min)(table.values())
        return _only([label for label, v in table.items() if v == best], word)
    if task == "charts/compare":
        a, b = _match(r"Is the value of (.+) greater than the value of (.+)\?", q)
        expect(table[a] != table[b], "compare asked about equal values")
        return "yes" if table[a] > table[b] else "no"
    if task == "charts/count":
        _match(r"How many categories are there\?", q)
        return str(len(table))
    expect(task == "charts/type", f"task {task!r} on a chart")
    _match(r"What type of chart is this\?", q)
    return scene["chart"]


def _subject_blocks(task: str, q: str, scene: dict[str, Any]) -> list[tuple[int, int]]:
    """(first slot column, first slot row) of every 2 x 2 block the question is about: the asked categories
    (largest / smallest: the answer's), a table's asked cell, or for a column's largest row that row's cell
    and its name. Empty for questions about the whole chart (count, type, rows)."""
    if scene["type"] == "table":
        rows, cols, cells = scene["rows"], scene["columns"], scene["cells"]
        if task == "charts/table_cell":
            r, c = _match(r"In the table, what is the value in row (.+) and column (.+)\?", q)
            return [(2 * (cols.index(c) + 1), 2 * (rows.index(r) + 1))]
        if task == "charts/table_argmax":
            c = cols.index(_match(r"Which row has the largest value in column (.+)\?", q)[0])
            r = rows.index(chart_answer(task, q, scene))
            return [(2 * (c + 1), 2 * (r + 1)), (0, 2 * (r + 1))]
        return []
    labels = scene["labels"]
    if task == "charts/value":
        asked = [_match(r"What is the value of (.+)\?", q)[0]]
    elif task in ("charts/largest", "charts/smallest"):
        asked = [chart_answer(task, q, scene)]
    elif task == "charts/compare":
        asked = list(_match(r"Is the value of (.+) greater than the value of (.+)\?", q))
    else:
        return []
    slot_columns, slot_rows = scene["width"] // scene["slot"], scene["height"] // scene["slot"]
    if scene["chart"] == "pie":
        return [(slot_columns - 2, 2 * labels.index(label)) for label in asked]
    return [(2 * labels.index(label), slot_rows - 2) for label in asked]


def check_chart_focus(record: dict[str, Any], task: str, q: str, scene: dict[str, Any]) -> None:
    """Slot-layout charts and tables: one focus box per subject block, each exactly that block (0-1000
    coordinates, rounding allowed); whole-chart questions and free-layout scenes carry none."""
    focus = record.get("focus")
    blocks = _subject_blocks(task, q, scene) if scene.get("slot") else []
    if not blocks:
        expect(focus is None, f"{task} records carry no focus boxes here")
        return
    expect(focus is not None and len(focus) == 1, f"a {task} record needs one focus entry")
    slot, width, height = scene["slot"], scene["width"], scene["height"]
    expected = [(0, column * slot * 1000 / width, row * slot * 1000 / height,
                 (column + 2) * slot * 1000 / width, (row + 2) * slot * 1000 / height) for column, row in blocks]
    boxes = focus[0]
    expect(len(boxes) == len(expected), f"{len(boxes)} focus boxes for {len(expected)} subjects")
    for subject, (box, want) in enumerate(zip(boxes, expected)):
        # two subjects (a comparison's pair; a column's largest cell, then its row's name): each box tagged
        # with its place in that order (training/focus.py); one subject: untagged
        expect(list(box[5:]) == ([subject] if len(expected) > 1 else []),
               f"focus box {box}: subject tag {box[5:]}, expected {[subject] if len(expected) > 1 else 'none'}")
        expect(box[0] == want[0] and all(abs(b - w) <= 1 for b, w in zip(box[1:5], want[1:])),
               f"focus box {box} is not the subject's block {[round(v) for v in want]}")
