"""An independent checker for a generated suite: recomputes every stored answer from the stored scene.

Nothing here calls the generator (``scene``, ``tasks``, ``reasoning``, ``captions``, ``charts``,
``writer``): questions are parsed back with regular expressions, answers recomputed from the scene
description with separate code, spatial relations decided from pixel geometry rather than grid cells,
grounding boxes measured on the rendered PNG, and captions parsed back into facts. A bug in a generator
therefore shows up as a disagreement instead of being reproduced.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .checker_captions import check_caption  # parse-back of captions, kept apart to stay readable
from .checker_charts import chart_answer, check_chart_focus
from .checker_pixels import Mismatch, box_ok, expect, extent, pixel_boxes
from .checker_pixels import match_question as _match

__all__ = ["CheckReport", "check_record", "check_suite", "scene_signature"]

_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
_SUFFIX_START = "You FIRST think"  # the release's thinking suffix, appended to cot questions
_ORDINAL = {"first": "The first image.", "second": "The second image.", "same": "They have the same number."}


def scene_signature(scene: dict[str, Any]) -> list[tuple]:
    """The identity of each image's scene (several for multi-image records), for split disjointness."""
    kind = scene["type"]
    if kind == "multi":
        return [sig for sub in scene["images"] for sig in scene_signature(sub)]
    if kind == "shapes":
        return [("shapes", tuple(sorted((s["kind"], s["colour"], s["size"], s["row"], s["col"])
                                        for s in scene["shapes"])))]
    if kind == "text":
        return [("text", word) for word in scene["text"].lower().split()]
    if kind == "chart":
        return [("chart", scene["chart"], tuple(scene["labels"]), tuple(scene["values"]))]
    return [("table", tuple(scene["columns"]), tuple(scene["rows"]), tuple(tuple(r) for r in scene["cells"]))]


# ------------------------------------------------------------------------------------------- geometry


def _place(row: int, col: int) -> str:
    if row == 1 and col == 1:
        return "centre"
    return f"{_ROWS[row]} {'centre' if col == 1 else _COLS[col]}"


def _relation(rel: str, a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """True / False when ``a`` is clearly (not) <rel> ``b`` in pixels, None when the extents overlap."""
    ax1, ay1, ax2, ay2 = extent(a)
    bx1, by1, bx2, by2 = extent(b)
    if rel in ("left of", "right of"):
        if ax2 <= bx1:
            return rel == "left of"
        if bx2 <= ax1:
            return rel == "right of"
        return None
    if ay2 <= by1:
        return rel == "above"
    if by2 <= ay1:
        return rel == "below"
    return None


def _one(shapes: list[dict[str, Any]], what: str) -> dict[str, Any]:
    expect(len(shapes) == 1, f"{what} picks {len(shapes)} shapes, not exactly one")
    return shapes[0]


def _named(scene: dict[str, Any], colour: str, kind: str) -> dict[str, Any]:
    return _one([s for s in scene["shapes"] if s["colour"] == colour and s["kind"] == kind], f"{colour} {kind}")


def _count(scene: dict[str, Any], **where: str) -> int:
    return sum(all(s[k] == v for k, v in where.items()) for s in scene["shapes"])


def _ordinal(n1: int, n2: int) -> str:
    return "first" if n1 > n2 else "second" if n2 > n1 else "same"


def _shape_answer(task: str, q: str, scene: dict[str, Any], boxes: list | None) -> Any:
    shapes = scene["shapes"]
    if task == "shapes/count_all":
        _match(r"How many shapes are there\?", q)
        return str(len(shapes))
    if task == "shapes/count_kind":
        return str(_count(scene, kind=_match(r"How many (\w+)s are there\?", q)[0]))
    if task == "shapes/count_colour":
        return str(_count(scene, colour=_match(r"How many (\w+) shapes are there\?", q)[0]))
    if task == "shapes/colour":
        kind = _match(r"What colour is the (\w+)\?", q)[0]
        return _one([s for s in shapes if s["kind"] == kind], kind)["colour"]
    if task == "shapes/kind":
        colour = _match(r"What shape is (\w+)\?", q)[0]
        return _one([s for s in shapes if s["colour"] == colour], colour)["kind"]
    if task == "shapes/size":
        return _named(scene, *_match(r"What size is the (\w+) (\w+)\?", q))["size"]
    if task == "shapes/position":
        s = _named(scene, *_match(r"Where is the (\w+) (\w+)\?", q))
        col, row = s["cx"] * 3 // scene["width"], s["cy"] * 3 // scene["height"]  # from pixels, not cells
        expect((row, col) == (s["row"], s["col"]), "shape centre outside its cell")
        return _place(row, col)
    if task == "shapes/exists":
        colour, kind = _match(r"Is there a (\w+) (\w+)\?", q)
        return "yes" if _count(scene, colour=colour, kind=kind) else "no"
    if task == "shapes/relation":
        c1, k1, rel, c2, k2 = _match(r"Is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", q)
        verdict = _relation(rel, _named(scene, c1, k1), _named(scene, c2, k2))
        expect(verdict is not None, f"relation {rel!r} is ambiguous in pixels")
        return "yes" if verdict else "no"
    if task == "shapes/which":
        rel, colour, kind = _match(r"What shape is (left of|right of|above|below) the (\w+) (\w+)\?", q)
        anchor = _named(scene, colour, kind)
        others = [s for s in shapes if s is not anchor]
        hit = _one([s for s in others if _relation(rel, s, anchor)], f"shape {rel} the anchor")
        return f"{hit['colour']} {hit['kind']}"
    if task in ("grounding/locate", "grounding/describe"):
        return _grounding_answer(task, q, scene, boxes)
    raise Mismatch(f"unknown task {task!r}")


def _grounding_answer(task: str, q: str, scene: dict[str, Any], boxes: list | None) -> Any:
    """locate: the named shape's true box; describe: the name of the shape whose box the region is."""
    w, h = scene["width"], scene["height"]
    truth = boxes or [extent(s) for s in scene["shapes"]]
    if task == "grounding/locate":
        s = _named(scene, *_match(r"Where is the (\w+) (\w+)\? Answer with its bounding box\.", q))
        return truth[scene["shapes"].index(s)]
    b = [int(v) for v in _match(r"What shape is in the region <box>\[\[(\d+), (\d+), (\d+), (\d+)\]\]</box>\?", q)]
    region = (b[0] * w / 1000, b[1] * h / 1000, b[2] * w / 1000, b[3] * h / 1000)
    hit = _one([s for s, t in zip(scene["shapes"], truth) if box_ok(region, t, boxes is not None)], "the region")
    return f"{hit['colour']} {hit['kind']}"


def _reasoning_answer(q: str, scene: dict[str, Any]) -> int:
    if scene["type"] == "shapes":
        if m := re.fullmatch(r"How many (\w+)s and (\w+)s are there in total\?", q):
            return _count(scene, kind=m[1]) + _count(scene, kind=m[2])
        if m := re.fullmatch(r"How many more (\w+) shapes than (\w+) shapes are there\?", q):
            more, fewer = _count(scene, colour=m[1]), _count(scene, colour=m[2])
            expect(more > fewer, "'how many more' asked with fewer")
            return more - fewer
        colour = _match(r"How many shapes are not (\w+)\?", q)[0]
        return len(scene["shapes"]) - _count(scene, colour=colour)
    if scene["type"] == "chart":
        table = dict(zip(scene["labels"], scene["values"]))
        if m := re.fullmatch(r"What is the sum of the values of (.+) and (.+)\?", q):
            return table[m[1]] + table[m[2]]
        if re.fullmatch(r"What is the difference between the largest and the smallest value\?", q):
            return max(table.values()) - min(table.values())
        _match(r"What is the total of all the values\?", q)
        return sum(table.values())
    if m := re.fullmatch(r"What is the total of column (.+) in the table\?", q):
        c = scene["columns"].index(m[1])
        return sum(row[c] for row in scene["cells"])
    return sum(scene["cells"][scene["rows"].index(_match(r"What is the total of row (.+) in the table\?", q)[0])])


def _check_chain(reply: str, expected: int) -> None:
    m = re.fullmatch(r"<think>\n(.+)\n</think>\n\\boxed\{(-?\d+)\}", reply, flags=re.S)
    expect(m is not None, "cot reply is not <think>\\n...\\n</think>\\n\\boxed{N}")
    expect(int(m[2]) == expected, f"boxed {m[2]} != {expected}")
    results = []
    for eq in re.finditer(r"(\d+(?: [+-] \d+)+) = (\d+)", m[1]):  # every step's arithmetic must hold
        terms = eq[1].split(" ")
        value = int(terms[0])
        for op, n in zip(terms[1::2], terms[2::2]):
            value = value + int(n) if op == "+" else value - int(n)
        expect(value == int(eq[2]), f"wrong step {eq[0]!r}")
        results.append(value)
    expect(bool(results) and results[-1] == expected, "the chain's last step does not give the answer")


# ------------------------------------------------------------------------------------------- records


def _question(record: dict[str, Any]) -> str:
    text = record["conversations"][0]["value"]
    text = re.sub(r"^(?:Image-\d+: <image>\n)+", "", text)
    text = text[len("<image>\n"):] if text.startswith("<image>\n") else text
    if record.get("kind") == "cot":
        expect(_SUFFIX_START in text, "cot question without the thinking suffix")
        text = text[: text.index(_SUFFIX_START)]
    return text


def check_record(record: dict[str, Any], image_root: str | os.PathLike | None = None,
                 cache: dict | None = None) -> list[str]:
    """Reasons ``record`` is wrong ([] when every stored answer agrees with the recomputed one).

    With ``image_root`` the images are loaded and checked against the scene too. ``cache`` (any dict,
    reused across calls) keeps the pixel results of images shared by several records.
    """
    try:
        _check(record, image_root, {} if cache is None else cache)
    except (Mismatch, KeyError, ValueError, IndexError, TypeError) as exc:
        return [f"{record.get('id')}: {record.get('task')}: {type(exc).__name__}: {exc}"]
    return []


def _check(record: dict[str, Any], image_root: str | os.PathLike | None, cache: dict) -> None:
    if record["task"].startswith("focus/"):  # warm-up items: the same checks as the family they reuse
        record = dict(record, task=record["task"][len("focus/"):])
    task, scene, reply, answer = record["task"], record["scene"], record["conversations"][-1]["value"], record["answer"]
    family = task.split("/")[0]
    q = _question(record)
    images = record["image"] if isinstance(record["image"], list) else [record["image"]]
    scenes = scene["images"] if scene["type"] == "multi" else [scene]
    expect(len(scenes) == len(images) == record["conversations"][0]["value"].count("<image>"),
           "images, scenes and placeholders differ in number")
    boxes = None
    if image_root is not None:
        measured = [pixel_boxes(os.path.join(image_root, p), sub, cache) for p, sub in zip(images, scenes)]
        boxes = measured[0] if scene["type"] == "shapes" else None
    if family == "captions":
        check_caption(task, scene, reply)
        expect(answer == reply, "caption answer differs from the reply")
    elif family == "reasoning":
        expected = _reasoning_answer(q, scene)
        expect(answer == str(expected), f"answer {answer!r} != {expected}")
        if record["kind"] == "cot":
            _check_chain(reply, expected)
        else:
            expect(reply == str(expected), f"direct reply {reply!r} != {expected}")
    elif task == "grounding/locate":
        truth = _grounding_answer(task, q, scene, boxes)
        w, h = scene["width"], scene["height"]
        pixel = (answer[0] * w / 1000, answer[1] * h / 1000, answer[2] * w / 1000, answer[3] * h / 1000)
        expect(box_ok(pixel, truth, boxes is not None), f"box {answer} is not the shape's box {truth}")
        name = q[len("Where is the "): q.index("?")]
        expect(reply == f"<ref>{name}</ref><box>[[{', '.join(str(v) for v in answer)}]]</box>", "grounding reply")
    elif family == "multi_image":
        first, second = scenes
        if m := re.fullmatch(r"Which image has more (\w+)s\?", q):
            if m[1] == "shape":
                expected = _ordinal(len(first["shapes"]), len(second["shapes"]))
            else:
                expected = _ordinal(_count(first, kind=m[1]), _count(second, kind=m[1]))
            expect(reply == _ORDINAL[expected], "multi-image reply")
        elif m := re.fullmatch(r"How many shapes are in the (first|second) image\?", q):
            expected = str(len((first if m[1] == "first" else second)["shapes"]))
            expect(reply == expected, "multi-image reply")
        else:
            colour = _match(r"Do both images contain a (\w+) shape\?", q)[0]
            expected = "yes" if _count(first, colour=colour) and _count(second, colour=colour) else "no"
            expect(reply == expected, "multi-image reply")
        expect(answer == expected, f"answer {answer!r} != {expected!r}")
    elif family == "ocr":
        expect(answer == reply == scene["text"], "OCR answer differs from the scene's text")
        number = bool(re.fullmatch(r"\d+", scene["text"]))
        expect(number == (task == "ocr/number") and (scene["category"] == "number") == number, "OCR category")
        expect(q in (("What number is shown?", "What number is written in the image?") if number else
                      ("What is written here?", "What text is shown in the image?")), "OCR question")
    else:
        expected = (chart_answer(task, q, scene) if family == "charts"
                    else _shape_answer(task, q, scene, boxes))
        expect(answer == reply == expected, f"answer {answer!r} / reply {reply!r} != {expected!r}")
    if family == "charts":
        check_chart_focus(record, task, q, scene)
    elif family not in ("captions", "reasoning"):
        _check_focus(record, task, q, scenes)


def _focus_subjects(task: str, q: str, scenes: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]] | None:
    """The shapes (image index, shape) a question is about, from the question text: what a focus box must
    cover. None for tasks without shape subjects."""
    def where(index: int, **attrs: str) -> list[tuple[int, dict[str, Any]]]:
        return [(index, s) for s in scenes[index]["shapes"] if all(s[k] == v for k, v in attrs.items())]

    if task in ("shapes/count_all", "multi_image/compare_all"):
        return [pair for index in range(len(scenes)) for pair in where(index)]
    if task == "shapes/count_kind":
        return where(0, kind=_match(r"How many (\w+)s are there\?", q)[0])
    if task == "shapes/count_colour":
        return where(0, colour=_match(r"How many (\w+) shapes are there\?", q)[0])
    if task == "shapes/colour":
        return where(0, kind=_match(r"What colour is the (\w+)\?", q)[0])
    if task == "shapes/kind":
        return where(0, colour=_match(r"What shape is (\w+)\?", q)[0])
    if task in ("shapes/size", "shapes/position", "shapes/exists", "grounding/locate"):
        colour, kind = _match(r"(?:What size is the|Where is the|Is there a) (\w+) (\w+)\?.*", q)
        return where(0, colour=colour, kind=kind)
    if task == "shapes/relation":
        c1, k1, _, c2, k2 = _match(r"Is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", q)
        return where(0, colour=c1, kind=k1) + where(0, colour=c2, kind=k2)
    if task == "shapes/which":
        rel, colour, kind = _match(r"What shape is (left of|right of|above|below) the (\w+) (\w+)\?", q)
        anchor = _named(scenes[0], colour, kind)
        return [(0, anchor)] + [(0, s) for s in scenes[0]["shapes"] if s is not anchor and _relation(rel, s, anchor)]
    if task == "grounding/describe":
        region = r"What shape is in the region <box>\[\[(\d+), (\d+), (\d+), (\d+)\]\]</box>\?"
        x1, y1, x2, y2 = (int(v) for v in _match(region, q))
        w, h = scenes[0]["width"], scenes[0]["height"]
        return [(0, s) for s in scenes[0]["shapes"]
                if x1 * w / 1000 <= s["cx"] <= x2 * w / 1000 and y1 * h / 1000 <= s["cy"] <= y2 * h / 1000]
    if task == "multi_image/compare_kind":
        kind = _match(r"Which image has more (\w+)s\?", q)[0]
        return where(0, kind=kind) + where(1, kind=kind)
    if task == "multi_image/count":
        return where(0 if _match(r"How many shapes are in the (first|second) image\?", q)[0] == "first" else 1)
    if task == "multi_image/both":
        colour = _match(r"Do both images contain a (\w+) shape\?", q)[0]
        return where(0, colour=colour) + where(1, colour=colour)
    return None


_COUNTED = ("shapes/count_all", "shapes/count_kind", "shapes/count_colour", "shapes/exists")
# The subject of a spatial question's second lookup (restated here, not imported from the generator).
_SECOND_LOOKUP = 2


def _key(shape: dict[str, Any]) -> tuple[int, int]:
    return shape["row"], shape["col"]


def _shape_in(box: list[Any], scenes: list[dict[str, Any]]) -> dict[str, Any]:
    index, x1, y1, x2, y2 = box[:5]
    w, h = scenes[index]["width"], scenes[index]["height"]
    inside = [s for s in scenes[index]["shapes"]
              if x1 * w / 1000 <= s["cx"] <= x2 * w / 1000 and y1 * h / 1000 <= s["cy"] <= y2 * h / 1000]
    expect(len(inside) == 1, f"focus box {[x1, y1, x2, y2]} holds {len(inside)} shape centres, not one")
    return inside[0]


def _check_relation_focus(q: str, scenes: list[dict[str, Any]], boxes: list[list[Any]]) -> None:
    """"Is A <rel> B?": A tagged 0, B tagged 1, and the second lookup's subject on B when the relation holds (by
    the shapes' pixel extents), else on the image's start token ([0, subject])."""
    c1, k1, rel, c2, k2 = _match(r"Is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", q)
    a, b = _named(scenes[0], c1, k1), _named(scenes[0], c2, k2)
    expect(len(boxes) == 3 and [len(box) for box in boxes[:2]] == [6, 6] and [box[-1] for box in boxes] == [0, 1, 2],
           f"relation focus must be A tagged 0, B tagged 1 and a third entry tagged {_SECOND_LOOKUP}, got {boxes}")
    expect(_key(_shape_in(boxes[0], scenes)) == _key(a) and _key(_shape_in(boxes[1], scenes)) == _key(b),
           f"relation focus boxes {boxes[:2]} are not A's and B's")
    holds = _relation(rel, a, b)
    third = list(boxes[2])
    expect(third == [0, _SECOND_LOOKUP] if not holds else len(third) == 6 and _key(_shape_in(third, scenes)) == _key(b),
           f"relation ({'holds' if holds else 'does not hold'}): the second lookup targets "
           f"{'B' if holds else 'the start token [0, 2]'}, got {third}")


def _check_focus(record: dict[str, Any], task: str, q: str, scenes: list[dict[str, Any]]) -> None:
    """A record's focus boxes (0-1000) cover exactly the shapes its question is about, one centre per box;
    an OCR record's box is the text's box."""
    focus = record.get("focus")
    if task.startswith("ocr/"):
        expect(focus is not None and len(focus) == 1 and len(focus[0]) == 1, "an OCR record needs one focus box")
        index, *box = focus[0][0]
        w, h = scenes[index]["width"], scenes[index]["height"]
        text = scenes[index]["box"]
        pixels = [v * (w if k % 2 == 0 else h) / 1000 for k, v in enumerate(box)]
        expect(all(abs(p - t) <= 1 for p, t in zip(pixels, text)), f"OCR focus box {box} is not the text box {text}")
        return
    subjects = _focus_subjects(task, q, scenes)
    if subjects is None:
        expect(focus is None, f"{task} records carry no focus boxes")
        return
    boxes = focus[0] if focus else []
    expect(focus is None or len(focus) == 1, "a single-turn record has one focus entry")
    # A shape count or existence question lists its image's start token ([0], the sink of training/focus.py's
    # spread loss) once; no other question does.
    sinks = [list(box) for box in boxes if len(box) == 1]
    expect(sinks == ([[0]] if task in _COUNTED else []),
           f"{task}: focus sinks {sinks}; a shape count or existence question has [0] once, other questions none")
    boxes = [box for box in boxes if len(box) != 1]
    if task == "shapes/relation":
        _check_relation_focus(q, scenes, boxes)
        return
    if task == "shapes/which":  # the answer shape once more, as the second lookup's subject
        second = [box for box in boxes if len(box) == 6]
        expect(len(second) == 1 and second[0][5] == _SECOND_LOOKUP and len(subjects) == 2
               and _key(_shape_in(second[0], scenes)) == _key(subjects[1][1]),
               f"which: the answer shape tagged {_SECOND_LOOKUP} must follow the untagged boxes, got {boxes}")
        boxes = [box for box in boxes if len(box) != 6]
    covered = []
    for box in boxes:
        # untagged here; chart pairs (checker_charts) and the spatial questions (above) carry subjects
        expect(len(box) == 5, f"{task} focus boxes carry no subject tag")
        covered.append((box[0], _shape_in(box, scenes)))
    key = lambda pair: (pair[0], pair[1]["row"], pair[1]["col"])  # noqa: E731
    expect(sorted(map(key, covered)) == sorted(map(key, subjects)),
           f"focus boxes cover {sorted(map(key, covered))}, the question is about {sorted(map(key, subjects))}")


# ------------------------------------------------------------------------------------------- suites


@dataclass
class CheckReport:
    checked: int = 0
    failures: list[str] = field(default_factory=list)
    tasks: Counter = field(default_factory=Counter)
    shared_scenes: dict[str, int] = field(default_factory=dict)  # "train&test" -> shared signatures
    shared_images: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not any(self.shared_scenes.values()) and not any(self.shared_images.values())


def _check_file(path: str, root: str, signatures: set, digests: set, report: CheckReport, cache: dict,
                pixels: bool, limit: int | None) -> None:
    """Check one JSONL file's records (image paths relative to ``root``) and collect their scene signatures
    and image digests for the disjointness check."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            record = json.loads(line)
            signatures.update(scene_signature(record["scene"]))
            for image_path in record["image"] if isinstance(record["image"], list) else [record["image"]]:
                with open(os.path.join(root, image_path), "rb") as image:
                    digests.add(hashlib.sha256(image.read()).hexdigest())
            if limit is not None and number >= limit:
                continue
            report.checked += 1
            report.tasks[record["task"]] += 1
            report.failures += check_record(record, root if pixels else None, cache)


def check_suite(out_dir: str | os.PathLike, splits: Iterable[str] | None = None, pixels: bool = True,
                limit: int | None = None) -> CheckReport:
    """Check every record (or the first ``limit`` per split and file) and the disjointness of all splits; the
    train split includes its extra streams (``number_images``, ``letter_images``, ``chart_images``,
    ``shape_images``)."""
    out_dir = os.fspath(out_dir)
    with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    report = CheckReport()
    cache: dict = {}
    signatures: dict[str, set] = {}
    digests: dict[str, set] = {}
    for split in splits or manifest["splits"]:
        signatures[split], digests[split] = set(), set()
        files = [(os.path.join(out_dir, f"{split}.jsonl"), out_dir)]
        for stream, argument in (("ocr-numbers", "number_images"), ("ocr-letters", "letter_images"),
                                 ("charts-read", "chart_images"), ("shapes-more", "shape_images")):
            if split == "train" and manifest.get(argument):  # the train-only reading streams (writer)
                families = os.path.join(out_dir, "families")
                files.append((os.path.join(families, f"train-{stream}.jsonl"), families))
        for path, root in files:
            _check_file(path, root, signatures[split], digests[split], report, cache, pixels, limit)
    names = sorted(signatures)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            report.shared_scenes[f"{a}&{b}"] = len(signatures[a] & signatures[b])
            report.shared_images[f"{a}&{b}"] = len(digests[a] & digests[b])
    return report
