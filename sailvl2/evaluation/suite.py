"""Our own task suite (the nano ladder's generated VQA suite) as a VLMEvalKit-style benchmark.

:func:`export_suite` turns a suite split (the JSONL records ``sailvl2.nano.evaluate.load_split`` reads:
``conversations``, ``image``, ``answer``, ``task``, ``kind``) into a TSV that ``datasets.load_tsv`` reads, so
``sailvl2 eval`` can run it like any other benchmark and any other VLMEvalKit-style tool can read it.

One TSV row per record: ``index`` = the record's ``id``; ``image`` = the image files' own bytes (base64, so the
pixels are exactly the files'); ``question`` = the first human turn without its image prefix (``<image>\\n``,
or ``Image-1: <image>\\nImage-2: <image>\\n...``), which ``prompts.build_prompt`` writes back identically;
``answer`` = the stored answer as text (a grounding box as ``[x1, y1, x2, y2]``); ``category`` = the task;
extra columns ``suite_answer`` (the answer as JSON, so boxes come back as lists) and ``suite_kind``
(``direct`` / ``cot``; reasoning questions already carry the thinking instruction in their text).

The benchmark is named :data:`SUITE_BENCHMARK` (any name that starts with it, ignoring case and ``-_ .``,
e.g. ``SAILVL2-Suite_heldout``). Its spec (:func:`suite_spec`) is a short-answer kind with no added instruction
and the nano report's settings, so the prompt, the tiles and the answer budget equal those of
``sailvl2.nano.evaluate.evaluate`` as the nano report runs it; ``scoring.py`` scores it with the nano scorer
(``sailvl2.nano.evaluate.score``) on the record rebuilt by :func:`suite_record`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..processing.prompt import IMAGE_PLACEHOLDER
from .datasets import BenchmarkItem, write_tsv
from .registry import BenchmarkKind, BenchmarkSpec

__all__ = [
    "SUITE_BENCHMARK", "SUITE_MAX_NEW_TOKENS", "export_suite", "is_suite", "suite_items", "suite_record", "suite_spec",
]

SUITE_BENCHMARK = "SAILVL2-Suite"
# The nano report's evaluation settings (sailvl2/nano/ship.py: evaluate(..., max_new_tokens=96), max_num=1, the
# default of nano.evaluate.evaluate): the reasoning records need ~96 tokens for their chains.
SUITE_MAX_NEW_TOKENS = 96
_SUITE_MAX_NUM = 1


def is_suite(name: str) -> bool:
    """True when benchmark ``name`` is the task suite (it starts with :data:`SUITE_BENCHMARK`)."""
    key = re.sub(r"[-_ .]", "", name).lower()
    return key.startswith(re.sub(r"[-_ .]", "", SUITE_BENCHMARK).lower())


def suite_spec(name: str = SUITE_BENCHMARK) -> BenchmarkSpec:
    """The suite's spec: short answers, the question sent as it is (``instruction=""``), one tile per image
    without MSAC (the nano processor's setting; with one tile MSAC has no second grid to add) and 96 new tokens."""
    return BenchmarkSpec(name, BenchmarkKind.SHORT_ANSWER, max_num=_SUITE_MAX_NUM, use_msac=False, instruction="",
                         max_new_tokens=SUITE_MAX_NEW_TOKENS)


def _image_prefix(count: int) -> str:
    # The nano suite writes its images as the release chat() does (FACTS.md "Prompt format"); build_prompt
    # writes the same prefix for 0, 1 and several images.
    if count == 1:
        return IMAGE_PLACEHOLDER + "\n"
    return "".join(f"Image-{k}: {IMAGE_PLACEHOLDER}\n" for k in range(1, count + 1)) if count else ""


def suite_items(records: Sequence[dict[str, Any]]) -> list[BenchmarkItem]:
    """Benchmark items for suite records whose ``image`` entries are file paths (as ``load_split`` returns
    them). Raises :class:`DatasetError` for a record whose prompt the TSV could not reproduce exactly."""
    items = []
    for number, record in enumerate(records):
        index = str(record.get("id", number))
        try:
            question = record["conversations"][0]["value"]
            answer = record["answer"]
        except (KeyError, IndexError, TypeError):
            raise DatasetError(f"suite record {index!r} has no conversations[0].value or no answer") from None
        images = record.get("image") or []
        images = [images] if isinstance(images, str) else list(images)
        prefix = _image_prefix(len(images))
        rest = question[len(prefix):]
        if not question.startswith(prefix) or IMAGE_PLACEHOLDER in rest:
            raise DatasetError(
                f"suite record {index!r}: its question does not start with the prefix for {len(images)} image(s) "
                f"({prefix!r}) or has '<image>' elsewhere, so the TSV cannot reproduce its prompt"
            )
        try:
            image_data = [Path(image).read_bytes() for image in images]
        except OSError as exc:
            raise DatasetError(f"suite record {index!r}: cannot read image {exc.filename!r}: {exc.strerror}") from None
        text_answer = json.dumps(answer) if isinstance(answer, list) else str(answer)
        extra = {"suite_answer": json.dumps(answer, ensure_ascii=False)}
        if record.get("kind"):
            extra["suite_kind"] = str(record["kind"])
        items.append(BenchmarkItem(index=index, question=rest, answer=text_answer, category=record.get("task"),
                                   image_data=image_data, extra=extra))
    return items


def export_suite(split: str | os.PathLike, out: str | os.PathLike, limit: int | None = None) -> Path:
    """Write the suite split JSONL ``split`` (images relative to its folder) as a TSV at ``out`` (atomic);
    ``limit`` keeps the first records. Returns the TSV path."""
    from ..nano.evaluate import load_split

    split = Path(split)
    if not split.is_file():
        raise DatasetError(f"suite split {str(split)!r} not found")
    try:
        records = load_split(split, limit)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"suite split {str(split)!r} is not JSONL suite records: {exc}") from None
    if not records:
        raise DatasetError(f"suite split {str(split)!r} has no records")
    return write_tsv(suite_items(records), out)


def suite_record(item: BenchmarkItem) -> dict[str, Any]:
    """The fields of the suite record ``item`` came from that the nano scorer reads (``answer``, ``kind``,
    ``task``, ``id``)."""
    raw = item.extra.get("suite_answer")
    try:
        answer = json.loads(raw) if raw is not None else item.answer
    except ValueError:
        answer = item.answer  # an edited TSV: fall back on the text answer
    record: dict[str, Any] = {"id": item.index, "answer": answer, "task": item.category or "all"}
    if "suite_kind" in item.extra:
        record["kind"] = item.extra["suite_kind"]
    return record
