"""Write a synthetic suite: ``{split}.jsonl``, ``images/{split}/*.png``, per-family files, mixtures, manifest.

Determinism: item ``j`` of split ``s`` is planned from its own RNG, seeded by (version, seed, split, j), and
its family comes from a fixed weighted cycle, so items never depend on each other. Rendering is a pure
function of the scene, so the pool only changes who draws an image, never its bytes.

Disjoint splits by construction: every scene's signatures (for shapes the sorted (kind, colour, size, row,
col) tuple, for text each case-folded word, for charts and tables their labels and values) are hashed into
1000 buckets, and each split owns a fixed range of buckets. A split only keeps scenes whose signatures all
fall in its own buckets (others are redrawn), so no scene (and no OCR word) can occur in two splits,
whatever the sizes or the order of generation, even for suites generated separately with the same seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

from ..answers import box_coordinates
from .captions import caption_qas
from .charts import sample_chart_scene, sample_table_scene
from .reasoning import reasoning_qas
from .scene import sample_focus_shape_scene, sample_letter_scene, sample_shape_scene, sample_text_scene
from .mixtures import SPATIAL_TASKS, write_mixtures
from .tasks import (QA, chart_qas, grounding_qas, multi_image_qas, ocr_qas, several_count_qa, shapes_qas, table_qas,
                    unique_shapes)

__all__ = ["CHART_READ_VERSION", "FAMILIES", "FOCUS_VERSION", "GENERATOR_VERSION", "SPLIT_BUCKETS", "Item",
           "generate_suite", "plan_item", "split_of"]

GENERATOR_VERSION = "2"  # 2: the focus (warm-up) family joined the default cycle
# The chart read-out stream's own version (recorded in the manifest when the stream is there, and compared by the
# ladder's stale-suite check). 2: comparisons besides the read-outs. With every value read (run 24), the model
# still picked the largest / smallest category at 10-50 % from ~300 training questions of each
# (docs/nano-sessions.md, session 14).
CHART_READ_VERSION = 2
# The focus boxes' version (in the manifest; compared by the ladder's stale-suite check). 2 (session 16): slot-layout
# chart and table questions carry focus boxes, and their two-subject questions (a comparison, a column's largest
# row) tag each box with its subject (training/focus.py).
# 3 (session 17): shape counts and existence questions list their image's start token, a count's sink
# (synth/tasks.py, _counted_boxes).
# 4 (session 21): relation and which questions tag their second lookup (tasks.REGION_SUBJECT), and a relation that
# does not hold lists the start token as that subject's target.
FOCUS_VERSION = 4
CHART_READ_COMPARE = 0.4
# Relative frequency of each family's items, and how many subtasks one image serves at most.
FAMILIES: dict[str, tuple[int, int]] = {
    "shapes": (3, 3), "ocr": (2, 1), "charts": (2, 2), "reasoning": (2, 1), "grounding": (2, 2),
    "multi_image": (1, 2), "captions": (2, 2), "focus": (1, 3),
}
# Buckets [start, end) of 1000 owned by each split: fixed, so disjointness never depends on `sizes`.
SPLIT_BUCKETS: dict[str, tuple[int, int]] = {"train": (0, 800), "val": (800, 900), "test": (900, 1000)}
_MAX_DRAWS = 20_000
# Focus scenes hold one shape: only the questions that still make sense (no counts, always "centre").
_FOCUS_SHAPE_TASKS = ("shapes/colour", "shapes/kind", "shapes/size", "shapes/exists")
_IMAGE_TAG = "<image>"


def split_of(signature: tuple) -> str:
    """The split that owns a scene signature (a tuple of strings and ints)."""
    bucket = int.from_bytes(hashlib.sha256(repr(signature).encode()).digest()[:8], "big") % 1000
    return next(name for name, (lo, hi) in SPLIT_BUCKETS.items() if lo <= bucket < hi)


@dataclass(frozen=True)
class Item:
    """One planned image (or image pair) and the QAs asked about it."""

    split: str
    index: int
    family: str
    scenes: tuple[Any, ...]
    qas: tuple[QA, ...]


def _draw(rng: random.Random, split: str, sampler: Callable[[random.Random], Any],
          accept: Callable[[Any], bool] = lambda scene: True) -> Any:
    for _ in range(_MAX_DRAWS):
        scene = sampler(rng)
        if all(split_of(sig) == split for sig in scene.signatures()) and accept(scene):
            return scene
    raise RuntimeError(f"no scene for split {split!r} after {_MAX_DRAWS} draws")


def _pick(rng: random.Random, qas: list[QA], limit: int) -> tuple[QA, ...]:
    """Up to ``limit`` distinct subtasks, uniformly; all QAs of a chosen subtask (cot + direct twins)."""
    tasks = list(dict.fromkeys(qa.task for qa in qas))
    chosen = set(rng.sample(tasks, min(limit, len(tasks))))
    return tuple(qa for qa in qas if qa.task in chosen)


def plan_item(seed: int, split: str, index: int, family: str, size: tuple[int, int] = (224, 224),
              cot_suffix: bool = True, text_slot: int = 0, chart_slot: int = 0) -> Item:
    """Scenes and QAs of item ``index`` of ``split`` (a pure function of its arguments). ``text_slot`` > 0
    draws every text scene in the slot layout (scene.TextScene) with cells of that many pixels, ``chart_slot``
    > 0 every chart and table (charts.py)."""
    rng = random.Random(f"sailvl2.synth:{GENERATOR_VERSION}:{seed}:{split}:{index}")
    w, h = size
    shapes = lambda r: sample_shape_scene(r, w, h)  # noqa: E731
    chart = lambda r: sample_chart_scene(r, w, h, slot=chart_slot)  # noqa: E731
    table = lambda r: sample_table_scene(r, w, h, slot=chart_slot)  # noqa: E731
    other = rng.random()
    if family == "shapes":
        scenes = (_draw(rng, split, shapes),)
        qas = shapes_qas(scenes[0], rng)
    elif family == "ocr":
        scenes = (_draw(rng, split, lambda r: sample_text_scene(r, w, h, slot=text_slot)),)
        qas = ocr_qas(scenes[0], rng)
    elif family == "charts":
        if other < 0.7:
            scenes = (_draw(rng, split, chart),)
            qas = chart_qas(scenes[0], rng)
        else:
            scenes = (_draw(rng, split, table),)
            qas = table_qas(scenes[0], rng)
    elif family == "reasoning":
        sampler = shapes if other < 0.5 else chart if other < 0.8 else table
        scenes = (_draw(rng, split, sampler),)
        qas = reasoning_qas(scenes[0], rng, cot_suffix=cot_suffix)
    elif family == "grounding":
        scenes = (_draw(rng, split, shapes, lambda s: bool(unique_shapes(s))),)
        qas = grounding_qas(scenes[0], rng)
    elif family == "multi_image":
        scenes = (_draw(rng, split, shapes), _draw(rng, split, shapes))
        qas = multi_image_qas(scenes, rng)
    elif family == "captions":
        sampler = shapes if other < 0.6 else (
            (lambda r: sample_text_scene(r, w, h, slot=text_slot)) if other < 0.75 else
            chart if other < 0.9 else table)
        scenes = (_draw(rng, split, sampler),)
        qas = caption_qas(scenes[0], rng)
    elif family == "focus":  # warm-up: one large shape or one large word, short questions and captions
        if other < 0.65:
            scenes = (_draw(rng, split, lambda r: sample_focus_shape_scene(r, w, h)),)
            qas = [qa for qa in shapes_qas(scenes[0], rng) if qa.task in _FOCUS_SHAPE_TASKS]
        else:
            scenes = (_draw(rng, split, lambda r: sample_text_scene(r, w, h, min_font=40, slot=text_slot)),)
            qas = ocr_qas(scenes[0], rng)
        brief = next(qa for qa in caption_qas(scenes[0], rng) if qa.task == "captions/brief")
        qas = [replace(qa, task="focus/" + qa.task) for qa in [*qas, brief]]
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {list(FAMILIES)}")
    return Item(split, index, family, scenes, _pick(rng, qas, FAMILIES[family][1]))


def _cycle(weights: Mapping[str, int]) -> list[str]:
    """The fixed family order: each family repeated by its weight, interleaved round-robin."""
    order: list[str] = []
    for turn in range(max(weights.values())):
        order += [f for f, weight in weights.items() if weight > turn]
    return order


def plan_number_item(seed: int, index: int, size: tuple[int, int] = (224, 224), text_slot: int = 0,
                     chart_slot: int = 0) -> Item:
    """Item ``index`` of the train split's extra number-reading stream (``generate_suite(number_images=...)``):
    one text scene whose text is a number the train split owns, asked "what number is shown?". A pure
    function of its arguments, like :func:`plan_item`."""
    rng = random.Random(f"sailvl2.synth:{GENERATOR_VERSION}:{seed}:numbers:{index}")
    scene = _draw(rng, "train", lambda r: sample_text_scene(r, *size, slot=text_slot),
                  accept=lambda candidate: candidate.category == "number")
    return Item("train", index, "ocr", (scene,), tuple(ocr_qas(scene, rng)))


def plan_letter_item(seed: int, index: int, size: tuple[int, int] = (224, 224), text_slot: int = 0,
                     chart_slot: int = 0) -> Item:
    """Item ``index`` of the train split's extra letter-reading stream (``generate_suite(letter_images=...)``):
    a random letter string the train split owns (so never a held-out word), asked "what is written?"."""
    rng = random.Random(f"sailvl2.synth:{GENERATOR_VERSION}:{seed}:letters:{index}")
    scene = _draw(rng, "train", lambda r: sample_letter_scene(r, *size, slot=text_slot))
    return Item("train", index, "ocr", (scene,), tuple(ocr_qas(scene, rng)))


def plan_chart_read_item(seed: int, index: int, size: tuple[int, int] = (224, 224), text_slot: int = 0,
                         chart_slot: int = 0) -> Item:
    """Item ``index`` of the train split's extra chart-reading stream (``generate_suite(chart_images=...)``): a
    chart (70 %) or table the train split owns, asked one question: a read-out (a category's value, a table
    cell) or, in ``CHART_READ_COMPARE`` of the items where the scene has a unique answer, a comparison (the
    largest or smallest category, a column's largest row)."""
    rng = random.Random(f"sailvl2.synth:{GENERATOR_VERSION}:{seed}:chart-reads:{CHART_READ_VERSION}:{index}")
    compare = rng.random() < CHART_READ_COMPARE
    if rng.random() < 0.7:
        scene = _draw(rng, "train", lambda r: sample_chart_scene(r, *size, slot=chart_slot))
        qas = chart_qas(scene, rng)
        wanted = ("charts/largest", "charts/smallest") if compare else ("charts/value",)
    else:
        scene = _draw(rng, "train", lambda r: sample_table_scene(r, *size, slot=chart_slot))
        qas = table_qas(scene, rng)
        wanted = ("charts/table_argmax",) if compare else ("charts/table_cell",)
    picked = [qa for qa in qas if qa.task in wanted]
    if not picked:  # a tie for the largest / smallest: ask the read-out instead
        picked = [qa for qa in qas if qa.task in ("charts/value", "charts/table_cell")]
    return Item("train", index, "charts", (scene,), (rng.choice(picked),))


# The extra shapes stream's questions: the counts and the spatial questions, which the suite's ~1900 training
# shape dialogues ask too rarely for the nano model (~460 relation and ~240 which questions; docs/nano-sessions.md,
# session 21). Half the time a colour or kind count asks about one the scene holds two or more of: three in four
# of the suite's own count questions find none or one, and the model answered "1" for twos (session 18).
SHAPE_STREAM_TASKS = ("shapes/count_all", "shapes/count_colour", "shapes/count_kind", "shapes/relation",
                      "shapes/which")
SHAPE_STREAM_SEVERAL = 0.5


def plan_shape_item(seed: int, index: int, size: tuple[int, int] = (224, 224), text_slot: int = 0,
                    chart_slot: int = 0) -> Item:
    """Item ``index`` of the train split's extra shapes stream (``generate_suite(shape_images=...)``): a shape
    scene the train split owns, asked up to three of ``SHAPE_STREAM_TASKS`` in random order (the writer also
    joins them into one dialogue, the form the mixtures draw)."""
    rng = random.Random(f"sailvl2.synth:{GENERATOR_VERSION}:{seed}:shapes-more:{index}")
    scene = _draw(rng, "train", lambda r: sample_shape_scene(r, *size))
    qas = {qa.task: qa for qa in shapes_qas(scene, rng) if qa.task in SHAPE_STREAM_TASKS}
    for attribute in ("colour", "kind"):
        several = several_count_qa(scene, rng, attribute)
        if several is not None and rng.random() < SHAPE_STREAM_SEVERAL:
            qas[several.task] = several
    return Item("train", index, "shapes", (scene,), tuple(rng.sample(list(qas.values()), min(3, len(qas)))))


# The train-only streams: stream -> (image folder and id infix, planner, generate_suite argument). A stream whose
# items ask several questions is also written as dialogues (`{stream}-dialogues`), which the mixtures draw.
# None is in train.jsonl, so the held-out splits do not change with them (docs/nano-sessions.md, sessions 11-12).
_EXTRA_STREAMS: dict[str, tuple[str, Callable[..., Item], str]] = {
    "ocr-numbers": ("numbers", plan_number_item, "number_images"),
    "ocr-letters": ("letters", plan_letter_item, "letter_images"),
    # Chart values and table cells: the suite holds ~300 of each, and the nano model read none of them even in
    # the slot layout (run 23, docs/nano-sessions.md, session 13).
    "charts-read": ("chart-reads", plan_chart_read_item, "chart_images"),
    "shapes-more": ("shapes-more", plan_shape_item, "shape_images"),
}
_DIALOGUE_STREAMS = ("shapes-more",)


def _image_paths(item: Item, folder: str | None = None) -> list[str]:
    stem = f"images/{folder or item.split}/{item.index:06d}"
    if len(item.scenes) == 1:
        return [stem + ".png"]
    return [f"{stem}-{k + 1}.png" for k in range(len(item.scenes))]


def _record(item: Item, number: int, qa: QA, folder: str | None = None) -> dict[str, Any]:
    paths = _image_paths(item, folder)
    if len(paths) == 1:
        prompt, image, scene = f"{_IMAGE_TAG}\n{qa.question}", paths[0], item.scenes[0].to_dict()
    else:
        tags = "".join(f"Image-{k + 1}: {_IMAGE_TAG}\n" for k in range(len(paths)))
        prompt, image = tags + qa.question, paths
        scene = {"type": "multi", "images": [s.to_dict() for s in item.scenes]}
    record = {"id": f"{item.split}-{folder + '-' if folder else ''}{item.index:06d}-{number}", "image": image,
              "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": qa.reply}],
              "kind": qa.kind, "task": qa.task, "answer": qa.answer, "scene": scene}
    if qa.focus:  # one entry per gpt turn: the boxes its answer depends on, 0-1000 (training/focus.py)
        size_of = lambda index: (item.scenes[index].width, item.scenes[index].height)  # noqa: E731
        # box[4:]: the subject, when tagged; (image index,) (a count's sink) and (image index, subject) stay as they are
        record["focus"] = [[[index, *box_coordinates(box[:4], size_of(index)), *box[4:]] if len(box) >= 4
                            else [index, *box] for index, *box in qa.focus]]
    return record


def _render_batch(jobs: list[tuple[str, Any]]) -> None:
    for path, scene in jobs:
        scene.render().save(path, format="PNG")


def _stream(record: dict[str, Any]) -> str:
    family = record["task"].split("/")[0]
    return family + "-cot" if record["kind"] == "cot" else family


def dialogues(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One multi-turn record per image (or image set): the questions an item asks about its image(s), turn
    after turn, the image only in the first turn (the release's multi-turn prompt format, FACTS.md). The same
    answers as the single-turn records, but a packed row carries ~3x the supervised answers per image token:
    on shapes, 300 steps reach 49.7 % held-out instead of 39.7 % (docs/nano-sessions.md, session 5, section 3)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:  # an item's records share their image(s) and are consecutive
        grouped.setdefault(json.dumps(row["image"]), []).append(row)
    merged = []
    for group in grouped.values():
        turns = list(group[0]["conversations"])
        for row in group[1:]:
            question, reply = row["conversations"]
            image_prefix = question["value"].rfind(_IMAGE_TAG + "\n")
            text = question["value"][image_prefix + len(_IMAGE_TAG) + 1:] if image_prefix >= 0 else question["value"]
            turns += [{"from": "human", "value": text}, reply]
        merged.append({"id": group[0]["id"] + "-dialogue", "image": group[0]["image"], "conversations": turns,
                       "kind": "direct", "task": "dialogue", "tasks": [row["task"] for row in group],
                       "scene": group[0]["scene"]})
        if any("focus" in row for row in group):
            merged[-1]["focus"] = [row["focus"][0] if "focus" in row else [] for row in group]
    return merged


def _dump(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def generate_suite(out_dir: str | os.PathLike, seed: int = 0, sizes: Mapping[str, int] | None = None,
                   families: Iterable[str] | Mapping[str, int] | None = None, *,
                   image_size: int | tuple[int, int] = 224, workers: int | None = None, cot_suffix: bool = True,
                   overwrite: bool = False, text_slot: int = 0, number_images: int = 0,
                   letter_images: int = 0, chart_slot: int = 0, chart_images: int = 0,
                   shape_images: int = 0) -> dict[str, Any]:
    """Generate the suite into ``out_dir`` and return its manifest (also written to ``manifest.json``).

    ``sizes`` maps split names (``train``, ``val``, ``test``) to numbers of records; ``families`` picks
    from :data:`FAMILIES` (default all, at their default weights), or maps families to integer weights
    (items of a family per cycle). ``workers`` processes render the images (default: up to 2); the
    files are byte-identical for any worker count. An existing suite in ``out_dir`` is replaced only with
    ``overwrite=True`` (its images, JSONL files, mixtures and manifest are removed first).
    ``text_slot`` > 0 draws the text scenes in the slot layout (one character per ``text_slot``-px cell),
    ``chart_slot`` > 0 the charts and tables (charts.py: two-digit values and short labels, no titles).
    ``number_images`` > 0 adds that many number-reading images to the train split only, as the stream
    ``ocr-numbers`` (``families/train-ocr-numbers.jsonl``, images in ``images/numbers/``; not in
    ``train.jsonl``), which the multi-task mixture draws at half and the SFT and LongCoT mixtures at a quarter
    (``ocr-letters``: whole, a quarter, a quarter). The suite's
    ~340 number images are too few for the nano model to learn reading digits (docs/nano-sessions.md, session 11).
    ``letter_images`` > 0 likewise adds random letter strings the train split owns (stream ``ocr-letters``,
    ``images/letters/``): held-out words are never training words, so reading them means spelling.
    ``chart_images`` > 0 likewise adds charts and tables asked for one value or cell, or which category or row
    is largest (stream ``charts-read``, ``images/chart-reads/``; drawn like the numbers).
    ``shape_images`` > 0 likewise adds shape scenes asked up to three counts and spatial questions (stream
    ``shapes-more``, ``images/shapes-more/``), and their dialogues (``shapes-more-dialogues``), which the multi-task
    mixture draws at half and the SFT and LongCoT mixtures at a quarter.
    """
    sizes = dict(sizes or {"train": 2000, "val": 200, "test": 200})
    unknown = sorted(set(sizes) - set(SPLIT_BUCKETS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {list(SPLIT_BUCKETS)}")
    extra_counts = {"ocr-numbers": number_images, "ocr-letters": letter_images, "charts-read": chart_images,
                    "shapes-more": shape_images}
    for stream, count in extra_counts.items():
        argument = _EXTRA_STREAMS[stream][2]
        if count < 0:
            raise ValueError(f"{argument} must be >= 0, got {count}")
        if count > 0 and "train" not in sizes:
            raise ValueError(f"{argument} adds to the train split, but sizes has no 'train'")
    if isinstance(families, Mapping):
        weights = {str(f): int(w) for f, w in families.items()}
    else:
        weights = {f: FAMILIES[f][0] if f in FAMILIES else 1 for f in dict.fromkeys(families or FAMILIES)}
    bad = [f for f in weights if f not in FAMILIES]
    if bad or not weights or min(weights.values()) < 1:
        raise ValueError(f"unknown families {bad} or weights below 1; expected some of {list(FAMILIES)}")
    families = list(weights)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    out = Path(out_dir)
    _prepare(out, overwrite)
    order = _cycle(weights)
    records: dict[str, list[dict[str, Any]]] = {}
    jobs: list[tuple[str, Any]] = []
    manifest_splits: dict[str, Any] = {}
    for split, wanted in sizes.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        index = images = 0
        while len(rows) < wanted:
            item = plan_item(seed, split, index, order[index % len(order)], size, cot_suffix, text_slot,
                             chart_slot)
            take = item.qas[: wanted - len(rows)]
            rows += [_record(item, n, qa) for n, qa in enumerate(take)]
            if take:
                jobs += [(str(out / p), s) for p, s in zip(_image_paths(item), item.scenes)]
                images += len(item.scenes)
            index += 1
        records[split] = rows
        manifest_splits[split] = {
            "file": f"{split}.jsonl", "records": len(rows), "items": index,
            "images": images,
            "families": dict(sorted(Counter(r["task"].split("/")[0] for r in rows).items())),
            "tasks": dict(sorted(Counter(r["task"] for r in rows).items())),
            "kinds": dict(sorted(Counter(r["kind"] for r in rows).items())),
        }
    extra: dict[str, list[dict[str, Any]]] = {}
    for stream, count in extra_counts.items():
        folder, planner, _ = _EXTRA_STREAMS[stream]
        if count > 0:
            (out / "images" / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            item = planner(seed, index, size, text_slot, chart_slot)
            extra.setdefault(stream, []).extend(_record(item, n, qa, folder) for n, qa in enumerate(item.qas))
            jobs += [(str(out / p), s) for p, s in zip(_image_paths(item, folder), item.scenes)]
    _render(jobs, workers)
    for stream, rows in extra.items():
        _write_jsonl(out / "families" / f"train-{stream}.jsonl", rows, "../")
    extra_dialogues = {f"{stream}-dialogues": dialogues(rows) for stream, rows in extra.items()
                       if stream in _DIALOGUE_STREAMS}
    for stream, rows in extra_dialogues.items():
        _write_jsonl(out / "families" / f"train-{stream}.jsonl", rows, "../")
    for split, rows in records.items():
        _write_jsonl(out / f"{split}.jsonl", rows, "")
        by_stream: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_stream.setdefault(_stream(row), []).append(row)
        for stream, group in sorted(by_stream.items()):
            _write_jsonl(out / "families" / f"{split}-{stream}.jsonl", group, "../")
        manifest_splits[split]["streams"] = {s: len(g) for s, g in sorted(by_stream.items())}
        if split == "train":  # the multi-turn twins of the direct streams (see `dialogues`)
            twins = {f"{stream}-dialogues": dialogues(group) for stream, group in sorted(by_stream.items())
                     if not stream.endswith("-cot")}
            for stream, group in twins.items():
                _write_jsonl(out / "families" / f"{split}-{stream}.jsonl", group, "../")
            manifest_splits[split]["dialogue_streams"] = {s: len(g) for s, g in twins.items()}
            spatial = [row for row in rows if row["task"] in SPATIAL_TASKS and row["kind"] == "direct"]
            if spatial:
                _write_jsonl(out / "families" / f"{split}-spatial.jsonl", spatial, "../")
                manifest_splits[split]["spatial_stream"] = len(spatial)
    train = manifest_splits.get("train", {})
    mixtures = write_mixtures(out, {**train.get("streams", {}), **train.get("dialogue_streams", {}),
                                     "spatial": train.get("spatial_stream", 0),
                                     **{stream: len(rows) for stream, rows in {**extra, **extra_dialogues}.items()}})
    manifest = {"generator": "sailvl2.synth", "version": GENERATOR_VERSION, "seed": seed,
                "image_size": list(size), "families": weights, "cot_suffix": cot_suffix,
                "split_buckets": {k: list(v) for k, v in SPLIT_BUCKETS.items() if k in sizes},
                "splits": manifest_splits, "mixtures": mixtures, "focus_version": FOCUS_VERSION}
    if text_slot:  # left out at 0, so free-layout suites keep their manifest bytes
        manifest["text_slot"] = text_slot
    if chart_slot:  # likewise
        manifest["chart_slot"] = chart_slot
    for stream in extra:  # likewise
        manifest[_EXTRA_STREAMS[stream][2]] = extra_counts[stream]
    if "charts-read" in extra:
        manifest["chart_read_version"] = CHART_READ_VERSION
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _prepare(out: Path, overwrite: bool) -> None:
    old = out / "manifest.json"
    if old.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a suite; pass overwrite=True to replace it")
        previous = json.loads(old.read_text(encoding="utf-8"))
        for split in previous.get("splits", {}):
            (out / f"{split}.jsonl").unlink(missing_ok=True)
        for sub in ("images", "families", "mixtures"):  # only the folders a suite writes
            shutil.rmtree(out / sub, ignore_errors=True)
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _render(jobs: list[tuple[str, Any]], workers: int | None) -> None:
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1 or len(jobs) < 64:
        _render_batch(jobs)
        return
    chunk = max(16, len(jobs) // (workers * 8))
    batches = [jobs[k:k + chunk] for k in range(0, len(jobs), chunk)]
    # fork keeps start-up cheap (no re-import of torch in the children); the children only use PIL.
    context = get_context("fork") if "fork" in get_all_start_methods() else get_context()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for _ in pool.map(_render_batch, batches):
            pass


def _write_jsonl(path: Path, rows: list[dict[str, Any]], prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            if prefix:
                image = row["image"]
                row = dict(row, image=prefix + image if isinstance(image, str) else [prefix + p for p in image])
            handle.write(_dump(row) + "\n")
