"""Per-task accuracy of a model on a generated task-suite split (JSONL records with `task` and `answer`).

Scoring, by what the stored answer is:
- grounding (`answer` is 4 ints, 0-1000): IoU of the first predicted box with the true box >= 0.5;
- reasoning (`kind: cot`): the last `\\boxed{}` of the reply (after `</think>`) equals the answer;
- everything else: the normalised reply equals the normalised answer, or holds it as a word (run) with no
  competing number or yes/no ("It is red." scores for "red", "3 circles." for "3", "3 or 4" does not).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..answers import extract_boxed, parse_grounding, split_thinking
from ..evaluation.metrics import iou  # the benchmarks' IoU: one definition for both

_PUNCT = re.compile(r"[^\w\s.-]|(?<!\d)\.|\.(?!\d)")


def normalise(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def score(record: dict[str, Any], reply: str) -> float:
    """1.0 when `reply` answers `record` correctly (grounding: IoU >= 0.5), else 0.0."""
    answer = record["answer"]
    if isinstance(answer, list) and len(answer) == 4:
        boxes = parse_grounding(reply, image_size=(1000, 1000))
        return float(bool(boxes) and iou(boxes[0].box, answer) >= 0.5)
    truth = normalise(str(answer))
    if record.get("kind") == "cot":
        boxed = extract_boxed(split_thinking(reply).answer)
        return float(boxed is not None and normalise(boxed) == truth)
    said = normalise(split_thinking(reply).answer)
    if said == truth:
        return 1.0
    # A short sentence around the answer ("It is red.", "There are 3 circles.") counts when the answer is
    # one of its words (or word runs) and no competing answer of the same type appears in it.
    words = said.split()
    if f" {truth} " not in f" {said} ":
        return 0.0
    numbers = [w for w in words if re.fullmatch(r"-?\d+(\.\d+)?", w)]
    if numbers and numbers != [truth]:
        return 0.0
    if truth in ("yes", "no") and {"yes", "no"} <= set(words):
        return 0.0
    return 1.0


@dataclass
class TaskReport:
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overall(self) -> float:
        total = sum(v["n"] for v in self.per_task.values())
        return sum(v["accuracy"] * v["n"] for v in self.per_task.values()) / total if total else 0.0

    def markdown(self) -> str:
        lines = ["| task | n | accuracy |", "|---|---:|---:|"]
        for task, values in sorted(self.per_task.items()):
            lines.append(f"| {task} | {int(values['n'])} | {values['accuracy']:.1%} |")
        lines.append(f"| **all** | {sum(int(v['n']) for v in self.per_task.values())} | {self.overall:.1%} |")
        return "\n".join(lines)


#: Task-name prefixes of the perception tasks the issue's target is about (colour, shape, count, position,
#: OCR, chart read-out, grounding), as opposed to reasoning, captions and multi-image comparison.
PERCEPTION_PREFIXES = ("shapes/", "ocr/", "charts/", "grounding/")


def perception_accuracy(per_task: dict[str, dict[str, float]]) -> float:
    """Accuracy over every perception question (tasks weighted by their number of questions)."""
    chosen = [v for task, v in per_task.items() if task.startswith(PERCEPTION_PREFIXES)]
    total = sum(v["n"] for v in chosen)
    return sum(v["accuracy"] * v["n"] for v in chosen) / total if total else 0.0


def chance_accuracy(train_records: list[dict[str, Any]], test_records: list[dict[str, Any]]) -> dict[str, float]:
    """Per task, the expected accuracy of guessing uniformly among the answers that task has in training:
    1 / (number of distinct training answers). Grounding answers (boxes) count as 0: a guessed box almost never
    reaches IoU 0.5. Tasks with no training records get 0. Keyed like `TaskReport.per_task`."""
    answers: dict[str, set[str]] = defaultdict(set)
    for record in train_records:
        answers[record.get("task", "all")].add(json.dumps(record["answer"]))
    chance = {}
    for record in test_records:
        task = record.get("task", "all")
        grounding = isinstance(record["answer"], list) and len(record["answer"]) == 4
        chance[task] = 0.0 if grounding or not answers[task] else 1.0 / len(answers[task])
    return chance


def weighted_chance(per_task: dict[str, dict[str, float]], chance: dict[str, float]) -> float:
    """Chance accuracy over a report's questions (tasks weighted by their number of questions)."""
    total = sum(v["n"] for v in per_task.values())
    return sum(chance.get(task, 0.0) * v["n"] for task, v in per_task.items()) / total if total else 0.0


def load_split(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    path = Path(path)
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            images = record.get("image") or []
            images = [images] if isinstance(images, str) else images
            record["image"] = [str(path.parent / image) for image in images]
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    return records


def evaluate(vlm: Any, records: list[dict[str, Any]], max_new_tokens: int = 64, batch_size: int = 16,
             max_num: int | None = 1) -> TaskReport:
    """Ask every record's first question (greedy) and score the reply against its stored answer.

    The questions are batched task by task: a batch decodes until its longest reply ends, and one caption in a
    batch of one-word answers would keep all of them decoding for `max_new_tokens` steps."""
    order = sorted(range(len(records)), key=lambda index: (str(records[index].get("task", "")), index))
    questions = [records[index]["conversations"][0]["value"] for index in order]
    images = [records[index]["image"] or None for index in order]
    sorted_replies = vlm.batch_chat(questions, images=images, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                    max_num=max_num)
    replies = [None] * len(records)
    for position, index in enumerate(order):
        replies[index] = sorted_replies[position]
    sums: dict[str, list[float]] = defaultdict(list)
    report = TaskReport()
    for record, reply in zip(records, replies):
        value = score(record, reply.text)
        sums[record.get("task", "all")].append(value)
        report.samples.append({"id": record.get("id"), "task": record.get("task"), "answer": record["answer"],
                               "reply": reply.text, "correct": bool(value)})
    report.per_task = {task: {"n": len(v), "accuracy": sum(v) / len(v)} for task, v in sums.items()}
    return report
