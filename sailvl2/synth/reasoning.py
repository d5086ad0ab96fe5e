"""Multi-step questions with a worked chain of thought (``kind: cot``) and the same questions answered
directly (``kind: direct``), so Think-Fusion SFT can mix both for one image.

A cot reply is exactly ``<think>\\n...steps...\\n</think>\\n\\boxed{N}``. The steps first list what was seen
(each shape with its place, each value with its label), then do the arithmetic, so the chain is grounded
in the image rather than a bare sum. The cot question ends with the release's thinking suffix, which is
what ``chat(thinking=True)`` appends at inference, so the trained model meets the same prompt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..processing.prompt import THINKING_SUFFIX
from .charts import ChartScene, TableScene
from .scene import COLOURS, KINDS, Shape, ShapeScene, plural, position_name
from .tasks import QA

__all__ = ["cot_reply", "reasoning_qas"]


def cot_reply(steps: Sequence[str], answer: int) -> str:
    return "<think>\n" + "\n".join(steps) + "\n</think>\n\\boxed{" + str(answer) + "}"


def _both(task: str, question: str, steps: list[str], answer: int, cot_suffix: bool) -> list[QA]:
    """The cot sample and its direct twin (same task name; ``kind`` tells them apart)."""
    cot_question = question + THINKING_SUFFIX if cot_suffix else question
    return [QA(task, cot_question, cot_reply(steps, answer), str(answer), "cot"),
            QA(task, question, str(answer), str(answer), "direct")]


def _listing(label: str, shapes: list[Shape]) -> str:
    """"Red shapes: the red circle at the top left and the red star at the centre. That is 2." """
    if not shapes:
        return f"{label}: none. That is 0."
    items = [f"the {s.colour} {s.kind} at the {position_name(s.row, s.col)}" for s in shapes]
    joined = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"{label}: {joined}. That is {len(shapes)}."


def _sum_line(label: str, numbers: Sequence[int]) -> str:
    return f"{label}: {' + '.join(str(n) for n in numbers)} = {sum(numbers)}."


def reasoning_qas(scene: ShapeScene | ChartScene | TableScene, rng: random.Random, *,
                  cot_suffix: bool = True) -> list[QA]:
    if isinstance(scene, ShapeScene):
        return _shape_reasoning(scene, rng, cot_suffix)
    if isinstance(scene, ChartScene):
        return _chart_reasoning(scene, rng, cot_suffix)
    return _table_reasoning(scene, rng, cot_suffix)


def _shape_reasoning(scene: ShapeScene, rng: random.Random, cot_suffix: bool) -> list[QA]:
    shapes = list(scene.shapes)
    qas: list[QA] = []
    present = [k for k in KINDS if any(s.kind == k for s in shapes)]
    k1 = rng.choice(present)
    k2 = rng.choice([k for k in KINDS if k != k1])
    first, second = ([s for s in shapes if s.kind == k] for k in (k1, k2))
    steps = [_listing(plural(k1, 2).capitalize(), first), _listing(plural(k2, 2).capitalize(), second),
             _sum_line("In total", [len(first), len(second)])]
    qas += _both("reasoning/count_sum", f"How many {plural(k1, 2)} and {plural(k2, 2)} are there in total?",
                 steps, len(first) + len(second), cot_suffix)

    by_colour = {c: [s for s in shapes if s.colour == c] for c in COLOURS}
    pairs = [(a, b) for a in COLOURS for b in COLOURS if len(by_colour[a]) > len(by_colour[b])]
    if pairs:
        a, b = rng.choice(pairs)
        more, fewer = len(by_colour[a]), len(by_colour[b])
        steps = [_listing(f"{a.capitalize()} shapes", by_colour[a]), _listing(f"{b.capitalize()} shapes", by_colour[b]),
                 f"Difference: {more} - {fewer} = {more - fewer}."]
        qas += _both("reasoning/colour_diff", f"How many more {a} shapes than {b} shapes are there?",
                     steps, more - fewer, cot_suffix)

    colour = rng.choice([c for c in COLOURS if by_colour[c]])
    matching = by_colour[colour]
    steps = [f"All shapes: {len(shapes)}.", _listing(f"{colour.capitalize()} shapes", matching),
             f"Not {colour}: {len(shapes)} - {len(matching)} = {len(shapes) - len(matching)}."]
    qas += _both("reasoning/not_colour", f"How many shapes are not {colour}?", steps,
                 len(shapes) - len(matching), cot_suffix)
    return qas


def _chart_reasoning(scene: ChartScene, rng: random.Random, cot_suffix: bool) -> list[QA]:
    labels, values = scene.labels, scene.values
    readout = "Values: " + ", ".join(f"{l} = {v}" for l, v in zip(labels, values)) + "."
    qas: list[QA] = []
    i, j = sorted(rng.sample(range(len(labels)), 2))
    steps = [f"{labels[i]} = {values[i]} and {labels[j]} = {values[j]}.", _sum_line("Sum", [values[i], values[j]])]
    qas += _both("reasoning/chart_sum", f"What is the sum of the values of {labels[i]} and {labels[j]}?",
                 steps, values[i] + values[j], cot_suffix)
    hi, lo = values.index(max(values)), values.index(min(values))
    steps = [readout, f"Largest: {labels[hi]} = {values[hi]}. Smallest: {labels[lo]} = {values[lo]}.",
             f"Difference: {values[hi]} - {values[lo]} = {values[hi] - values[lo]}."]
    qas += _both("reasoning/chart_range", "What is the difference between the largest and the smallest value?",
                 steps, values[hi] - values[lo], cot_suffix)
    qas += _both("reasoning/chart_total", "What is the total of all the values?",
                 [readout, _sum_line("Total", values)], sum(values), cot_suffix)
    return qas


def _table_reasoning(scene: TableScene, rng: random.Random, cot_suffix: bool) -> list[QA]:
    qas: list[QA] = []
    c = rng.randrange(len(scene.columns))
    column = [row[c] for row in scene.cells]
    name = scene.columns[c]
    steps = [f"Column {name}: " + ", ".join(f"{r} {v}" for r, v in zip(scene.rows, column)) + ".",
             _sum_line("Total", column)]
    qas += _both("reasoning/table_column", f"What is the total of column {name} in the table?", steps,
                 sum(column), cot_suffix)
    r = rng.randrange(len(scene.rows))
    row = list(scene.cells[r])
    steps = [f"Row {scene.rows[r]}: " + ", ".join(f"{c} {v}" for c, v in zip(scene.columns, row)) + ".",
             _sum_line("Total", row)]
    qas += _both("reasoning/table_row", f"What is the total of row {scene.rows[r]} in the table?", steps,
                 sum(row), cot_suffix)
    return qas
