"""The ``judge`` and ``video_judge`` stages: model judges score each record, the paper's rules filter.

``judge`` (PAPER.md 4.1): VIR and ITA score judges (1-5) and Yes/No judges look at the record's images and
its assistant text (the caption). Scores land in the decision as ``vir`` / ``ita`` (1-5) and ``vir_yes`` /
``ita_yes`` (1 = Yes, 0 = No); a record is dropped when a score is below ``vir_min`` / ``ita_min`` or, with
``require_yes``, a Yes/No judge says No. Reasons read ``"judge: ita 2 < 3"``, ``"judge: vir yes/no said
No"`` (several failures are joined with ``"; "``), ``"judge: ita_score reply unparseable"``. Records without
images are kept unjudged (both rubrics need the image).

``video_judge`` (PAPER.md 4.4): records with a ``video`` field (frame paths) get ``alignment`` (-1..10),
``richness`` (-1..7) and ``difficulty`` (-1..8), from the record's ``video_scores`` field when it holds
them, else from a judge; kept when alignment >= 5, richness >= 5 and difficulty >= 3 (the thresholds are
settings). Records without ``video`` pass untouched.

Backends: ``endpoint`` (an OpenAI-compatible server at ``api_base`` serving ``model``; the API key, if any,
comes from the environment variable named by ``api_key_env``, never from the YAML) or ``local`` (``model`` is
a checkpoint folder loaded in each worker). ``models`` maps single judges to other models, e.g. two trained
nano judges: ``models: {ita_score: runs/judge/score/final, ita_yesno: runs/judge/yesno/final}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..judges import (
    JUDGE_NAMES, PROMPT_STYLES, VIDEO_METRICS, EndpointJudge, JudgeRequest, LocalJudge, PromptJudge,
    caption_filter_reason, video_filter_reason,
)
from ..types import CurationError, Decision, Item
from . import register_stage
from .validate import TEXT_SOURCES, image_paths, record_text

__all__ = ["BACKENDS", "JudgeStage", "VideoJudgeStage"]

BACKENDS = ("endpoint", "local")


@dataclass
class _JudgeBackend:
    """Settings shared by both stages: where the judge model runs."""

    backend: str | None = "endpoint"
    model: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    api_base: str | None = None
    api_key_env: str | None = None
    prompt_style: str | None = None  # None: local -> the checkpoint's judge.json, endpoint -> rubric
    max_new_tokens: int = 8
    batch_size: int = 8  # local: rows per generation batch
    concurrency: int = 4  # endpoint: requests in flight
    timeout: float = 120.0
    retries: int = 3
    device: str = "cpu"
    dtype: str = "float32"

    def _check_backend(self, stage: str, required: bool) -> None:
        if self.backend is None and not required:
            return
        if self.backend not in BACKENDS:
            raise CurationError(f"stage {stage!r}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "endpoint" and not self.api_base:
            raise CurationError(f"stage {stage!r}: backend 'endpoint' needs api_base")
        if self.prompt_style is not None and self.prompt_style not in PROMPT_STYLES:
            raise CurationError(f"stage {stage!r}: prompt_style must be one of {PROMPT_STYLES}")
        self.models = dict(self.models or {})
        if not self.model and not self.models:
            raise CurationError(f"stage {stage!r}: set model (or models per judge)")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.concurrency < 1:
            raise CurationError(f"stage {stage!r}: max_new_tokens, batch_size and concurrency must be >= 1")

    def _judge_for(self, name: str, cache: dict[str, PromptJudge]) -> PromptJudge:
        model = self.models.get(name) or self.model
        if model is None:
            raise CurationError(f"no model for judge {name!r}: set model or models.{name}")
        if model not in cache:
            if self.backend == "local":
                cache[model] = LocalJudge(model, self.device, self.dtype, self.batch_size, self.max_new_tokens,
                                          self.prompt_style)
            else:
                api_key = os.environ.get(self.api_key_env) if self.api_key_env else None
                cache[model] = EndpointJudge(str(self.api_base), model, api_key, self.prompt_style or "rubric",
                                             self.max_new_tokens, self.concurrency, self.timeout, self.retries)
        return cache[model]


@register_stage("judge")
@dataclass
class JudgeStage(_JudgeBackend):
    """Settings of the ``judge`` stage (see the module docstring): the backend settings, ``judges`` (which
    of :data:`~sailvl2.curation.judges.JUDGE_NAMES` to ask), ``vir_min`` / ``ita_min`` / ``require_yes``
    (PAPER.md 4.1's rule), ``unparseable`` (``drop`` or ``keep`` a record whose judge reply cannot be read)
    and ``text_from`` (which turns are the caption)."""

    name: ClassVar[str] = "judge"
    judges: tuple[str, ...] = JUDGE_NAMES
    vir_min: float = 3
    ita_min: float = 3
    require_yes: bool = True
    unparseable: str = "drop"
    text_from: str = "gpt"

    def __post_init__(self) -> None:
        self.judges = (self.judges,) if isinstance(self.judges, str) else tuple(self.judges)
        unknown = sorted(set(self.judges) - set(JUDGE_NAMES))
        if unknown or not self.judges:
            raise CurationError(f"stage 'judge': judges must be some of {JUDGE_NAMES}, got {list(self.judges)}")
        if self.unparseable not in ("drop", "keep"):
            raise CurationError(f"stage 'judge': unparseable must be 'drop' or 'keep', got {self.unparseable!r}")
        if self.text_from not in TEXT_SOURCES:
            raise CurationError(f"stage 'judge': text_from must be one of {TEXT_SOURCES}")
        self._check_backend("judge", required=True)
        extra = sorted(set(self.models) - set(self.judges))
        if extra:
            raise CurationError(f"stage 'judge': models names judges that are not asked: {extra}")
        self._cache: dict[str, PromptJudge] = {}

    def setup(self) -> None:
        """Create the backends (a local model loads on its first request)."""
        for name in self.judges:
            self._judge_for(name, self._cache)

    def process(self, items: list[Item]) -> list[Decision]:
        requests = {index: JudgeRequest(tuple(paths), record_text(item.record, self.text_from))
                    for index, item in enumerate(items) if (paths := image_paths(item))}
        order = sorted(requests)
        replies: dict[int, dict[str, Any]] = {index: {} for index in order}
        for name in self.judges:
            verdicts = self._judge_for(name, self._cache).ask(name, [requests[i] for i in order])
            for index, verdict in zip(order, verdicts):
                replies[index][name] = verdict.value
        return [self._decide(item, replies.get(index)) for index, item in enumerate(items)]

    def _decide(self, item: Item, values: Mapping[str, Any] | None) -> Decision:
        if values is None:
            return Decision(item.id, self.name, True)
        scores: dict[str, float] = {}
        unreadable = [name for name, value in values.items() if value is None]
        for name, value in values.items():
            if value is not None:
                axis, kind = name.split("_")
                scores[axis if kind == "score" else f"{axis}_yes"] = float(value)
        if unreadable:
            scores["judge_unparseable"] = float(len(unreadable))
        failures = []
        if self.unparseable == "drop":
            failures += [f"{name} reply unparseable" for name in unreadable]
        rule = caption_filter_reason(scores, self.vir_min, self.ita_min, self.require_yes)
        if rule is not None:
            failures.append(rule.removeprefix("judge: "))
        reason = "judge: " + "; ".join(failures) if failures else None
        return Decision(item.id, self.name, reason is None, reason, scores)


@register_stage("video_judge")
@dataclass
class VideoJudgeStage(_JudgeBackend):
    """Settings of the ``video_judge`` stage: the backend settings (``backend: null`` uses only scores
    stored in the records), ``alignment_min`` / ``richness_min`` / ``difficulty_min`` (PAPER.md 4.4: 5, 5, 3),
    ``frames`` (how many of the record's frames the judge sees, evenly spaced; the paper's count is
    [NOT FOUND]) and ``scores_field`` (the record field with precomputed scores)."""

    name: ClassVar[str] = "video_judge"
    backend: str | None = None
    alignment_min: float = 5
    richness_min: float = 5
    difficulty_min: float = 3
    frames: int = 8
    scores_field: str = "video_scores"

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise CurationError("stage 'video_judge': frames must be >= 1")
        self._check_backend("video_judge", required=False)
        self._cache: dict[str, PromptJudge] = {}

    def setup(self) -> None:
        if self.backend is not None:
            for metric in VIDEO_METRICS:
                self._judge_for(f"video_{metric}", self._cache)

    def process(self, items: list[Item]) -> list[Decision]:
        values: dict[int, dict[str, float]] = {}
        wanted: dict[str, list[int]] = {metric: [] for metric in VIDEO_METRICS}
        for index, item in enumerate(items):
            if not item.record.get("video"):
                continue
            stored = item.record.get(self.scores_field)
            stored = stored if isinstance(stored, Mapping) else {}
            values[index] = {m: float(stored[m]) for m in VIDEO_METRICS if isinstance(stored.get(m), (int, float))}
            for metric in VIDEO_METRICS:
                if metric not in values[index] and self.backend is not None:
                    wanted[metric].append(index)
        for metric, indices in wanted.items():
            if not indices:
                continue
            requests = [JudgeRequest(tuple(self._frames(items[i])), record_text(items[i].record)) for i in indices]
            judge = self._judge_for(f"video_{metric}", self._cache)
            for index, verdict in zip(indices, judge.ask_video(metric, requests)):
                if verdict.value is not None:
                    values[index][metric] = float(verdict.value)
        decisions = []
        for index, item in enumerate(items):
            if index not in values:
                decisions.append(Decision(item.id, self.name, True))
                continue
            scores = values[index]
            reason = video_filter_reason(scores, self.alignment_min, self.richness_min, self.difficulty_min)
            decisions.append(Decision(item.id, self.name, reason is None, reason,
                                      {f"video_{k}": v for k, v in scores.items()}))
        return decisions

    def _frames(self, item: Item) -> list[str]:
        frames = image_paths(Item(item.id, {"video": item.record.get("video")}, item.root))
        if len(frames) <= self.frames:
            return frames
        step = len(frames) / self.frames  # evenly spaced, centred in each stretch
        return [frames[int(step * k + step / 2)] for k in range(self.frames)]
