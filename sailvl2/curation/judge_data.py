"""Training and held-out data for caption judges, built from the nano task suite (``sailvl2.synth``).

Every shape-scene caption record of the suite (families ``captions`` and ``focus``; tasks ``*captions/brief``
and ``captions/detailed``) yields pairs for its image: the true caption and wrong ones. A wrong caption is
the suite's own caption grammar applied to a *modified copy of the scene* stored in the record (a shape
recoloured, given another kind, added or removed), so every corruption is wrong by construction; the
modified scene is kept in the record (``judge.claimed``) for checking. Each record also names its evidence
(``focus``, training/focus.py): the shapes where the caption and the image differ, or every shape for the
true caption.

ITA score rule (ours; PAPER.md 4.1 gives the rubric, not a labelling rule), by severity:

=====  ==========================================================================  ======
score  caption                                                                     Yes/No
=====  ==========================================================================  ======
5      ``true``: the suite's caption of the image                                   Yes
2      one wrong fact: ``colour``, ``kind`` or ``count`` (a shape added/removed)    No
1      two wrong facts (two of colour / kind / count, ``colour+kind`` etc.)         No
=====  ==========================================================================  ======

Scores 3 and 4 ("correct but vague / incomplete") have no examples: every suite caption is complete, and
hand-made "vague" or "incomplete" variants are recognisable from the text alone, which teaches a small judge
to read the caption's form instead of the image (a first run did exactly that). The Yes/No label is the
filter rule's reading of the score (Yes iff ITA >= 3). Training sets are resampled uniformly across classes
(PAPER.md 4.1: "resampled uniformly across the score distribution"): scores 1 / 2 / 5 for the score judge,
Yes / No for the Yes/No judge, with replacement where a class is short. Held-out sets are balanced the
same way without replacement. Train pairs come from the suite's ``train`` split, held-out pairs from other
splits (default ``val`` and ``test``); the suite keeps splits disjoint by scene, so no image (and no scene)
is shared.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..answers import box_coordinates
from ..synth.captions import brief_caption, detailed_caption
from ..synth.scene import COLOURS, GRID, KINDS, SIZES, Shape, ShapeScene, scene_from_dict
from .judges import judge_prompt
from .types import CurationError

__all__ = [
    "CAPTION_TASKS", "CORRUPTIONS", "SCORE_RULE", "JudgePair", "balance", "build_judge_data", "caption_pairs",
    "corrupt_scene", "evidence_boxes", "judge_record", "pairs_from_records", "verification_lines",
]

CORRUPTIONS = ("colour", "kind", "count")
SCORE_RULE = {5: "true caption", 2: "one wrong fact", 1: "two wrong facts"}
CAPTION_TASKS = ("captions/brief", "captions/detailed", "focus/captions/brief")
_TRAINED_JUDGES = ("ita_score", "ita_yesno")


@dataclass(frozen=True)
class JudgePair:
    """One (image, caption) pair with its ITA ``score`` (see the module table); ``variant`` names how the
    caption was made; ``claimed`` is the scene a wrong caption describes (None for true captions)."""

    image: str
    caption: str
    score: int
    variant: str
    image_id: str
    task: str
    claimed: dict[str, Any] | None = None
    focus: tuple[tuple[int, int, int, int], ...] = ()  # evidence boxes, 0-1000 (training/focus.py)
    checks: tuple[str, ...] = ()  # verification_lines, for brief captions of shape scenes

    @property
    def label(self) -> str:
        return "Yes" if self.score >= 3 else "No"


def corrupt_scene(scene: ShapeScene, corruptions: Sequence[str], rng: random.Random) -> ShapeScene:
    """A copy of ``scene`` with one wrong fact per entry of ``corruptions`` (distinct entries of
    :data:`CORRUPTIONS`): ``colour`` / ``kind`` change one original shape's attribute to another value,
    ``count`` adds a shape in an empty cell (always, for one-shape scenes) or removes one. A count change is
    applied first and never removes a shape another corruption touches, so the wrong facts never cancel."""
    if len(set(corruptions)) != len(corruptions) or not set(corruptions) <= set(CORRUPTIONS):
        raise CurationError(f"corruptions must be distinct entries of {CORRUPTIONS}, got {list(corruptions)}")
    shapes = list(scene.shapes)
    original = list(range(len(shapes)))  # indices of shapes that came from the true scene
    if "count" in corruptions:
        free = sorted(set(range(GRID * GRID)) - {s.row * GRID + s.col for s in shapes})
        if len(shapes) == 1 or rng.random() < 0.5:
            row, col = divmod(rng.choice(free), GRID)
            size = rng.choice(tuple(SIZES))
            cell = scene.width / GRID
            shapes.append(Shape(rng.choice(KINDS), rng.choice(tuple(COLOURS)), size, row, col,
                                int((col + 0.5) * cell), int((row + 0.5) * cell), round(SIZES[size] * cell)))
        else:
            removed = rng.choice(original)
            del shapes[removed]
            original = [i if i < removed else i - 1 for i in original if i != removed]
    for corruption in (c for c in corruptions if c != "count"):
        index = rng.choice(original)
        shape = shapes[index]
        if corruption == "colour":
            shapes[index] = replace(shape, colour=rng.choice([c for c in COLOURS if c != shape.colour]))
        else:
            shapes[index] = replace(shape, kind=rng.choice([k for k in KINDS if k != shape.kind]))
    return replace(scene, shapes=tuple(shapes))


def evidence_boxes(scene: ShapeScene, claimed: ShapeScene | None = None) -> tuple[tuple[int, int, int, int], ...]:
    """The 0-1000 boxes a judge must look at: the cells where ``claimed`` and the true ``scene`` differ (the
    true shape's box, or the claimed shape's where the image has none), or every shape when nothing is claimed."""
    truth = {(s.row, s.col): s for s in scene.shapes}
    if claimed is None:
        shapes = list(scene.shapes)
    else:
        claim = {(s.row, s.col): s for s in claimed.shapes}
        shapes = [truth.get(cell) or claim[cell] for cell in sorted(truth.keys() | claim.keys())
                  if truth.get(cell) != claim.get(cell)]
    return tuple(box_coordinates(shape.bbox(), (scene.width, scene.height)) for shape in shapes)


def verification_lines(scene: ShapeScene, claimed: ShapeScene | None = None) -> list[str]:
    """The checks a verifying judge writes before its Yes/No (``verify`` data): the claimed shape count, then
    each claimed shape of a brief caption in its reading order, each marked yes or no against the image's
    ``scene`` (shapes matched as a multiset of size, colour and kind). The caption is wrong iff a line says no."""
    claimed = scene if claimed is None else claimed
    available = Counter((s.size, s.colour, s.kind) for s in scene.shapes)
    shapes = sorted(claimed.shapes, key=lambda s: (s.row, s.col))  # brief_caption's order
    count = len(shapes)
    lines = [f"{count} {'shape' if count == 1 else 'shapes'}: {'yes' if count == len(scene.shapes) else 'no'}"]
    for shape in shapes:
        key = (shape.size, shape.colour, shape.kind)
        lines.append(f"a {shape.size} {shape.colour} {shape.kind}: {'yes' if available[key] > 0 else 'no'}")
        available[key] -= 1
    return lines


def _caption(task: str, scene: ShapeScene) -> str:
    return detailed_caption(scene) if task == "captions/detailed" else brief_caption(scene)


def caption_pairs(record: dict[str, Any], image: str, rng: random.Random,
                  corruptions: Sequence[str] = CORRUPTIONS) -> list[JudgePair]:
    """Every variant of one suite caption record (its true caption must be the scene's, else an error)."""
    task = record["task"].removeprefix("focus/")
    scene = scene_from_dict(record["scene"])
    truth = record["conversations"][-1]["value"]
    if _caption(task, scene) != truth:
        raise CurationError(f"record {record.get('id')}: its caption is not the scene's caption")
    def make(caption: str, score: int, variant: str, wrong: ShapeScene | None = None) -> JudgePair:
        checks = tuple(verification_lines(scene, wrong)) if task == "captions/brief" else ()
        return JudgePair(image, caption, score, variant, record["id"].rsplit("-", 1)[0], record["task"],
                         wrong.to_dict() if wrong is not None else None, evidence_boxes(scene, wrong), checks)

    pairs = [make(truth, 5, "true")]
    for corruption in corruptions:
        wrong = corrupt_scene(scene, [corruption], rng)
        pairs.append(make(_caption(task, wrong), 2, corruption, wrong))
    doubles = [(a, b) for i, a in enumerate(corruptions) for b in corruptions[i + 1:]]
    for first, second in rng.sample(doubles, min(2, len(doubles))):
        wrong = corrupt_scene(scene, [first, second], rng)
        pairs.append(make(_caption(task, wrong), 1, f"{first}+{second}", wrong))
    return pairs


def pairs_from_records(records: Iterable[dict[str, Any]], image_root: str | os.PathLike, rng: random.Random,
                       families: Sequence[str] = ("captions", "focus"),
                       corruptions: Sequence[str] = CORRUPTIONS) -> list[JudgePair]:
    """Judge pairs from the shape-scene caption records of ``families`` (suite records, in order)."""
    pairs: list[JudgePair] = []
    for record in records:
        if (record.get("task") not in CAPTION_TASKS or record["task"].split("/")[0] not in families
                or record.get("scene", {}).get("type") != "shapes"):
            continue
        pairs += caption_pairs(record, os.path.abspath(os.path.join(image_root, record["image"])), rng, corruptions)
    return pairs


def balance(pairs: Sequence[JudgePair], key: Callable[[JudgePair], Hashable], per_class: int | None,
            rng: random.Random, with_replacement: bool = True) -> list[JudgePair]:
    """The same number of pairs from every class of ``key`` (uniform class resampling, PAPER.md 4.1):
    ``per_class`` each (drawn with replacement where a class is short, when ``with_replacement``), else the
    smallest class's size (and never more than ``per_class``). Shuffled."""
    groups: dict[Hashable, list[JudgePair]] = defaultdict(list)
    for pair in pairs:
        groups[key(pair)].append(pair)
    if not groups:
        return []
    smallest = min(len(g) for g in groups.values())
    take = per_class if with_replacement and per_class is not None else min(per_class or smallest, smallest)
    chosen: list[JudgePair] = []
    for name in sorted(groups, key=str):
        group = groups[name]
        if take <= len(group):
            chosen += rng.sample(group, take)
        else:
            chosen += group + rng.choices(group, k=take - len(group))
    rng.shuffle(chosen)
    return chosen


def judge_record(pair: JudgePair, judge: str, number: int, split: str, image_base: str | os.PathLike,
                 style: str = "compact", verify: bool = False) -> dict[str, Any]:
    """A training-engine record asking ``judge`` (``ita_score`` / ``ita_yesno``) about ``pair``; the image
    path is relative to ``image_base`` (the folder of the JSONL file). With ``verify`` the Yes/No judge's
    reply first checks the caption fact by fact in a ``<think>`` block (a ``cot`` record, trained on it)."""
    if judge not in _TRAINED_JUDGES:
        raise CurationError(f"judge data exists for {_TRAINED_JUDGES}, not {judge!r}")
    answer = str(pair.score) if judge == "ita_score" else pair.label
    verifying = verify and judge == "ita_yesno"
    if verifying:
        if not pair.checks:
            raise CurationError(f"verify data needs brief shape captions; {pair.task} has no checks")
        answer = "<think>\n" + "\n".join(pair.checks) + "\n</think>\n\n" + answer
    meta = {k: v for k, v in asdict(pair).items() if k not in ("image", "focus")} | {"label": pair.label,
                                                                                       "name": judge}
    record = {"id": f"{judge}-{split}-{number:06d}", "image": os.path.relpath(pair.image, image_base),
              "conversations": [{"from": "human", "value": judge_prompt(judge, pair.caption, style)},
                                {"from": "gpt", "value": answer}],
              "judge": meta}
    if pair.focus and not verifying:  # one evidence set per reply cannot guide a line-by-line check
        record["focus"] = [[[0, *box] for box in pair.focus]]
    if verifying:
        record["kind"] = "cot"
    return record


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def build_judge_data(suite_dir: str | os.PathLike, out_dir: str | os.PathLike, *, per_class_train: int,
                     per_class_heldout: int, seed: int = 0, families: Sequence[str] = ("captions", "focus"),
                     corruptions: Sequence[str] = CORRUPTIONS, style: str = "compact",
                     heldout_splits: Sequence[str] = ("val", "test"), verify: bool = False) -> dict[str, Any]:
    """Write ``{train,heldout}-{ita_score,ita_yesno}.jsonl`` and ``mixture-{judge}.yaml`` into ``out_dir``;
    returns (and writes) ``manifest.json`` with the class counts of every file."""
    suite, out = Path(suite_dir), Path(out_dir)
    manifest: dict[str, Any] = {"suite": str(suite.resolve()), "seed": seed, "families": list(families),
                                "corruptions": list(corruptions), "prompt_style": style,
                                "heldout_splits": list(heldout_splits), "score_rule": SCORE_RULE,
                                "verify": verify, "files": {}}
    if "train" in heldout_splits:
        raise CurationError("the held-out pairs must come from splits other than 'train'")
    plan = (("train", ["train"], per_class_train), ("heldout", list(heldout_splits), per_class_heldout))
    for split, sources, per_class in plan:
        rng = random.Random(f"sailvl2.judge_data:{seed}:{split}")
        records = [r for source in sources if (suite / f"{source}.jsonl").is_file()
                   for r in _read_jsonl(suite / f"{source}.jsonl")]
        pairs = pairs_from_records(records, suite, rng, families, corruptions)
        if verify:  # the line-by-line checks exist for brief captions
            pairs = [p for p in pairs if p.checks]
        if not pairs:
            raise CurationError(f"the {'/'.join(sources)} split(s) of {suite} hold no shape-scene caption records "
                                f"of {list(families)}")
        by_score = balance(pairs, lambda p: p.score, per_class, rng, with_replacement=split == "train")
        # Yes/No: as many of each label as the smaller one (No: scores 1-2) holds, still uniform within.
        by_label = balance(by_score, lambda p: p.label, None, rng, with_replacement=False)
        for judge, chosen in (("ita_score", by_score), ("ita_yesno", by_label)):
            name = f"{split}-{judge}.jsonl"
            _write_jsonl(out / name, (judge_record(p, judge, i, split, out, style, verify)
                                      for i, p in enumerate(chosen)))
            manifest["files"][name] = {
                "records": len(chosen), "images": len({p.image for p in chosen}),
                "classes": dict(sorted(Counter(str(p.score) if judge == "ita_score" else p.label
                                               for p in chosen).items())),
                "variants": dict(sorted(Counter(p.variant for p in chosen).items())),
            }
    for judge in _TRAINED_JUDGES:
        (out / f"mixture-{judge}.yaml").write_text(
            "# Generated by sailvl2.curation.judge_data; paths are relative to this file.\ndatasets:\n"
            f'  - {{name: {judge}, path: "train-{judge}.jsonl", max_num: 1}}\n', encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
