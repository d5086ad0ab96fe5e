"""Parsing and formatting of model answers: thinking blocks, ``\\boxed{}`` answers and grounding boxes.

The chat API, the evaluation and the RL rewards all need to read the same model outputs, so the rules live here
once. Only the standard library and PIL are used, so that importing this module never pulls in torch.

Formats (see the reference facts of the release):

- Thinking checkpoints answer ``<think> reasoning </think> answer`` with the final answer in ``\\boxed{...}``.
- Grounding answers are ``<ref>label</ref><box>[[x1, y1, x2, y2]]</box>`` with coordinates scaled to 0-1000
  independently along each image axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from sailvl2.errors import InputError

__all__ = [
    "GroundedBox",
    "box_coordinates",
    "ThinkingAnswer",
    "ThinkingSplit",
    "draw_boxes",
    "extract_boxed",
    "format_box",
    "parse_grounding",
    "parse_thinking_answer",
    "split_thinking",
]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: Grounding coordinates are integers on a 0..COORD_SCALE grid along each axis.
COORD_SCALE = 1000


def _require_str(text: object, name: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"{name} must be a str, got {type(text).__name__}")
    return text


# ----------------------------------------------------------------------------------------------- thinking


@dataclass(frozen=True)
class ThinkingSplit:
    """A model output split into its reasoning and its final answer.

    ``thinking`` is None when the output has no thinking tags at all (a non-thinking answer), and "" for an
    explicitly empty block (``<think></think>``), so callers can tell "did not think" from "thought nothing".
    ``format_ok`` is False only when the thinking block was never closed (typically a generation cut off by
    the token limit) or a new block was opened after the last close.
    """

    thinking: str | None
    answer: str
    format_ok: bool


def split_thinking(text: str) -> ThinkingSplit:
    """Split ``text`` at the LAST ``</think>``; the thinking starts after the first ``<think>``.

    The last close tag is used because a model may quote or repeat ``</think>`` inside its reasoning; the
    answer is what follows its final one. A missing opening tag is accepted (everything before ``</think>``
    is thinking) because chat templates may put ``<think>`` into the prompt, so it is absent from the output.
    Text before the opening tag is not part of either field.
    """
    text = _require_str(text)
    close = text.rfind(THINK_CLOSE)
    if close < 0:
        open_ = text.find(THINK_OPEN)
        if open_ < 0:
            return ThinkingSplit(thinking=None, answer=text.strip(), format_ok=True)
        # Unterminated: there is no answer yet, and guessing one from half a reasoning chain would let an RL
        # reward credit a truncated output.
        return ThinkingSplit(thinking=text[open_ + len(THINK_OPEN) :].strip(), answer="", format_ok=False)

    open_ = text.find(THINK_OPEN, 0, close)
    start = open_ + len(THINK_OPEN) if open_ >= 0 else 0
    thinking = text[start:close].strip()
    answer = text[close + len(THINK_CLOSE) :]
    format_ok = True
    reopened = answer.find(THINK_OPEN)
    if reopened >= 0:
        # A block opened after the last close is an unterminated second thinking block: keep only what was
        # written before it as the answer, and flag the format.
        answer = answer[:reopened]
        format_ok = False
    return ThinkingSplit(thinking=thinking, answer=answer.strip(), format_ok=format_ok)


# ----------------------------------------------------------------------------------------------- \boxed{}

# `\boxed` as a whole command name (not `\boxedx`), optional whitespace, then the opening brace.
_BOXED_RE = re.compile(r"\\boxed(?![A-Za-z])\s*\{")


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the brace that closes the group whose content starts at ``start``, or None.

    A backslash escapes the next character, so ``\\{`` and ``\\}`` (literal braces in LaTeX) do not count
    as grouping, and ``\\\\`` (a line break) does not escape the brace after it.
    """
    depth = 1
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content (stripped) of the last top-level ``\\boxed{...}`` in ``text``, or None.

    Boxes are scanned left to right and a box's content is skipped as a whole, so for
    ``\\boxed{\\boxed{x}}`` the outer box wins. If the last ``\\boxed{`` never closes (a truncated output)
    the result is None rather than an earlier box: that earlier box was not the model's final answer.
    """
    text = _require_str(text)
    found: str | None = None
    pos = 0
    while (match := _BOXED_RE.search(text, pos)) is not None:
        end = _balanced_end(text, match.end())
        if end is None:
            return None
        found = text[match.end() : end - 1].strip()
        pos = end
    return found


@dataclass(frozen=True)
class ThinkingAnswer:
    """A thinking-mode output: reasoning, answer text, the ``\\boxed{}`` content of the answer, format flag.

    ``format_ok`` is the thinking-tag check of :func:`split_thinking`; whether a box was required is the
    caller's decision (check ``boxed is not None``), since non-thinking prompts do not ask for one.
    """

    thinking: str | None
    answer: str
    boxed: str | None
    format_ok: bool


def parse_thinking_answer(text: str) -> ThinkingAnswer:
    """:func:`split_thinking` plus :func:`extract_boxed` on the answer part only.

    Searching only the answer keeps a ``\\boxed{}`` tried out during the reasoning from counting as the final
    answer.
    """
    split = split_thinking(text)
    return ThinkingAnswer(
        thinking=split.thinking,
        answer=split.answer,
        boxed=extract_boxed(split.answer),
        format_ok=split.format_ok,
    )


# ----------------------------------------------------------------------------------------------- grounding


@dataclass(frozen=True)
class GroundedBox:
    """One box of a grounding answer.

    ``box`` is in pixels of the input image (x1, y1, x2, y2), ordered and clamped to the image. ``box_1000``
    is the box as the model wrote it (rounded to int if it wrote decimals, not reordered or clamped), so
    evaluation code can apply its own conventions to the raw prediction.
    """

    label: str | None
    box: tuple[float, float, float, float]
    box_1000: tuple[int, int, int, int]


# <ref> and <box> elements in order of appearance; non-greedy so adjacent elements stay separate.
_ELEMENT_RE = re.compile(r"<ref>(?P<ref>.*?)</ref>|<box>(?P<box>.*?)</box>", re.DOTALL)
# One innermost bracket group: `[10, 20, 300, 400]`.
_GROUP_RE = re.compile(r"\[([^\[\]]*)\]")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
# What may separate a <ref> from its <box> (or two boxes of one ref): whitespace and punctuation, no words.
_GLUE_RE = re.compile(r"[\W_]*")


def _check_image_size(image_size: object) -> tuple[float, float]:
    if (
        not isinstance(image_size, Sequence)
        or isinstance(image_size, str)
        or len(image_size) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in image_size)
        or not all(math.isfinite(v) and v > 0 for v in image_size)
    ):
        raise InputError(f"image_size must be (width, height) with two positive numbers, got {image_size!r}")
    return float(image_size[0]), float(image_size[1])


def _parse_group(content: str) -> tuple[float, float, float, float] | None:
    """Four numbers separated by commas and/or whitespace, else None (the box is skipped)."""
    parts = [p for p in re.split(r"[,\s]+", content.strip()) if p]
    if len(parts) != 4 or not all(_NUMBER_RE.fullmatch(p) for p in parts):
        return None
    x1, y1, x2, y2 = (float(p) for p in parts)
    return x1, y1, x2, y2


def _to_pixels(
    box: tuple[float, float, float, float], width: float, height: float
) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))

    def scale(v: float, size: float) -> float:
        return min(max(v / COORD_SCALE * size, 0.0), size)

    return scale(x1, width), scale(y1, height), scale(x2, width), scale(y2, height)


def parse_grounding(text: str, image_size: tuple[float, float]) -> list[GroundedBox]:
    """All boxes of a grounding answer, in order, converted to pixels of an image of ``image_size``.

    ``image_size`` is (width, height), as PIL's ``Image.size``. Each ``<box>`` may hold several boxes
    (``[[..], [..]]``); each becomes one GroundedBox. A ``<ref>`` labels the boxes that follow it when
    only whitespace or punctuation stands between them (``<ref>a</ref> <box>..</box>, <box>..</box>``);
    any other text ends the label, so a box that merely appears later in the sentence gets label None.
    Malformed boxes (not exactly four numbers) are skipped, as the output of a generative model is not
    guaranteed to be well formed and one bad box should not hide the good ones.
    """
    text = _require_str(text)
    width, height = _check_image_size(image_size)
    results: list[GroundedBox] = []
    label: str | None = None
    last_end = 0
    for match in _ELEMENT_RE.finditer(text):
        if not _GLUE_RE.fullmatch(text, last_end, match.start()):
            label = None
        last_end = match.end()
        ref = match.group("ref")
        if ref is not None:
            label = ref.strip() or None
            continue
        for group in _GROUP_RE.finditer(match.group("box")):
            raw = _parse_group(group.group(1))
            if raw is None:
                continue
            x1, y1, x2, y2 = (math.floor(v + 0.5) for v in raw)
            box_1000 = (x1, y1, x2, y2)
            results.append(GroundedBox(label=label, box=_to_pixels(raw, width, height), box_1000=box_1000))
    return results


def _check_box(box: object) -> tuple[float, float, float, float]:
    if (
        not isinstance(box, Sequence)
        or isinstance(box, str)
        or len(box) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    ):
        raise InputError(f"a box must be four finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2, y2


def box_coordinates(box_pixels: Sequence[float], image_size: tuple[float, float]) -> tuple[int, int, int, int]:
    """A pixel box as 0-1000 ints ``(x1, y1, x2, y2)``, the grounding format's coordinates.

    The box is ordered and clamped to the image first, so training data never holds coordinates outside
    0-1000. Rounding is half up (not Python's half-to-even) so the same pixel always gives the same token.
    """
    width, height = _check_image_size(image_size)
    x1, y1, x2, y2 = _check_box(box_pixels)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))

    def scale(v: float, size: float) -> int:
        return min(max(math.floor(v / size * COORD_SCALE + 0.5), 0), COORD_SCALE)

    return scale(x1, width), scale(y1, height), scale(x2, width), scale(y2, height)


def format_box(box_pixels: Sequence[float], image_size: tuple[float, float]) -> str:
    """``<box>[[x1, y1, x2, y2]]</box>`` for a pixel box, in 0-1000 ints (the inverse of parse_grounding)."""
    values = box_coordinates(box_pixels, image_size)
    return "<box>[[" + ", ".join(str(v) for v in values) + "]]</box>"


def draw_boxes(
    image: Image.Image,
    boxes: Iterable[GroundedBox | Sequence[float]],
    color: str | tuple[int, int, int] = "red",
    width: int = 3,
) -> Image.Image:
    """A new RGB copy of ``image`` with each box outlined and its label (if any) written at its top-left.

    ``boxes`` are GroundedBoxes or plain pixel boxes (x1, y1, x2, y2). The input image is never modified.
    """
    if not isinstance(image, Image.Image):
        raise InputError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise InputError(f"width must be a positive int, got {width!r}")
    # convert() always returns a new image, even for RGB input, so drawing cannot touch the caller's image.
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    max_x, max_y = out.width - 1, out.height - 1
    for item in boxes:
        if isinstance(item, GroundedBox):
            label, coords = item.label, item.box
        else:
            label, coords = None, _check_box(item)
        x1, y1, x2, y2 = coords
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        # PIL rectangles include their end pixel; a box reaching the image edge (x2 == width) would put its
        # right/bottom border outside the image, so clamp to the last pixel to keep every side visible.
        left, top = min(max(round(x1), 0), max_x), min(max(round(y1), 0), max_y)
        right, bottom = min(max(round(x2), 0), max_x), min(max(round(y2), 0), max_y)
        draw.rectangle((left, top, right, bottom), outline=color, width=width)
        if label:
            try:
                tl, tt, tr, tb = draw.textbbox((0, 0), label, font=font)
            except UnicodeEncodeError:
                # Without FreeType, PIL's default font is a Latin-1 bitmap font; show "?" for other
                # characters (e.g. Chinese labels) rather than failing to draw the boxes at all.
                label = label.encode("latin-1", "replace").decode("latin-1")
                tl, tt, tr, tb = draw.textbbox((0, 0), label, font=font)
            text_w, text_h = tr - tl, tb - tt
            # Above the box if it fits, else just inside its top edge.
            ty = top - text_h - 2 if top - text_h - 2 >= 0 else top
            draw.rectangle((left, ty, left + text_w + 2, ty + text_h + 2), fill=color)
            draw.text((left + 1 - tl, ty + 1 - tt), label, fill="white", font=font)
    return out
