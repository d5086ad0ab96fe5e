"""Benchmark metrics: pure functions over predictions and gold answers, written from the published definitions.

- accuracy and circular multiple-choice accuracy (MMBench: a question counts only if it is answered right under
  every circular shift of its options);
- VQA accuracy, min(#humans who gave the answer / 3, 1), on answers normalised as the VQA metric does;
- ANLS (DocVQA / InfographicVQA), relaxed accuracy (ChartQA, 5 %), OCRBench's substring rule and its 0-1000 score;
- grounding: IoU and hit at IoU >= 0.5 on 0-1000 boxes (RefCOCO, PAPER.md section 9.1);
- per-category breakdowns and the OpenCompass average over its 8 benchmarks (PAPER.md section 9.1).

Per-sample functions return a float in [0, 1] (``*_accuracy``, :func:`anls`) or a bool (``*_correct``,
``*_hit``); average them with :func:`per_category` or ``sum / len``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence

from sailvl2.errors import InputError
from sailvl2.evaluation.extract import numbers_match, parse_number

#: The 8 benchmarks of the OpenCompass average (PAPER.md section 9.1), as canonical names.
OPENCOMPASS_BENCHMARKS: tuple[str, ...] = (
    "MMBench_v1.1", "MMStar", "MMMU_val", "MathVista_mini", "HallusionBench", "AI2D", "OCRBench", "MMVet",
)
# Spellings seen in result tables and VLMEvalKit dataset names, compared lower-case with non-alphanumerics removed.
_OPENCOMPASS_ALIASES: dict[str, str] = {
    "mmbenchv11": "MMBench_v1.1", "mmbenchdevenv11": "MMBench_v1.1", "mmbenchtestenv11": "MMBench_v1.1",
    "mmstar": "MMStar",
    "mmmuval": "MMMU_val", "mmmudevval": "MMMU_val",
    "mathvistamini": "MathVista_mini", "mathvistatestmini": "MathVista_mini",
    "hallusionbench": "HallusionBench",
    "ai2d": "AI2D", "ai2dtest": "AI2D",
    "ocrbench": "OCRBench",
    "mmvet": "MMVet",
}
# OCRBench's handwritten-formula category (from HME100k) compares without any whitespace.
_HME_CATEGORIES = frozenset({"handwritten mathematical expression recognition", "hme100k"})


def _golds(golds: object) -> list[str]:
    """One gold string or a non-empty sequence of them, as a list."""
    if isinstance(golds, str):
        return [golds]
    if not isinstance(golds, Sequence) or not golds or not all(isinstance(g, str) for g in golds):
        raise InputError(f"gold answers must be a str or a non-empty sequence of str, got {golds!r}")
    return list(golds)


def _pred(pred: object) -> str:
    """A prediction as text: None (nothing extracted) reads as the empty answer."""
    if pred is None:
        return ""
    if not isinstance(pred, str):
        raise InputError(f"a prediction must be a str or None, got {type(pred).__name__}")
    return pred


def _same_length(a: Sequence[object], b: Sequence[object], names: str) -> None:
    if len(a) != len(b):
        raise InputError(f"{names} differ in length: {len(a)} != {len(b)}")


# ----------------------------------------------------------------------------------------------- accuracy


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Fraction of predictions equal to their gold answer (stripped, case-insensitive); None is wrong."""
    _same_length(predictions, golds, "predictions and golds")
    if not all(isinstance(g, str) for g in golds):
        raise InputError("gold answers must be str")
    if not predictions:
        raise InputError("accuracy of an empty list is undefined")
    hits = sum(
        p is not None and _pred(p).strip().casefold() == g.strip().casefold() for p, g in zip(predictions, golds)
    )
    return hits / len(predictions)


def circular_shifts(options: Mapping[str, str], answer: str) -> list[tuple[dict[str, str], str]]:
    """The N circularly shifted versions of an N-option question, each with its correct letter (MMBench).

    Shift k puts the text of option i+k (mod N) at letter i, so every option text visits every letter once;
    shift 0 is the question as given.
    """
    letters = list(options)
    if not letters or answer not in options:
        raise InputError(f"answer {answer!r} must be one of the option letters {letters}")
    n = len(letters)
    texts = [options[k] for k in letters]
    index = letters.index(answer)
    return [
        ({letters[i]: texts[(i + k) % n] for i in range(n)}, letters[(index - k) % n])
        for k in range(n)
    ]


def circular_accuracy(question_ids: Sequence[Hashable], correct: Sequence[bool],
                      expected_passes: Mapping[Hashable, int] | None = None) -> float:
    """Fraction of questions answered right in every one of their passes (one pass per circular shift).

    ``question_ids[i]`` names the question of pass ``i``. With ``expected_passes`` (question -> number of
    options), a question with a missing or extra pass is an error instead of silently counting on fewer passes.
    """
    _same_length(question_ids, correct, "question_ids and correct")
    if not question_ids:
        raise InputError("circular accuracy of an empty list is undefined")
    passes: dict[Hashable, list[bool]] = defaultdict(list)
    for qid, ok in zip(question_ids, correct):
        passes[qid].append(bool(ok))
    if expected_passes is not None:
        for qid, results in passes.items():
            if expected_passes.get(qid) != len(results):
                raise InputError(f"question {qid!r} has {len(results)} passes, expected {expected_passes.get(qid)}")
    return sum(all(results) for results in passes.values()) / len(passes)


# ----------------------------------------------------------------------------------------------- VQA accuracy

_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
# The punctuation the official VQA evaluation strips; ':', '%', '$', '#', '&' and '*' are kept there too.
_VQA_PUNCT = frozenset(';/[]"{}()=+\\_-><@`,?!')


def normalise_vqa_answer(text: str) -> str:
    """An answer normalised as the VQA metric does, so that spelling variants compare equal.

    Steps: NFKC (full-width characters); lower case; newlines and tabs to spaces; commas inside numbers
    dropped ("1,000" -> "1000"); periods dropped unless a digit follows ("3.5" stays); apostrophes dropped, which
    makes "don't" and "dont" agree (the official metric maps the apostrophe-less spellings of contractions onto
    the apostrophe ones, the same equivalence); the official punctuation list and all non-ASCII punctuation
    ("。", "“") become spaces; number words "none", "zero" .. "ten" become digits; the articles a / an / the are
    removed; whitespace is collapsed. Unlike the official script, glued punctuation always becomes a space
    (the official script sometimes deletes it instead); applied to both sides, this rarely changes a match.
    """
    text = unicodedata.normalize("NFKC", _pred(text)).lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)
    text = re.sub(r"\.(?!\d)", " ", text)
    text = re.sub(r"['’‘`´]", "", text)
    text = "".join(
        " " if ch in _VQA_PUNCT or ch.isspace() or (ord(ch) > 127 and unicodedata.category(ch).startswith("P"))
        else ch
        for ch in text
    )
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def vqa_accuracy(pred: str | None, gold_answers: Sequence[str], leave_one_out: bool = False) -> float:
    """VQA accuracy of one prediction: min(#gold answers equal to it / 3, 1), after normalisation.

    With ``leave_one_out`` the score is averaged over the 10 subsets of 9 human answers, as the official VQA v2
    server does (3 matching answers out of 10 then score 0.9, not 1). An empty prediction scores 0.
    """
    golds = [normalise_vqa_answer(g) for g in _golds(gold_answers)]
    said = normalise_vqa_answer(_pred(pred))
    if not said:
        return 0.0
    matches = [g == said for g in golds]
    if not leave_one_out:
        return min(sum(matches) / 3, 1.0)
    total = sum(matches)
    return sum(min((total - m) / 3, 1.0) for m in matches) / len(matches)


# ----------------------------------------------------------------------------------------------- ANLS, relaxed


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(pred: str | None, golds: str | Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one prediction (DocVQA): the best over the gold answers of
    1 - NL if NL < threshold else 0, where NL = edit distance / length of the longer string.

    Strings are compared lower-case with whitespace collapsed; two empty strings are identical (score 1).
    """
    if not 0 < threshold <= 1:
        raise InputError(f"threshold must be in (0, 1], got {threshold}")
    said = " ".join(_pred(pred).lower().split())
    best = 0.0
    for gold in _golds(golds):
        gold = " ".join(gold.lower().split())
        longest = max(len(said), len(gold))
        nl = _levenshtein(said, gold) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def relaxed_accuracy(pred: str | None, gold: str, tol: float = 0.05) -> float:
    """ChartQA's relaxed accuracy: numbers may differ by ``tol`` relative to the gold; other answers must match
    exactly (case-insensitive, whitespace collapsed, final full stop ignored).

    Both sides count as numbers only when they are one number each ("12.5", "1,200", "25%", "$3", "4 kg");
    "25%" also matches a gold 0.25 (see :func:`numbers_match`). A gold of 0 needs exactly 0.
    """
    if tol < 0:
        raise InputError(f"tol must be >= 0, got {tol}")
    said = _pred(pred)
    if not isinstance(gold, str):
        raise InputError(f"gold must be a str, got {type(gold).__name__}")
    if parse_number(said) is not None and parse_number(gold) is not None:
        return float(numbers_match(said, gold, rel_tol=tol))

    def norm(s: str) -> str:
        return " ".join(s.lower().split()).rstrip(".")

    return float(bool(said.strip()) and norm(said) == norm(gold))


# ----------------------------------------------------------------------------------------------- OCRBench


def ocrbench_correct(pred: str | None, golds: str | Sequence[str], category: str) -> bool:
    """OCRBench's rule: correct when some gold answer occurs inside the prediction.

    Both sides are lower-cased and newlines become spaces; for the handwritten-formula category (HME100k)
    case is kept and all whitespace is removed instead, since LaTeX spacing is arbitrary. Empty gold strings
    are skipped (they would occur in every prediction).
    """
    if not isinstance(category, str):
        raise InputError(f"category must be a str, got {type(category).__name__}")
    said = _pred(pred)
    hme = " ".join(category.lower().split()) in _HME_CATEGORIES
    for gold in _golds(golds):
        if hme:
            g, p = "".join(gold.split()), "".join(said.split())
        else:
            g, p = gold.lower().strip().replace("\n", " "), said.lower().strip().replace("\n", " ")
        if g and g in p:
            return True
    return False


def ocrbench_score(correct: Sequence[bool]) -> int:
    """OCRBench's score: the number of correct samples (out of the benchmark's 1000)."""
    if len(correct) > 1000:
        raise InputError(f"OCRBench has 1000 samples, got {len(correct)} results")
    return sum(bool(c) for c in correct)


# ----------------------------------------------------------------------------------------------- grounding


def _box(box: object, name: str) -> tuple[float, float, float, float]:
    if (
        not isinstance(box, Sequence) or isinstance(box, str) or len(box) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        raise InputError(f"{name} must be four finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    return x1, y1, x2, y2


def iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; corners may come in either order. 0 if the union
    is empty."""
    ax1, ay1, ax2, ay2 = _box(box_a, "box_a")
    bx1, by1, bx2, by2 = _box(box_b, "box_b")
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def grounding_hit(pred_box: Sequence[float] | None, gold_box: Sequence[float], threshold: float = 0.5) -> bool:
    """RefCOCO's hit: IoU >= ``threshold`` between the predicted box (clamped to the 0-1000 grid) and the gold.

    A missing prediction (None) is a miss.
    """
    if pred_box is None:
        return False
    x1, y1, x2, y2 = (min(max(v, 0.0), 1000.0) for v in _box(pred_box, "pred_box"))
    return iou((x1, y1, x2, y2), gold_box) >= threshold


# ----------------------------------------------------------------------------------------------- aggregation


def per_category(scores: Sequence[float], categories: Sequence[str]) -> dict[str, float]:
    """Mean score of each category, keys sorted."""
    _same_length(scores, categories, "scores and categories")
    groups: dict[str, list[float]] = defaultdict(list)
    for score, category in zip(scores, categories):
        groups[category].append(float(score))
    return {c: sum(v) / len(v) for c, v in sorted(groups.items())}


def opencompass_average(results: Mapping[str, float]) -> float | None:
    """The OpenCompass average (PAPER.md section 9.1), or None unless all 8 benchmarks are in ``results``.

    ``results`` maps benchmark names (any spelling in _OPENCOMPASS_ALIASES, e.g. "MMBench v1.1",
    "MMBench_DEV_EN_V11", "MathVista testmini") to scores in percent; OCRBench is given as its 0-1000 score and
    enters the average divided by 10, as in the paper's tables. Other benchmarks are ignored.
    """
    found: dict[str, float] = {}
    for name, value in results.items():
        canonical = _OPENCOMPASS_ALIASES.get(re.sub(r"[^a-z0-9]", "", str(name).lower()))
        if canonical is None:
            continue
        if canonical in found:
            raise InputError(f"{canonical} is given twice (as {name!r} and another spelling)")
        limit = 1000.0 if canonical == "OCRBench" else 100.0
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= limit:
            raise InputError(f"{name} must be a score in [0, {limit:g}], got {value!r}")
        found[canonical] = value / 10 if canonical == "OCRBench" else float(value)
    if len(found) < len(OPENCOMPASS_BENCHMARKS):
        return None
    return sum(found.values()) / len(found)
