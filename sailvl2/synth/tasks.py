"""Question / answer generators for the perception families: each is ``(scene, rng) -> list[QA]``.

A generator returns at most one QA per subtask (one randomly chosen instance), so the writer can pick
subtasks uniformly instead of favouring whichever subtask happens to have the most instances. A subtask is
left out whenever its question would be ambiguous (a colour asked of a kind that occurs twice, "what is
above X" with two shapes above X, a largest category that ties), so every stored answer is unique.

Each QA also names the regions its answer depends on (``focus``: pixel boxes of the shapes or text asked
about), which the writer stores as the record's ``focus`` for focus supervision (training/focus.py).

Short answers are the replies themselves (``"3"``, ``"red"``, ``"yes"``): a nano model learns a consistent
format quickly and exact-match scoring stays trivial.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..answers import format_box
from .charts import ChartScene, TableScene
from .scene import COLOURS, KINDS, Shape, ShapeScene, TextScene, plural, position_name

__all__ = ["QA", "chart_qas", "count_qa", "grounding_qas", "multi_image_qas", "ocr_qas", "several_count_qa",
           "shapes_qas", "table_qas", "unique_shapes"]


@dataclass(frozen=True)
class QA:
    task: str  # "family/subtask"
    question: str  # without <image> placeholders; the writer adds them
    reply: str  # the gpt turn
    answer: Any  # the short ground truth used for scoring (a string; 4 ints for grounding)
    kind: str = "direct"
    extra: dict[str, Any] = field(default_factory=dict)
    # (image index, x1, y1, x2, y2) pixel boxes, or (..., subject) where a question names two things: the box's
    # subject then picks the supervised head; (image index,) alone: a count's sink; (image index, subject): the
    # start token as that subject's target (training/focus.py)
    focus: tuple[tuple[int, ...], ...] = ()


def _boxes(shapes: list[Shape] | tuple[Shape, ...], image: int = 0) -> tuple[tuple[int, ...], ...]:
    return tuple((image, *shape.bbox()) for shape in shapes)


def _counted_boxes(shapes: list[Shape], image: int = 0) -> tuple[tuple[int, ...], ...]:
    """The focus of a count or an existence question: the shapes that match and the image's start token (the
    sink), over which the loss spreads the head's attention evenly, so the sink's part of its output,
    1 / (count + 1), tells how many match, and all of it that none does (training/focus.py). With the shapes
    alone one and two red shapes gave the same mean and the model answered "1" for both (session 16); with sinks
    on the counts only, existence fell from 89 to 82 % (session 17)."""
    return (*_boxes(shapes, image), (image,))


def unique_shapes(scene: ShapeScene) -> list[Shape]:
    """Shapes whose "colour kind" name picks out exactly one shape (the only ones we may ask about)."""
    names = Counter(s.name for s in scene.shapes)
    return [s for s in scene.shapes if names[s.name] == 1]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _direct(task: str, question: str, answer: str, focus: tuple = ()) -> QA:
    return QA(task, question, answer, answer, focus=focus)


# Relation words: (test that `a` is <word> `b`, in grid cells). Only asked across different columns (left /
# right) or rows (above / below), where the cells make the answer unambiguous.
_RELATIONS = {
    "left of": lambda a, b: a.col < b.col,
    "right of": lambda a, b: a.col > b.col,
    "above": lambda a, b: a.row < b.row,
    "below": lambda a, b: a.row > b.row,
}
_AXIS = {"left of": "col", "right of": "col", "above": "row", "below": "row"}


def count_qa(scene: ShapeScene, attribute: str, value: str) -> QA:
    """"How many {value} shapes are there?" (attribute "colour") or "How many {value}s are there?" ("kind")."""
    counted = [s for s in scene.shapes if getattr(s, attribute) == value]
    question = f"How many {value} shapes are there?" if attribute == "colour" else \
        f"How many {plural(value, 2)} are there?"
    return _direct(f"shapes/count_{attribute}", question, str(len(counted)), _counted_boxes(counted))


def several_count_qa(scene: ShapeScene, rng: random.Random, attribute: str) -> QA | None:
    """A count of a colour or kind (``attribute``) the scene holds two or more of, or None if it holds none."""
    several = sorted(v for v, n in Counter(getattr(s, attribute) for s in scene.shapes).items() if n >= 2)
    return count_qa(scene, attribute, rng.choice(several)) if several else None


def shapes_qas(scene: ShapeScene, rng: random.Random) -> list[QA]:
    shapes = scene.shapes
    qas = []
    kinds = Counter(s.kind for s in shapes)
    colours = Counter(s.colour for s in shapes)
    # Mostly kinds that are present, sometimes any kind, so "0" is a possible count.
    kind = rng.choice(tuple(kinds)) if rng.random() < 0.7 else rng.choice(KINDS)
    qas.append(count_qa(scene, "kind", kind))
    qas.append(_direct("shapes/count_all", "How many shapes are there?", str(len(shapes)),
                       _counted_boxes(list(shapes))))
    colour = rng.choice(tuple(colours)) if rng.random() < 0.7 else rng.choice(tuple(COLOURS))
    qas.append(count_qa(scene, "colour", colour))
    lone_kinds = [k for k in kinds if kinds[k] == 1]
    if lone_kinds:
        kind = rng.choice(lone_kinds)
        target = next(s for s in shapes if s.kind == kind)
        qas.append(_direct("shapes/colour", f"What colour is the {kind}?", target.colour, _boxes([target])))
    lone_colours = [c for c in colours if colours[c] == 1]
    if lone_colours:
        colour = rng.choice(lone_colours)
        target = next(s for s in shapes if s.colour == colour)
        qas.append(_direct("shapes/kind", f"What shape is {colour}?", target.kind, _boxes([target])))
    named = unique_shapes(scene)
    if named:
        target = rng.choice(named)
        qas.append(_direct("shapes/size", f"What size is the {target.name}?", target.size, _boxes([target])))
        target = rng.choice(named)
        qas.append(_direct("shapes/position", f"Where is the {target.name}?", position_name(target.row, target.col),
                           _boxes([target])))
    # Existence, balanced: half the time a present (colour, kind), else one that is absent.
    present = [(s.colour, s.kind) for s in shapes]
    if rng.random() < 0.5:
        colour, kind = rng.choice(present)
    else:
        absent = [(c, k) for c in COLOURS for k in KINDS if (c, k) not in present]
        colour, kind = rng.choice(absent)
    qas.append(_direct("shapes/exists", f"Is there a {colour} {kind}?", _yes_no((colour, kind) in present),
                       _counted_boxes([s for s in shapes if (s.colour, s.kind) == (colour, kind)])))
    qas += _relation_qas(named, list(shapes), rng)
    return qas


def _relation_qas(named: list[Shape], shapes: list[Shape], rng: random.Random) -> list[QA]:
    qas = []
    relation = rng.choice(tuple(_RELATIONS))
    axis = _AXIS[relation]
    pairs = [(a, b) for a in named for b in named if getattr(a, axis) != getattr(b, axis)]
    if pairs:
        a, b = rng.choice(pairs)
        holds = _RELATIONS[relation](a, b)
        qas.append(_direct("shapes/relation", f"Is the {a.name} {relation} the {b.name}?", _yes_no(holds),
                           _relation_focus(a, b, holds)))
    relation = rng.choice(tuple(_RELATIONS))
    options = []
    for anchor in named:
        others = [s for s in shapes if s is not anchor and _RELATIONS[relation](s, anchor)]
        if len(others) == 1:
            options.append((anchor, others[0]))
    if options:
        anchor, other = rng.choice(options)
        qas.append(_direct("shapes/which", f"What shape is {relation} the {anchor.name}?", other.name,
                           (*_boxes([anchor, other]), (0, *other.bbox(), REGION_SUBJECT))))
    return qas


# The subject of a spatial question's second lookup, which the nano recipes supervise in a later layer than the
# first (focus.subject_heads; training/focus.py): with it, the multi-task stage answers 98.6 % of held-out relation
# and 96.2 % of which questions, against 45-50 % and 54-62 % without (docs/nano-sessions.md, session 21).
REGION_SUBJECT = 2


def _relation_focus(a: Shape, b: Shape, holds: bool) -> tuple[tuple[int, ...], ...]:
    """"Is A <relation> B?": A for the first head, B for the second (their positions), and for the later layer's
    head B when the relation holds (B lies where A's position and the relation word point), else the image's
    start token (nothing there: the sink), so that head's output says yes or no. Untagged, both first heads
    looked at B and relation stayed at chance; tagged without the later head, too (sessions 17 and 21)."""
    region = (0, *b.bbox(), REGION_SUBJECT) if holds else (0, REGION_SUBJECT)
    return (0, *a.bbox(), 0), (0, *b.bbox(), 1), region


def grounding_qas(scene: ShapeScene, rng: random.Random) -> list[QA]:
    """Boxes of uniquely named shapes, both ways: name -> box and box -> name."""
    named = unique_shapes(scene)
    if not named:
        return []
    size = (scene.width, scene.height)
    target = rng.choice(named)
    box = format_box(target.bbox(), size)
    ints = [int(v) for v in box[len("<box>[["):-len("]]</box>")].split(", ")]
    locate = QA("grounding/locate", f"Where is the {target.name}? Answer with its bounding box.",
                f"<ref>{target.name}</ref>{box}", ints, focus=_boxes([target]))
    target = rng.choice(named)
    box = format_box(target.bbox(), size)
    describe = _direct("grounding/describe", f"What shape is in the region {box}?", target.name, _boxes([target]))
    return [locate, describe]


def ocr_qas(scene: TextScene, rng: random.Random) -> list[QA]:
    focus = ((0, *scene.text_box()),)
    if scene.category == "number":
        question = rng.choice(("What number is shown?", "What number is written in the image?"))
        return [_direct("ocr/number", question, scene.text, focus)]
    question = rng.choice(("What is written here?", "What text is shown in the image?"))
    return [_direct(f"ocr/{scene.category}", question, scene.text, focus)]


def _tagged(boxes: list[tuple[int, ...]]) -> tuple[tuple[int, ...], ...]:
    """Two or more boxes, each its own subject (in the question's order): one supervised head on each. A chart
    comparison then reads 87 % where one target set for the pair gave 40 % (run 33 against run 32, 30 held-out
    questions). The shapes' relation questions tag their two shapes too, with a third subject for the second lookup
    (`_relation_focus`); tagged without it (runs 33 and 39) they stayed at chance (docs/nano-sessions.md, sessions
    16, 17 and 21)."""
    return tuple((*box, subject) for subject, box in enumerate(boxes)) if len(boxes) > 1 else tuple(boxes)


def _chart_focus(scene: ChartScene, *categories: int) -> tuple[tuple[int, ...], ...]:
    """Focus boxes of a slot-layout chart's categories (each one LLM token holding label and value); none in
    the free layout, whose text the suite does not track. For "largest" / "smallest" the box is the answer's
    own category: the supervised head learns to find the extreme value's token, the attention pattern that
    picks a maximum. Without these boxes run 27 (shipped until session 16) read every chart value, yet chose the
    largest category at 25 %; with them run 34 chooses it at 93.5 % (docs/nano-sessions.md, session 16)."""
    return _tagged([(0, *scene.category_box(k)) for k in categories]) if scene.slot else ()


def chart_qas(scene: ChartScene, rng: random.Random) -> list[QA]:
    labels, values = scene.labels, scene.values
    qas = []
    k = rng.randrange(len(labels))
    qas.append(_direct("charts/value", f"What is the value of {labels[k]}?", str(values[k]), _chart_focus(scene, k)))
    for word, best in (("largest", max(values)), ("smallest", min(values))):
        if values.count(best) == 1:
            qas.append(_direct(f"charts/{word}", f"Which category has the {word} value?",
                               labels[values.index(best)], _chart_focus(scene, values.index(best))))
    unequal = [(i, j) for i in range(len(labels)) for j in range(len(labels)) if values[i] != values[j]]
    if unequal:
        i, j = rng.choice(unequal)
        qas.append(_direct("charts/compare", f"Is the value of {labels[i]} greater than the value of {labels[j]}?",
                           _yes_no(values[i] > values[j]), _chart_focus(scene, i, j)))
    qas.append(_direct("charts/count", "How many categories are there?", str(len(labels))))
    qas.append(_direct("charts/type", "What type of chart is this?", scene.chart))
    return qas


def _table_focus(scene: TableScene, *blocks: tuple[int, int]) -> tuple[tuple[int, ...], ...]:
    """Focus boxes of slot-layout table blocks (TableScene.block_box: names counted); none in the free layout."""
    return _tagged([(0, *scene.block_box(row, column)) for row, column in blocks]) if scene.slot else ()


def table_qas(scene: TableScene, rng: random.Random) -> list[QA]:
    qas = []
    r, c = rng.randrange(len(scene.rows)), rng.randrange(len(scene.columns))
    qas.append(_direct("charts/table_cell", f"In the table, what is the value in row {scene.rows[r]} and column "
                                      f"{scene.columns[c]}?", str(scene.cells[r][c]),
                       _table_focus(scene, (r + 1, c + 1))))
    c = rng.randrange(len(scene.columns))
    column = [row[c] for row in scene.cells]
    if column.count(max(column)) == 1:
        best = column.index(max(column))  # the answer is the row's name, in the block left of the value
        qas.append(_direct("charts/table_argmax", f"Which row has the largest value in column {scene.columns[c]}?",
                           scene.rows[best], _table_focus(scene, (best + 1, c + 1), (best + 1, 0))))
    qas.append(_direct("charts/table_rows", "How many rows of data does the table have?", str(len(scene.rows))))
    return qas


_ORDINAL_REPLY = {"first": "The first image.", "second": "The second image.", "same": "They have the same number."}


def multi_image_qas(scenes: tuple[ShapeScene, ShapeScene], rng: random.Random) -> list[QA]:
    first, second = scenes
    qas = []
    present = sorted({s.kind for sc in scenes for s in sc.shapes}, key=KINDS.index)
    kind = rng.choice(present)
    n1, n2 = (sum(s.kind == kind for s in sc.shapes) for sc in scenes)
    verdict = "first" if n1 > n2 else "second" if n2 > n1 else "same"
    qas.append(QA("multi_image/compare_kind", f"Which image has more {plural(kind, 2)}?",
                  _ORDINAL_REPLY[verdict], verdict,
                  focus=_both(scenes, lambda s: s.kind == kind)))
    n1, n2 = len(first.shapes), len(second.shapes)
    verdict = "first" if n1 > n2 else "second" if n2 > n1 else "same"
    qas.append(QA("multi_image/compare_all", "Which image has more shapes?", _ORDINAL_REPLY[verdict], verdict,
                  focus=_both(scenes, lambda s: True)))
    which = rng.choice(("first", "second"))
    scene = first if which == "first" else second
    qas.append(_direct("multi_image/count", f"How many shapes are in the {which} image?", str(len(scene.shapes)),
                       _boxes(scene.shapes, 0 if which == "first" else 1)))
    # Balanced: half the time a colour both images share (when there is one), else one that is missing
    # from at least one of them.
    shared = [c for c in COLOURS if all(any(s.colour == c for s in sc.shapes) for sc in scenes)]
    colour = rng.choice(shared if shared and rng.random() < 0.5 else [c for c in COLOURS if c not in shared])
    both = colour in shared
    qas.append(_direct("multi_image/both", f"Do both images contain a {colour} shape?", _yes_no(both),
                       _both(scenes, lambda s: s.colour == colour)))
    return qas


def _both(scenes: tuple[ShapeScene, ShapeScene], keep: Any) -> tuple[tuple[int, int, int, int, int], ...]:
    """Boxes of the shapes satisfying `keep` in either image, tagged with their image index."""
    return tuple(box for index, scene in enumerate(scenes)
                 for box in _boxes([s for s in scene.shapes if keep(s)], index))
