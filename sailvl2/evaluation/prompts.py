"""Model inputs for benchmark items, as the SAIL-VL VLMEvalKit wrapper builds them (PAPER.md 9.4, FACTS.md
"Evaluation prompts of the SAIL wrapper").

:func:`build_prompt` gives the *user text* with ``<image>`` placeholders (the form ``SAILVL2.chat`` and the
processor take: one ``<image>`` per image, in order; the chat template is added later) plus the images and
tile settings. Layout, top to bottom:

- images: one image -> ``<image>\\n``; several -> ``Image-1: <image>\\n`` ``Image-2: <image>\\n`` ...; video
  frames -> ``Frame-1: <image>\\n`` ... (always numbered);
- the hint on its own line, then the question (grounding: the question inside the grounding request);
- options, one ``\\nA. text`` line each, then ``\\nAnswer with the option's letter from the given choices
  directly.`` (Chinese text anywhere in hint/question/options -> the Chinese instruction);
- without options: the kind's suffix (short answer: ``\\nAnswer the question using a single word or
  phrase.``; yes/no and others per benchmark, see ``registry.py``), or ``spec.instruction`` when set;
- thinking: the -Thinking checkpoints' reasoning instruction appended directly (FACTS.md "Thinking mode").

Tiles: ``max_num`` per image is ``max(1, min(spec.max_num, spec.total_max_num // number_of_images))`` (FACTS.md:
the wrapper caps the sum of max_num over a request's images at 64), the same rule the processor applies, so
passing it on changes nothing there. MSAC only for a single image. ``spec.upscale`` resizes the first image
(bilinear), as the wrapper does for MMMU. Video items keep ``spec.num_frames`` evenly spaced frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from ..errors import TileBudgetError
from ..processing.images import load_image
from ..processing.prompt import IMAGE_PLACEHOLDER, THINKING_SUFFIX
from .datasets import BenchmarkItem
from .registry import BenchmarkKind, BenchmarkSpec

__all__ = [
    "GROUNDING_TEMPLATE",
    "MC_INSTRUCTION",
    "MC_INSTRUCTION_ZH",
    "PreparedInput",
    "SHORT_ANSWER_INSTRUCTION",
    "build_prompt",
]

# Published strings (PAPER.md 9.4; FACTS.md).
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
# The "Chinese variant" of PAPER.md 9.4; its wording is not in the reference: our choice, the wording of the
# InternVL-style wrappers in VLMEvalKit ("answer the option letter directly").
MC_INSTRUCTION_ZH = "请直接回答选项字母。"
# Multiple-choice kind but a row without options (open MMMU questions). Not in the reference: our choice,
# the VLMEvalKit InternVL-style wording.
_NO_OPTIONS_INSTRUCTION = "Answer the question directly."
_NO_OPTIONS_INSTRUCTION_ZH = "请直接回答问题。"
# Yes/no benchmarks without their own suffix (POPE and unknown ones). Our choice: HallusionBench's published
# suffix "Please answer yes or no. ..." (PAPER.md 9.4), which pins the answer to one word.
_YES_NO_SUFFIX = " Please answer yes or no. " + SHORT_ANSWER_INSTRUCTION
# Grounding request; the reference only says the prompts ask for 0-1000 coordinates (PAPER.md 9.1) and that
# answers come as <ref>..</ref><box>[[x1, y1, x2, y2]]</box> (FACTS.md). Our choice: the InternVL-family
# RefCOCO request, which names the expression inside <ref></ref>.
GROUNDING_TEMPLATE = "Please provide the bounding box coordinate of the region this sentence describes: <ref>{}</ref>"

_T = TypeVar("_T")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# A literal "<image>" inside dataset text would be taken as an extra placeholder by the processor; our choice
# is to write it as "(image)".
_LITERAL_PLACEHOLDER = "(image)"


@dataclass
class PreparedInput:
    """What the model (or an endpoint) gets for one item: ``text`` is the user message with one ``<image>``
    per image, ``images`` are RGB PIL images (already upscaled / frame-sampled), ``max_num`` is the per-image
    tile budget, ``use_msac`` the MSAC flag, ``max_new_tokens`` the answer budget (greedy decoding)."""

    index: str
    text: str
    images: list[Image.Image]
    max_num: int
    use_msac: bool
    max_new_tokens: int
    thinking: bool = False


def build_prompt(item: BenchmarkItem, spec: BenchmarkSpec, thinking: bool = False) -> PreparedInput:
    """The prepared input of ``item`` under ``spec``; ``thinking`` adds the reasoning instruction and uses
    ``spec.thinking_max_new_tokens``."""
    video = spec.kind is BenchmarkKind.VIDEO
    encoded = _sample_frames(item.image_data, spec.num_frames) if video else item.image_data
    if len(encoded) > spec.total_max_num:
        raise TileBudgetError(
            f"item {item.index!r} of {spec.name} has {len(encoded)} images but the tile budget total_max_num="
            f"{spec.total_max_num} allows at most {spec.total_max_num} (one tile each)"
        )
    images = [load_image(data) for data in encoded]  # sample first: only the kept frames are decoded
    if images and spec.upscale != 1.0:
        first = images[0]
        size = (max(1, round(first.width * spec.upscale)), max(1, round(first.height * spec.upscale)))
        images = [first.resize(size, Image.BILINEAR), *images[1:]]
    text = _image_prefix(len(images), video) + _body(item, spec)
    if thinking and not text.endswith(THINKING_SUFFIX):  # suite records may carry the instruction already
        text += THINKING_SUFFIX
    return PreparedInput(
        index=item.index,
        text=text,
        images=images,
        max_num=max(1, min(spec.max_num, spec.total_max_num // max(1, len(images)))),
        use_msac=spec.use_msac and len(images) == 1,
        max_new_tokens=spec.thinking_max_new_tokens if thinking else spec.max_new_tokens,
        thinking=thinking,
    )


def _clean(text: str) -> str:
    return text.replace(IMAGE_PLACEHOLDER, _LITERAL_PLACEHOLDER)


def _image_prefix(count: int, video: bool) -> str:
    if count == 1 and not video:
        return IMAGE_PLACEHOLDER + "\n"
    label = "Frame" if video else "Image"
    return "".join(f"{label}-{k}: {IMAGE_PLACEHOLDER}\n" for k in range(1, count + 1))


def _body(item: BenchmarkItem, spec: BenchmarkSpec) -> str:
    question = _clean(item.question)
    if spec.kind is BenchmarkKind.GROUNDING:
        return GROUNDING_TEMPLATE.format(question) + (spec.instruction or "")
    # The hint goes on the line before the question (the InternVL-style wrapper's layout; VLMEvalKit's generic
    # prompt writes "Hint: ..." instead).
    body = f"{_clean(item.hint)}\n{question}" if item.hint else question
    if item.options:
        body += "".join(f"\n{letter}. {_clean(text)}" for letter, text in item.options.items())
        if spec.instruction is not None:
            return body + spec.instruction
        return body + "\n" + (MC_INSTRUCTION_ZH if _CJK.search(body) else MC_INSTRUCTION)
    if spec.instruction is not None:
        return body + spec.instruction
    if spec.kind is BenchmarkKind.MULTIPLE_CHOICE:
        return body + "\n" + (_NO_OPTIONS_INSTRUCTION_ZH if _CJK.search(body) else _NO_OPTIONS_INSTRUCTION)
    if spec.kind is BenchmarkKind.SHORT_ANSWER:
        return body + "\n" + SHORT_ANSWER_INSTRUCTION
    if spec.kind is BenchmarkKind.YES_NO:
        return body + _YES_NO_SUFFIX
    return body  # open answer, video without options: the question as it is


def _sample_frames(frames: list[_T], count: int) -> list[_T]:
    """``count`` evenly spaced frames (the centre of each of ``count`` equal segments). The paper samples 16
    frames at random (PAPER.md 9.1); our choice is even spacing, so runs are reproducible."""
    if len(frames) <= count:
        return frames
    return [frames[int((k + 0.5) * len(frames) / count)] for k in range(count)]
