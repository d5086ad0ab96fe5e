"""Benchmark registry: what kind of answer each benchmark expects and how many tiles its images may use.

Each known benchmark family maps to a :class:`BenchmarkSpec`. The tile budgets, the MSAC flag, the MMMU 2x
upscale and the video frame count are the published settings of the SAIL-VL VLMEvalKit wrapper (PAPER.md 2.3,
2.6, 9.1; FACTS.md "Image preprocessing"); every one is a field with that value as its default, so a run can
change it with ``dataclasses.replace(spec, max_num=6)``.

Lookup (:func:`get_spec`) ignores case and the characters ``-``, ``_``, space and ``.``; a name matches a
family when it equals it or starts with it (``DocVQA_VAL`` -> DocVQA, ``MMBench_DEV_EN_V11`` -> MMBench), and
the longest matching family wins (``MME-RealWorld`` is not ``MME``). Unknown names get a default spec
inferred from the TSV columns: option columns ``A``/``B`` present -> multiple choice, else open answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from ..errors import ConfigError

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_MAX_NUM",
    "DEFAULT_NUM_FRAMES",
    "DEFAULT_THINKING_MAX_NEW_TOKENS",
    "TOTAL_MAX_NUM",
    "BenchmarkKind",
    "BenchmarkSpec",
    "get_spec",
    "known_benchmarks",
]

# Tiles per image in the eval wrapper with MSAC (PAPER.md 2.3: "6 (older VLMEvalKit) or 10 (fork with MSAC)").
DEFAULT_MAX_NUM = 10
# Cap on max_num summed over the images of one request (FACTS.md: max_num = min(max_num, 64 // num_images)).
TOTAL_MAX_NUM = 64
# Video: 16 sampled frames (PAPER.md 2.6, 9.1).
DEFAULT_NUM_FRAMES = 16
# Our choice: the reference gives no answer budget for base models; 1024 covers every non-thinking answer
# format here (letters, short phrases, MMVet/LLaVABench paragraphs).
DEFAULT_MAX_NEW_TOKENS = 1024
# PAPER.md 9.4: greedy, max_new_tokens 4096 in the -Thinking configs.
DEFAULT_THINKING_MAX_NEW_TOKENS = 4096


class BenchmarkKind(str, Enum):
    """The answer format a benchmark expects; it selects the prompt layout (see ``prompts.py``)."""

    MULTIPLE_CHOICE = "multiple_choice"
    YES_NO = "yes_no"
    SHORT_ANSWER = "short_answer"
    OPEN_ANSWER = "open_answer"
    GROUNDING = "grounding"
    VIDEO = "video"


@dataclass(frozen=True)
class BenchmarkSpec:
    """How one benchmark is prompted and tiled.

    ``instruction``: text appended after the question (after the options when there are any), including its
    leading separator (``"\\n..."`` or ``" ..."``); ``None`` means the default of ``kind``. ``upscale``:
    factor applied (bilinear) to the first image of an item, as the wrapper does for MMMU. ``use_msac``
    applies to single-image items only. ``num_frames``: frames kept per video item.
    """

    name: str
    kind: BenchmarkKind
    max_num: int = DEFAULT_MAX_NUM
    total_max_num: int = TOTAL_MAX_NUM
    use_msac: bool = True
    upscale: float = 1.0
    instruction: str | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    thinking_max_new_tokens: int = DEFAULT_THINKING_MAX_NEW_TOKENS
    num_frames: int = DEFAULT_NUM_FRAMES

    def __post_init__(self) -> None:
        if not isinstance(self.kind, BenchmarkKind):
            try:
                object.__setattr__(self, "kind", BenchmarkKind(self.kind))
            except ValueError:
                kinds = ", ".join(k.value for k in BenchmarkKind)
                raise ConfigError(f"benchmark {self.name!r}: unknown kind {self.kind!r}; use one of {kinds}") from None
        for field_name in ("max_num", "total_max_num", "max_new_tokens", "thinking_max_new_tokens", "num_frames"):
            if int(getattr(self, field_name)) < 1:
                raise ConfigError(f"benchmark {self.name!r}: {field_name} must be >= 1, got {getattr(self, field_name)}")
        if self.max_num > self.total_max_num:
            raise ConfigError(
                f"benchmark {self.name!r}: max_num={self.max_num} exceeds total_max_num={self.total_max_num}"
            )
        if not self.upscale > 0:
            raise ConfigError(f"benchmark {self.name!r}: upscale must be > 0, got {self.upscale}")


_MC = BenchmarkKind.MULTIPLE_CHOICE
_YN = BenchmarkKind.YES_NO
_SHORT = BenchmarkKind.SHORT_ANSWER
_OPEN = BenchmarkKind.OPEN_ANSWER
_GROUND = BenchmarkKind.GROUNDING
_VIDEO = BenchmarkKind.VIDEO

# Suffixes of the SAIL (InternVL-style) wrapper that differ from the kind defaults (PAPER.md 9.4).
_SINGLE_WORD = "Answer the question using a single word or phrase."
_MC_LETTER = "Answer with the option's letter from the given choices directly."
_MME_SUFFIX = " " + _SINGLE_WORD
_HALLUSION_SUFFIX = " Please answer yes or no. " + _SINGLE_WORD
_DETAIL_SUFFIX = "\nAnswer this question in detail."
# Video uses one tile per frame and no MSAC (PAPER.md 2.6: "VLMEvalKit sets max_num = 1 for video").
_VIDEO_TILES = {"max_num": 1, "use_msac": False}

_FAMILIES: tuple[BenchmarkSpec, ...] = (
    # Multiple choice (options in columns A, B, ...).
    BenchmarkSpec("MMBench", _MC),
    BenchmarkSpec("CCBench", _MC),
    BenchmarkSpec("MMStar", _MC),
    BenchmarkSpec("AI2D", _MC),
    BenchmarkSpec("SEEDBench", _MC),
    BenchmarkSpec("ScienceQA", _MC),
    BenchmarkSpec("RealWorldQA", _MC),
    BenchmarkSpec("BLINK", _MC),
    BenchmarkSpec("MMIU", _MC),
    BenchmarkSpec("MUIRBench", _MC),
    BenchmarkSpec("MMT-Bench", _MC),
    # Tile budgets above the default (PAPER.md 2.3); MMMU also doubles its first image.
    BenchmarkSpec("MMMU", _MC, max_num=12, upscale=2.0),
    BenchmarkSpec("MME-RealWorld", _MC, max_num=12),
    BenchmarkSpec("HRBench", _MC, max_num=24),
    # Yes / no.
    BenchmarkSpec("MME", _YN, instruction=_MME_SUFFIX),
    BenchmarkSpec("HallusionBench", _YN, instruction=_HALLUSION_SUFFIX),
    BenchmarkSpec("AMBER", _YN, instruction=_HALLUSION_SUFFIX),
    BenchmarkSpec("POPE", _YN),
    # Short answers (OCR / document / chart VQA).
    BenchmarkSpec("OCRBench", _SHORT, max_num=24),
    BenchmarkSpec("InfoVQA", _SHORT, max_num=24),
    BenchmarkSpec("DocVQA", _SHORT, max_num=18),
    BenchmarkSpec("DUDE", _SHORT, max_num=18),
    BenchmarkSpec("SlideVQA", _SHORT, max_num=18),
    BenchmarkSpec("MMLongBench-Doc", _SHORT, max_num=18),
    BenchmarkSpec("ChartQA", _SHORT, max_num=12),
    BenchmarkSpec("OCRVQA", _SHORT, max_num=12),
    BenchmarkSpec("TextVQA", _SHORT),
    BenchmarkSpec("GQA", _SHORT),
    # Open answers: the question is sent as it is (maths, free-form, judge-scored).
    BenchmarkSpec("VCR", _OPEN, max_num=12),
    BenchmarkSpec("MMVet", _OPEN),
    BenchmarkSpec("MathVista", _OPEN),
    BenchmarkSpec("MathVision", _OPEN),
    BenchmarkSpec("MathVerse", _OPEN),
    BenchmarkSpec("DynaMath", _OPEN),
    BenchmarkSpec("OlympiadBench", _OPEN),
    BenchmarkSpec("MM-IFEval", _OPEN),
    BenchmarkSpec("LLaVABench", _OPEN, instruction=_DETAIL_SUFFIX),
    BenchmarkSpec("WildVision", _OPEN, instruction=_DETAIL_SUFFIX),
    # Grounding: RefCOCO, RefCOCO+, RefCOCOg (boxes in 0-1000, PAPER.md 9.1).
    BenchmarkSpec("RefCOCO", _GROUND),
    # Video: frames as images, 16 frames, one tile each.
    BenchmarkSpec("Video-MME", _VIDEO, instruction="\n" + _MC_LETTER, **_VIDEO_TILES),
    BenchmarkSpec("MMBench-Video", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("MVBench", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("TempCompass", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("LongVideoBench", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("MLVU", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("ActivityNetQA", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("NExTQA", _VIDEO, **_VIDEO_TILES),
    BenchmarkSpec("TVBench", _VIDEO, **_VIDEO_TILES),
)


def _key(name: str) -> str:
    return re.sub(r"[-_ .]", "", name).lower()


_BY_KEY = {_key(spec.name): spec for spec in _FAMILIES}


def known_benchmarks() -> list[str]:
    """Names of the registered benchmark families."""
    return [spec.name for spec in _FAMILIES]


def get_spec(name: str, columns: Iterable[str] | None = None) -> BenchmarkSpec:
    """The spec for benchmark ``name`` (a VLMEvalKit dataset name such as ``DocVQA_VAL``).

    The returned spec keeps the family's settings but carries the given ``name``. For names that match no
    family, ``columns`` (the TSV header) decides: option columns ``A`` and ``B`` -> multiple choice,
    otherwise open answer (the question is sent unchanged); both with the default tile settings.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"benchmark name must be a non-empty string, got {name!r}")
    key = _key(name)
    matches = [family for family_key, family in _BY_KEY.items() if key.startswith(family_key)]
    if matches:
        family = max(matches, key=lambda spec: len(_key(spec.name)))
        return replace(family, name=name)
    header = set(columns or ())
    kind = _MC if {"A", "B"} <= header else _OPEN
    return BenchmarkSpec(name, kind)
