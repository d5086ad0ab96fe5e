"""Quality judges for captions (VIR / ITA, PAPER.md 4.1) and videos (PAPER.md 4.4): prompts, reply parsing,
the filter rules, and two backends.

PAPER.md 4.1 scores every caption on two axes, 1-5 each: VIR (visual information richness: instances and
entities; visual complexity; fine-grained details) and ITA (image-text alignment: specificity; completeness;
accuracy). For each axis there is a *score judge* (1-5) and a *Yes/No judge*; a caption is dropped when
either score is < 3 or either judge says No. The paper does not publish its judge prompts ([NOT FOUND]): the
wording below is ours; the rubric items are the paper's. Two prompt styles:

* ``rubric`` - the full rubric in words, for a general vision model (a hosted API, a served SAIL-VL2);
* ``compact`` - one short line, for judges fine-tuned on it (``sailvl2.curation.train_judge``): the rubric
  is learned from the labels, and a short prompt keeps a nano model's training cheap.

Replies are parsed leniently (a digit 1-5, or Yes / No, among extra words); a reply that cannot be read
gives ``None`` and is counted in :attr:`PromptJudge.unparseable`.

Backends (both implement :class:`Judge`): :class:`EndpointJudge` (any OpenAI-compatible vision endpoint,
through :class:`sailvl2.evaluation.endpoint.EndpointClient`) and :class:`LocalJudge` (a sailvl2 checkpoint
loaded in this process, batched ``batch_chat``). A checkpoint written by ``train_judge`` carries a
``judge.json`` naming the prompt style it was trained on; :class:`LocalJudge` uses it by default.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..answers import split_thinking
from ..errors import CurationError, JudgeError

__all__ = [
    "JUDGE_CONFIG", "JUDGE_NAMES", "PROMPT_STYLES", "VIDEO_METRICS", "EndpointJudge", "Judge", "JudgeRequest", "LocalJudge",
    "PromptJudge", "Verdict", "caption_filter_reason", "judge_prompt", "parse_reply", "parse_score",
    "parse_yes_no", "video_filter_reason", "video_prompt",
]

JUDGE_NAMES = ("vir_score", "vir_yesno", "ita_score", "ita_yesno")
PROMPT_STYLES = ("rubric", "compact")
# PAPER.md 4.4: metric -> (lowest, highest); -1 means the judge refused.
VIDEO_METRICS: dict[str, tuple[int, int]] = {"alignment": (-1, 10), "richness": (-1, 7), "difficulty": (-1, 8)}
JUDGE_CONFIG = "judge.json"  # written next to a trained judge's weights

# ----------------------------------------------------------------------------------------------- prompts
# Our wording (the paper's prompts are [NOT FOUND]); items (a)-(c) are PAPER.md 4.1's rubric.
_VIR_RUBRIC = (
    "Judge the visual information richness (VIR) of the image. Consider:\n"
    "(a) instances and entities: how many there are, how diverse and how distinct;\n"
    "(b) visual complexity: colour, composition, texture;\n"
    "(c) fine-grained details: attributes, small objects, relations between objects and context.\n")
_ITA_RUBRIC = (
    "Judge how well the caption matches the image (image-text alignment, ITA). Consider:\n"
    "(a) specificity: concrete objects, attributes and relations rather than generic words;\n"
    "(b) completeness: every key element of the image is covered;\n"
    "(c) accuracy: nothing is hallucinated (no object, attribute or count that the image contradicts) and "
    "nothing is redundant.\n")
_SCALE = {
    "vir": "1 = almost nothing to see; 3 = a few clear objects with some detail; 5 = many diverse objects "
           "with rich detail.\nReply with one digit from 1 to 5.",
    "ita": "1 = wrong about the main content; 2 = a clear error; 3 = correct but vague or missing key "
           "elements; 4 = correct and specific, minor omissions; 5 = correct, specific and complete.\n"
           "Reply with one digit from 1 to 5.",
}
_YES_NO = {
    "vir": "Is the image rich enough in visual information to be worth a detailed training caption? "
           "Reply Yes or No.",
    "ita": "Is the caption an accurate and reasonably complete description of the image? Reply Yes or No.",
}
_COMPACT = {
    "vir_score": "Rate the visual richness of the image from 1 to 5.",
    "vir_yesno": "Is the image rich in visual information? Answer Yes or No.",
    "ita_score": "Caption: {caption}\nRate the caption from 1 to 5.",
    "ita_yesno": "Caption: {caption}\nDoes the caption match the image? Answer Yes or No.",
}
_VIDEO_RUBRIC = {  # PAPER.md 4.4's three metrics and ranges; wording ours
    "alignment": "Video-QA alignment: can the question be answered from these frames alone, as the annotation "
                 "(written on the full video) answers it? 0 = not at all, 10 = fully.",
    "richness": "Content richness of the video: element diversity, scene complexity, information density. "
                "0 = none, 7 = very rich.",
    "difficulty": "QA difficulty: reasoning depth, spatio-temporal understanding, multi-instance interaction, "
                  "external knowledge. 0 = trivial, 8 = very hard.",
}


def _check_name(name: str) -> tuple[str, str]:
    if name not in JUDGE_NAMES:
        raise CurationError(f"unknown judge {name!r}; expected one of {JUDGE_NAMES}")
    axis, kind = name.split("_")
    return axis, kind


def judge_prompt(name: str, caption: str = "", style: str = "rubric", num_images: int = 1) -> str:
    """The user text asking judge ``name`` about ``caption``: one ``<image>`` placeholder per image first (as
    the release's ``chat()`` places them), then the question. VIR judges look at the image only, so their
    prompts do not contain the caption."""
    axis, kind = _check_name(name)
    if style not in PROMPT_STYLES:
        raise CurationError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    caption, images = " ".join(caption.split()), "<image>\n" * num_images
    if style == "compact":
        return images + _COMPACT[name].format(caption=caption)
    rubric = _VIR_RUBRIC if axis == "vir" else _ITA_RUBRIC + f"Caption: {caption}\n"
    return images + rubric + (_SCALE[axis] if kind == "score" else _YES_NO[axis])


def video_prompt(metric: str, question_answer: str, num_images: int = 1) -> str:
    """The rubric prompt for one PAPER.md 4.4 video metric (``alignment``, ``richness``, ``difficulty``)."""
    if metric not in VIDEO_METRICS:
        raise CurationError(f"unknown video metric {metric!r}; expected one of {tuple(VIDEO_METRICS)}")
    low, high = VIDEO_METRICS[metric]
    qa = " ".join(question_answer.split())
    return ("<image>\n" * num_images + f"The images are frames sampled from a video.\nQuestion and answer: {qa}\n"
            f"{_VIDEO_RUBRIC[metric]}\nReply with one integer from 0 to {high}, or {low} if you cannot judge.")


# ----------------------------------------------------------------------------------------------- parsing
_SCALE_PHRASE = re.compile(r"\b(?:from\s+)?[01]\s*(?:-|–|to)\s*(?:5|7|8|10)\b|(?:/|\bout of\s+)(?:5|7|8|10)\b", re.I)
_LEADING_NUMBER = re.compile(r"^[^\w-]*(?:(?:score|rating|ita|vir|answer)\s*[:=]?\s*)?(-?\d+)(?!\.\d)(?!\d)", re.I)
_INTEGER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]\d)")
_WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_YES_NO_WORD = re.compile(r"\b(yes|no)\b", re.I)


def _answer_part(text: str) -> str:
    return split_thinking(text).answer if "</think>" in text else text.strip()


def parse_score(text: str, low: int = 1, high: int = 5) -> int | None:
    """The integer score in ``text`` (``low``..``high``), or None.

    Scale phrases ("1 to 5", "out of 5", "/5") are removed first; then a leading number decides
    ("Score: 4. The caption ..." -> 4), else the reply must hold exactly one distinct integer (or, for 1-5,
    one number word). Fractions ("3.5") and numbers out of range give None.
    """
    stripped = _SCALE_PHRASE.sub(" ", _answer_part(text))
    lead = _LEADING_NUMBER.match(stripped)
    if lead:
        value = int(lead.group(1))
        return value if low <= value <= high else None
    found = {float(m) for m in _INTEGER.findall(stripped)}
    if not found and high <= 5:
        found = {float(_WORD_NUMBERS[w.lower()]) for w in re.findall(r"\b(one|two|three|four|five)\b", stripped, re.I)}
    if len(found) != 1:
        return None
    value = found.pop()
    return int(value) if value.is_integer() and low <= value <= high else None


def parse_yes_no(text: str) -> bool | None:
    """True for Yes, False for No, None when neither or both are said (whole words, any case); a reply
    that starts with Yes / No is decided by that first word."""
    words = [w.lower() for w in _YES_NO_WORD.findall(_answer_part(text))]
    lead = re.match(r"^\W*(yes|no)\b", _answer_part(text), re.I)
    if lead:
        return lead.group(1).lower() == "yes"
    if len(set(words)) != 1:
        return None
    return words[0] == "yes"


def parse_reply(name: str, text: str) -> int | bool | None:
    """The value of judge ``name``'s reply: an int 1-5 for score judges, a bool for Yes/No judges."""
    _, kind = _check_name(name)
    return parse_score(text) if kind == "score" else parse_yes_no(text)


# ----------------------------------------------------------------------------------------------- filter rules


def caption_filter_reason(scores: Mapping[str, Any], vir_min: float = 3, ita_min: float = 3,
                          require_yes: bool = True) -> str | None:
    """PAPER.md 4.1's rule on judge outputs: None (keep), or the reason to drop. ``scores`` may hold
    ``vir`` / ``ita`` (1-5) and ``vir_yes`` / ``ita_yes`` (1 = Yes, 0 = No); absent judges do not vote."""
    failed = [f"{axis} {scores[axis]:g} < {minimum:g}" for axis, minimum in (("vir", vir_min), ("ita", ita_min))
              if scores.get(axis) is not None and float(scores[axis]) < minimum]
    if require_yes:
        failed += [f"{axis} yes/no said No" for axis in ("vir", "ita")
                   if scores.get(f"{axis}_yes") is not None and not float(scores[f"{axis}_yes"])]
    return "judge: " + "; ".join(failed) if failed else None


def video_filter_reason(scores: Mapping[str, Any], alignment_min: float = 5, richness_min: float = 5,
                        difficulty_min: float = 3) -> str | None:
    """PAPER.md 4.4's keep rule (alignment >= 5 AND richness >= 5 AND difficulty >= 3); a missing metric
    fails. Scores are keyed by metric name; -1 (refused) fails every threshold."""
    minimums = {"alignment": alignment_min, "richness": richness_min, "difficulty": difficulty_min}
    failed = []
    for metric, minimum in minimums.items():
        value = scores.get(metric)
        if value is None:
            failed.append(f"{metric} missing")
        elif float(value) < minimum:
            failed.append(f"{metric} {float(value):g} < {minimum:g}")
    return "video_judge: " + "; ".join(failed) if failed else None


# ----------------------------------------------------------------------------------------------- judges


@dataclass(frozen=True)
class JudgeRequest:
    """One thing to judge: its images (paths or PIL images; video frames in order) and its text."""

    images: tuple[Any, ...]
    caption: str = ""


@dataclass(frozen=True)
class Verdict:
    """A judge's answer: ``value`` (int score, bool Yes/No, or None when the reply was unreadable) and the
    raw ``reply``."""

    judge: str
    value: int | bool | None
    reply: str


@runtime_checkable
class Judge(Protocol):
    def ask(self, name: str, requests: Sequence[JudgeRequest]) -> list[Verdict]: ...


class PromptJudge(ABC):
    """Shared logic of the backends: prompt, generate (``_generate``), parse, count unreadable replies."""

    def __init__(self, prompt_style: str | None = "rubric", max_new_tokens: int = 8) -> None:
        if prompt_style is not None and prompt_style not in PROMPT_STYLES:
            raise CurationError(f"unknown prompt style {prompt_style!r}; expected one of {PROMPT_STYLES}")
        self.prompt_style = prompt_style
        self.max_new_tokens = max_new_tokens
        self.asked: Counter[str] = Counter()
        self.unparseable: Counter[str] = Counter()

    def ask(self, name: str, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        _check_name(name)
        if not requests:
            return []
        style = self._style()
        texts = [judge_prompt(name, request.caption, style, len(request.images)) for request in requests]
        replies = self._generate(texts, [list(r.images) for r in requests], self.max_new_tokens)
        return [self._verdict(name, reply, parse_reply(name, reply)) for reply in replies]

    def ask_video(self, metric: str, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """PAPER.md 4.4 scores (-1..max) for video requests (frames + question-and-answer text)."""
        low, high = VIDEO_METRICS.get(metric, (0, 0))
        if not requests:
            return []
        texts = [video_prompt(metric, request.caption, len(request.images)) for request in requests]
        replies = self._generate(texts, [list(r.images) for r in requests], self.max_new_tokens)
        return [self._verdict(f"video_{metric}", reply, parse_score(reply, low, high)) for reply in replies]

    def _verdict(self, name: str, reply: str, value: int | bool | None) -> Verdict:
        self.asked[name] += 1
        if value is None:
            self.unparseable[name] += 1
        return Verdict(name, value, reply)

    def _style(self) -> str:
        return self.prompt_style or "rubric"

    @abstractmethod
    def _generate(self, texts: list[str], images: list[list[Any]], max_new_tokens: int) -> list[str]:
        """One reply per (text, images): the backend's generation (endpoint or in-process model)."""


class EndpointJudge(PromptJudge):
    """A judge served by an OpenAI-compatible ``/v1/chat/completions`` endpoint (greedy decoding). Requests
    that still fail after the client's retries raise :class:`JudgeError`."""

    def __init__(self, api_base: str, model: str, api_key: str | None = None, prompt_style: str = "rubric",
                 max_new_tokens: int = 8, concurrency: int = 4, timeout: float = 120.0, retries: int = 3,
                 backoff: float = 1.0) -> None:
        from ..evaluation.endpoint import EndpointClient, EndpointSettings

        super().__init__(prompt_style, max_new_tokens)
        self.client = EndpointClient(EndpointSettings(api_base, model, api_key, max_tokens=max_new_tokens,
                                                      timeout=timeout, retries=retries, backoff=backoff,
                                                      concurrency=concurrency))

    def _generate(self, texts: list[str], images: list[list[Any]], max_new_tokens: int) -> list[str]:
        from ..evaluation.prompts import PreparedInput
        from ..processing.images import load_image

        prepared = [PreparedInput(str(i), text, [load_image(f) for f in frames],
                                  1, False, max_new_tokens) for i, (text, frames) in enumerate(zip(texts, images))]
        replies = []
        for completion in self.client.complete_many(prepared):
            if completion.error is not None:
                raise JudgeError(f"judge endpoint failed: {completion.error}")
            replies.append(completion.text or "")
        return replies


class LocalJudge(PromptJudge):
    """A sailvl2 checkpoint loaded in this process (lazily, on the first request), asked with batched
    greedy ``batch_chat``. ``model`` is a checkpoint folder or an already loaded ``SAILVL2``. With
    ``prompt_style=None`` the style comes from the checkpoint's ``judge.json`` (else ``rubric``)."""

    def __init__(self, model: Any, device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                 max_new_tokens: int = 4, prompt_style: str | None = None, max_num: int | None = None) -> None:
        super().__init__(prompt_style, max_new_tokens)
        self.model, self.device, self.dtype = model, device, dtype
        self.batch_size, self.max_num = batch_size, max_num
        self._vlm: Any = None if isinstance(model, (str, Path)) else model

    def _judge_config(self) -> dict[str, Any]:
        if isinstance(self.model, (str, Path)) and (Path(self.model) / JUDGE_CONFIG).is_file():
            return json.loads((Path(self.model) / JUDGE_CONFIG).read_text(encoding="utf-8"))
        return {}

    def _style(self) -> str:
        if self.prompt_style is not None:
            return self.prompt_style
        style = self._judge_config().get("prompt_style")
        return style if style in PROMPT_STYLES else "rubric"

    def _generate(self, texts: list[str], images: list[list[Any]], max_new_tokens: int) -> list[str]:
        # A verifying judge writes its checks before the verdict; its judge.json says how long that may take.
        max_new_tokens = max(max_new_tokens, int(self._judge_config().get("max_new_tokens", 0)))
        if self._vlm is None:
            from ..api import load

            self._vlm = load(self.model, device=self.device, dtype=self.dtype)
        responses = self._vlm.batch_chat(texts, images=images, max_new_tokens=max_new_tokens,
                                         batch_size=self.batch_size, max_num=self.max_num, progress=False)
        return [response.answer for response in responses]

    def __getstate__(self) -> dict[str, Any]:  # a loaded model never travels to worker processes
        state = dict(self.__dict__)
        if isinstance(self.model, (str, Path)):
            state["_vlm"] = None
        return state
