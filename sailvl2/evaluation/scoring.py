"""Scores a benchmark's predictions: per kind of benchmark the answer extraction of ``extract.py`` and the metric of
``metrics.py`` that the benchmark's published evaluation uses, with per-category breakdowns.

Metric per benchmark (family names as in ``registry.py``):

- our task suite (``suite.py``): the nano scorer ``sailvl2.nano.evaluate.score`` on the rebuilt record, so the
  result equals the nano report's own evaluation;
- multiple choice (and video with options): the extracted letter equals the answer; MMBench / CCBench TSVs
  with circular copies (VLMEvalKit stores the shifted copies under ``index + k * 1_000_000``) are scored by
  circular accuracy, the vanilla accuracy goes to ``extra``; a row without options is scored like an open answer;
- yes / no: the extracted yes/no equals the answer;
- DocVQA, InfoVQA, DUDE, SlideVQA, MMLongBench-Doc: ANLS; ChartQA: relaxed accuracy (5 %); TextVQA: VQA
  accuracy over its human answers; OCRBench: its substring rule on the whole answer (``extra``: the 0-1000 score
  when the file holds the full 1000 questions); other short answers: normalised exact match with any gold answer;
- open answers: our choice, a rule match (the gold is a number: the last number of the extracted answer equals it
  within 1e-6 relative; else normalised exact match). The published MMVet / LLaVABench / WildVision / MM-IFEval
  numbers come from a grading LLM, which this does not reproduce (docs/evaluation.md);
- grounding: hit at IoU >= 0.5 with the gold box (0-1000 grid, PAPER.md 9.1).

Gold cells holding a list (``["a", "b"]``, as VLMEvalKit writes several answers) give several gold answers. An
item without a prediction (generation failed) scores 0. Scores are fractions per item; the benchmark score and
the per-category scores are reported in percent.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from .datasets import BenchmarkItem
from .extract import Judge, extract_answer, extract_box, numbers_match, parse_number
from .metrics import (
    anls,
    circular_accuracy,
    grounding_hit,
    normalise_vqa_answer,
    ocrbench_correct,
    ocrbench_score,
    relaxed_accuracy,
    vqa_accuracy,
)
from .registry import BenchmarkKind, BenchmarkSpec
from .suite import is_suite, suite_record

__all__ = ["BenchmarkScore", "ItemScore", "metric_for", "score_benchmark"]

# VLMEvalKit's MMBench files put circularly shifted copies of a question at index + k * 1e6.
_CIRCULAR_OFFSET = 1_000_000
_ANLS_FAMILIES = ("docvqa", "infovqa", "dude", "slidevqa", "mmlongbenchdoc")


@dataclass(frozen=True)
class ItemScore:
    """One item's result: ``score`` in [0, 1], the extracted ``answer`` and the rule that found it (``source``:
    ``boxed`` / ``choice`` / ``text`` / ``judge``; None when nothing was found or no prediction exists)."""

    index: str
    category: str | None
    gold: str | None
    answer: str | None
    source: str | None
    score: float


@dataclass
class BenchmarkScore:
    """A benchmark's result: ``score`` in percent over ``n`` items, ``per_category`` as ``{category: {"n",
    "score"}}`` (percent; empty when the file has no categories), ``extra`` further numbers of the metric,
    ``unscorable`` the items left out because their gold answer does not fit the metric (index -> why)."""

    metric: str
    score: float
    n: int
    items: list[ItemScore]
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)
    unscorable: dict[str, str] = field(default_factory=dict)

    @property
    def answer_sources(self) -> dict[str, int]:
        """How many answers each extraction rule found (``none``: no answer)."""
        return dict(sorted(Counter(item.source or "none" for item in self.items).items()))


def _key(name: str) -> str:
    return re.sub(r"[-_ .]", "", name).lower()


def metric_for(spec: BenchmarkSpec) -> str:
    """The name of the metric ``spec``'s benchmark is scored with (see the module docstring)."""
    key = _key(spec.name)
    if is_suite(spec.name):
        return "nano_suite"
    if spec.kind is BenchmarkKind.GROUNDING:
        return "grounding_hit"
    if spec.kind in (BenchmarkKind.MULTIPLE_CHOICE, BenchmarkKind.VIDEO, BenchmarkKind.YES_NO):
        return "accuracy"
    if spec.kind is BenchmarkKind.SHORT_ANSWER:
        if key.startswith(_ANLS_FAMILIES):
            return "anls"
        if key.startswith("chartqa"):
            return "relaxed_accuracy"
        if key.startswith("ocrbench"):
            return "ocrbench"
        if key.startswith("textvqa"):
            return "vqa_accuracy"
        return "exact_match"
    return "rule_match"


def _golds(answer: str) -> list[str]:
    """A gold cell as a list of gold answers (a JSON / Python list of strings, else the cell itself)."""
    text = answer.strip()
    if text.startswith("[") and text.endswith("]"):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return value
    return [answer]


def _rule_match(said: str | None, golds: list[str]) -> bool:
    if not said:
        return False
    for gold in golds:
        if parse_number(gold) is not None and numbers_match(said, gold):
            return True
        if normalise_vqa_answer(said) == normalise_vqa_answer(gold):
            return True
    return False


class _Unscorable(Exception):
    """An item whose gold answer the metric cannot use (left out of the score and reported)."""


def _score_item(item: BenchmarkItem, text: str | None, spec: BenchmarkSpec, metric: str,
                judge: Judge | None) -> ItemScore:
    def result(answer: str | None, source: str | None, score: float) -> ItemScore:
        return ItemScore(item.index, item.category, item.answer, answer, source, float(score))

    if text is None:
        return result(None, None, 0.0)
    if metric == "nano_suite":
        from ..nano.evaluate import score as nano_score

        return result(None, "nano", nano_score(suite_record(item), text))
    gold = item.answer or ""
    if metric == "grounding_hit":
        gold_box = extract_box(gold)
        if gold_box is None:
            raise _Unscorable(f"the answer {gold!r} is not a box [x1, y1, x2, y2]")
        found = extract_answer(text, "grounding")
        return result(found.answer, found.source, grounding_hit(found.box, gold_box))
    golds = _golds(gold)
    if item.options and spec.kind in (BenchmarkKind.MULTIPLE_CHOICE, BenchmarkKind.VIDEO):
        found = extract_answer(text, "multiple_choice", item.options, judge, item.question)
        return result(found.answer, found.source, found.answer == gold.strip().upper())
    if spec.kind is BenchmarkKind.YES_NO:
        found = extract_answer(text, "yes_no", None, judge, item.question)
        return result(found.answer, found.source, found.answer == gold.strip().lower())
    if metric == "ocrbench":  # the published rule looks for the gold inside the whole answer
        found = extract_answer(text, "open")
        return result(found.answer, found.source, ocrbench_correct(found.answer, golds, item.category or ""))
    found = extract_answer(text, "short_answer", None, judge, item.question)
    said = found.answer
    if metric == "anls":
        value = anls(said, golds)
    elif metric == "relaxed_accuracy":
        value = max(relaxed_accuracy(said, g) for g in golds)
    elif metric == "vqa_accuracy":
        value = vqa_accuracy(said, golds)
    elif metric == "exact_match":
        value = bool(said) and normalise_vqa_answer(said) in {normalise_vqa_answer(g) for g in golds}
    else:
        value = _rule_match(said, golds)
    return result(said, found.source, value)


def score_benchmark(spec: BenchmarkSpec, items: Sequence[BenchmarkItem], predictions: Mapping[str, str | None],
                    judge: Judge | None = None) -> BenchmarkScore:
    """Score ``items`` of benchmark ``spec``; ``predictions`` maps item index -> the model's full response (None
    or absent: no prediction, scored 0). ``judge`` is asked when the extraction rules find no answer."""
    if not items:
        raise InputError(f"{spec.name}: no items to score")
    metric = metric_for(spec)
    scored, unscorable = [], {}
    for item in items:
        try:
            scored.append(_score_item(item, predictions.get(item.index), spec, metric, judge))
        except _Unscorable as exc:
            unscorable[item.index] = str(exc)
    if not scored:
        example = next(iter(unscorable.values()))
        raise InputError(f"{spec.name}: none of the {len(items)} items can be scored, e.g. {example}")
    items = [item for item in items if item.index not in unscorable]
    values = [s.score for s in scored]
    score = 100 * sum(values) / len(values)
    extra: dict[str, float] = {}
    if metric == "ocrbench" and len(scored) == 1000:
        extra["ocrbench_score"] = float(ocrbench_score([v > 0 for v in values]))
    circular = _circular_groups(spec, items)
    if circular is not None:
        extra["vanilla_accuracy"] = score
        score = 100 * circular_accuracy(circular, [v > 0 for v in values])
        metric = "circular_accuracy"
    per_category: dict[str, dict[str, float]] = {}
    if any(item.category for item in items):
        groups: dict[str, list[float]] = {}
        for item, value in zip(items, values):
            groups.setdefault(item.category or "(none)", []).append(value)
        per_category = {c: {"n": len(v), "score": 100 * sum(v) / len(v)} for c, v in sorted(groups.items())}
    return BenchmarkScore(metric, score, len(scored), scored, per_category, extra, unscorable)


def _circular_groups(spec: BenchmarkSpec, items: Sequence[BenchmarkItem]) -> list[int] | None:
    """Question ids of MMBench-style circular passes, or None when the file has no circular copies."""
    if not _key(spec.name).startswith(("mmbench", "ccbench")) or spec.kind is not BenchmarkKind.MULTIPLE_CHOICE:
        return None
    try:
        indices = [int(item.index) for item in items]
    except ValueError:
        return None
    if max(indices) < _CIRCULAR_OFFSET:
        return None
    return [index % _CIRCULAR_OFFSET for index in indices]
