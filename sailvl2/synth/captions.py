"""Captions for alignment pre-training: a detailed one (what is where: colours, kinds, sizes, counts,
text, values) and a brief one, for every scene type.

Captions follow a fixed grammar (one sentence per shape, in reading order), so the independent checker can
parse them back into facts and compare those with the scene.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .charts import ChartScene, TableScene
from .scene import KINDS, ShapeScene, TextScene, plural, position_name
from .tasks import QA

__all__ = ["caption_qas", "detailed_caption", "brief_caption"]

_DETAILED = ("Describe the image in detail.", "Give a detailed description of the image.")
_BRIEF = ("Describe the image briefly.", "What does the image show? Answer in one sentence.")
_TEXT_NOUNS = {"word": "word", "number": "number", "phrase": "words"}


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def detailed_caption(scene: ShapeScene | TextScene | ChartScene | TableScene) -> str:
    if isinstance(scene, ShapeScene):
        n = len(scene.shapes)
        counts = [f"{c} {plural(k, c)}" for k in KINDS if (c := sum(s.kind == k for s in scene.shapes))]
        lines = [f"The image shows {n} {plural('shape', n)} on a {scene.background} background: {_join(counts)}."]
        for s in sorted(scene.shapes, key=lambda s: (s.row, s.col)):  # reading order
            lines.append(f"A {s.size} {s.colour} {s.kind} is at the {position_name(s.row, s.col)}.")
        return " ".join(lines)
    if isinstance(scene, TextScene):
        _, y1, _, y2 = scene.text_box()
        third = min(2, max(0, (y1 + y2) * 3 // (2 * scene.height)))
        where = ("top", "middle", "bottom")[third]
        return (f'The image shows the {_TEXT_NOUNS[scene.category]} "{scene.text}" written in {scene.colour} '
                f"on a {scene.background} background, near the {where} of the image.")
    if isinstance(scene, ChartScene):
        values = scene.values
        pairs = _join([f"{l} is {v}" for l, v in zip(scene.labels, values)])
        text = f"{_chart_head(scene)} with {len(values)} categories: {pairs}."
        if values.count(max(values)) == 1:
            text += f" The largest is {scene.labels[values.index(max(values))]}."
        if values.count(min(values)) == 1:
            text += f" The smallest is {scene.labels[values.index(min(values))]}."
        return text
    rows = [f"{name}: " + ", ".join(f"{c} {v}" for c, v in zip(scene.columns, cells)) + "."
            for name, cells in zip(scene.rows, scene.cells)]
    head = (f"A table with {len(scene.rows)} rows and {len(scene.columns)} columns "
            f"({', '.join(scene.columns)}).")
    return " ".join([head] + rows)


def brief_caption(scene: ShapeScene | TextScene | ChartScene | TableScene) -> str:
    if isinstance(scene, ShapeScene):
        n = len(scene.shapes)
        items = [f"a {s.size} {s.colour} {s.kind}" for s in sorted(scene.shapes, key=lambda s: (s.row, s.col))]
        return f"{n} {plural('shape', n)}: {_join(items)}."
    if isinstance(scene, TextScene):
        return f'The {_TEXT_NOUNS[scene.category]} "{scene.text}".'
    if isinstance(scene, ChartScene):
        return f"{_chart_head(scene)}."
    return f"A table with {len(scene.rows)} rows and {len(scene.columns)} columns."


def _chart_head(scene: ChartScene) -> str:
    # Slot-layout charts have no title (charts.py).
    return f'A {scene.chart} chart titled "{scene.title}"' if scene.title else f"A {scene.chart} chart"


def caption_qas(scene: ShapeScene | TextScene | ChartScene | TableScene, rng: random.Random) -> list[QA]:
    detailed, brief = detailed_caption(scene), brief_caption(scene)
    return [QA("captions/detailed", rng.choice(_DETAILED), detailed, detailed),
            QA("captions/brief", rng.choice(_BRIEF), brief, brief)]
