"""The ``cap2qa`` map stage: QA pairs written from caption records by an LLM endpoint (PAPER.md 4.2).

Each generated QA record is returned with the caption's decision (``Decision.generated``), so the runner
places it right after its caption record with the id ``<caption id>:cap2qa.<k>``; the stages after this one
check, score and dedup it like any record, and it reaches the curated output (and the report's counts) as a
record of its own. A QA record shares the caption's ``image`` / ``video`` value (relative paths resolve as the
caption's do, so ``images: copy`` and ``images: reference`` both work) and names its caption in
``source_caption``.

Items that are not caption records (one human and one gpt turn; with ``only_tasks``, also a ``task`` field
in that list) pass untouched. A caption whose replies never validated is kept with ``cap2qa_pairs`` 0, or
with ``drop_failed: true`` dropped with ``"cap2qa: no valid QA after N attempt(s): <last problem>"``.

Settings (YAML): ``api_base``, ``model`` (required), ``api_key_env`` (name of an environment variable that
holds the key; keys never go into pipeline files), ``num_pairs``, ``min_pairs``, ``max_attempts``, ``prompt``
or ``prompt_file`` (template with ``{caption}`` / ``{num_pairs}``), ``verify`` (``tokens`` | ``none``),
``allow_yes_no``, ``max_new_tokens``, ``temperature``, ``timeout``, ``retries``, ``concurrency``,
``only_tasks``, ``drop_failed``. Scores (on the caption): ``cap2qa_pairs``, ``cap2qa_attempts``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ...errors import ConfigError, InputError
from ..cap2qa import DEFAULT_PROMPT, CaptionToQA, Cap2QASettings, caption_of
from ..types import CurationError, Decision, Item
from . import register_stage

__all__ = ["Cap2QAStage"]

_SHARED_FIELDS = ("image", "video")  # a QA record is about the caption's pictures


@register_stage("cap2qa")
@dataclass
class Cap2QAStage:
    name: ClassVar[str] = "cap2qa"
    api_base: str = ""
    model: str = ""
    api_key_env: str | None = None
    num_pairs: int = 3
    min_pairs: int = 1
    max_attempts: int = 3
    prompt: str | None = None
    prompt_file: str | None = None
    verify: str = "tokens"
    allow_yes_no: bool = False
    max_new_tokens: int = 1024
    temperature: float = 0.0
    timeout: float = 120.0
    retries: int = 3
    concurrency: int = 4
    only_tasks: list[str] | None = None
    drop_failed: bool = False
    _generator: CaptionToQA | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prompt is not None and self.prompt_file is not None:
            raise CurationError(f"stage {self.name!r}: give prompt or prompt_file, not both")
        if self.prompt_file is not None:
            try:
                self.prompt = Path(self.prompt_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise CurationError(f"stage {self.name!r}: cannot read prompt_file {self.prompt_file!r}: {exc}") from exc
        if self.concurrency < 1:
            raise CurationError(f"stage {self.name!r}: concurrency must be >= 1, got {self.concurrency}")
        try:
            self._settings()
            self._endpoint_settings()
        except (InputError, ConfigError) as exc:
            raise CurationError(f"stage {self.name!r}: {exc}") from exc

    def _settings(self) -> Cap2QASettings:
        return Cap2QASettings(num_pairs=self.num_pairs, min_pairs=self.min_pairs, max_attempts=self.max_attempts,
                              prompt=self.prompt or DEFAULT_PROMPT, verify=self.verify,
                              allow_yes_no=self.allow_yes_no, max_new_tokens=self.max_new_tokens)

    def _endpoint_settings(self) -> Any:
        from ...evaluation.endpoint import EndpointSettings

        key = None
        if self.api_key_env:  # read in the worker at setup; a missing variable is the user's to fix
            key = os.environ.get(self.api_key_env)
        return EndpointSettings(api_base=self.api_base, model=self.model, api_key=key,
                                max_tokens=self.max_new_tokens, timeout=self.timeout, retries=self.retries,
                                extra_body={"temperature": self.temperature} if self.temperature else {})

    def setup(self) -> None:
        from ...evaluation.endpoint import EndpointClient

        if self.api_key_env and self.api_key_env not in os.environ:
            raise CurationError(f"stage {self.name!r}: environment variable {self.api_key_env!r} is not set")
        self._generator = CaptionToQA(EndpointClient(self._endpoint_settings()), self._settings())

    def _wanted(self, item: Item) -> bool:
        if caption_of(item.record) is None:
            return False
        return self.only_tasks is None or item.record.get("task") in self.only_tasks

    def process(self, items: list[Item]) -> list[Decision]:
        if self._generator is None:
            self.setup()
        chosen = [item for item in items if self._wanted(item)]
        results = self._generator.generate_many([item.record for item in chosen],  # type: ignore[union-attr]
                                                [item.id for item in chosen], self.concurrency)
        by_id = {item.id: result for item, result in zip(chosen, results)}
        decisions = []
        for item in items:
            result = by_id.get(item.id)
            if result is None:
                decisions.append(Decision(item.id, self.name, True))
                continue
            scores = {"cap2qa_pairs": float(len(result.pairs)), "cap2qa_attempts": float(result.attempts)}
            generated = tuple(_with_shared_fields(row, item.record) for row in result.records)
            if result.ok or not self.drop_failed:
                decisions.append(Decision(item.id, self.name, True, scores=scores, generated=generated))
            else:
                last = result.problems[-1] if result.problems else "no reply"
                decisions.append(Decision(item.id, self.name, False, f"cap2qa: no valid QA after {result.attempts} "
                                                                     f"attempt(s): {last}", scores, generated))
        return decisions


def _with_shared_fields(row: Mapping[str, Any], caption: Mapping[str, Any]) -> dict[str, Any]:
    """A QA record with the caption record's ``image`` / ``video`` value (the id is the runner's to set)."""
    shared = {key: caption[key] for key in _SHARED_FIELDS if key in caption}
    return {**shared, **{key: value for key, value in row.items() if key not in _SHARED_FIELDS and key != "id"}}
