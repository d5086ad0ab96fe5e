"""Conversations -> (input_ids, labels, pixel_values) with loss on assistant turns only.

The prompt text comes from the processor's `build_prompt` (the release's `chat()` format), never from a
second copy of the format here. Assistant spans are found as the difference between prompt prefixes:
`build_prompt(turns[:i], add_generation_prompt=True)` ends right where assistant turn i's content starts,
and `build_prompt(turns[:i+1])` ends right after its `<|im_end|>`. Tokens whose text starts inside a span
get labels; the `<|im_end|>` closing the turn is trained too, so the model learns to stop.

Think-Fusion masking (PAPER.md 8.4): a `cot` sample trains on `<think>...</think>` plus the answer; a
`direct` sample trains on the answer only, so a thinking block inside a direct sample's reply (for example
an empty `<think></think>` as Qwen3 writes in non-thinking mode) is masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..errors import ImagePlaceholderError, InputError
from ..processing import SAILVLProcessor, build_prompt, preprocess_images
from ..processing.images import image_size_of, num_tiles_for_size
from ..processing.prompt import IMAGE_PLACEHOLDER

IGNORE_INDEX = -100
THINK_END = "</think>"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class FocusQuery(NamedTuple):
    """One supervised query of focus supervision (training/focus.py), at positions within its sample."""

    query: int  # the position that predicts a reply token (the one before it)
    targets: list[int]  # the image-token positions (and a count's sink, the <img> token) it should attend to
    subject: int  # -1: every supervised head; k >= 0: the k-th supervised head only
    spread: bool  # a count: the loss spreads the attention evenly over the targets
    share: float  # its part of its reply's weight (the queries of one reply share 1)


@dataclass
class EncodedSample:
    """One tokenised training sample."""

    input_ids: torch.Tensor  # [length] long
    labels: torch.Tensor  # [length] long, IGNORE_INDEX where no loss
    pixel_values: Any  # [num_tiles, 3, S, S] tensor, LazyPixels (decoded on first use) or None
    image_num_tiles: list[int] = field(default_factory=list)
    sample_id: str = ""
    source: Any = None  # the record it came from (JSON-serialisable), kept so checkpoints can re-encode it
    focus: list[FocusQuery] = field(default_factory=list)  # focus supervision's queries (training/focus.py)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tiles(self) -> int:
        return sum(self.image_num_tiles)

    @property
    def num_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def normalize_turns(conversations: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Accept `{"from": "human"|"gpt", "value": ...}` or `{"role": ..., "content": ...}` turns."""
    turns = []
    for index, turn in enumerate(conversations):
        role = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        if role not in _ROLES or not isinstance(text, str):
            raise InputError(f"turn {index} must have a role in {sorted(_ROLES)} and a text, got {dict(turn)!r}")
        turns.append({"role": _ROLES[role], "content": text})
    return turns


class ConversationEncoder:
    """Tokenises conversations with the processor's prompt format and tile maths."""

    def __init__(self, processor: SAILVLProcessor, max_num: int | None = None, total_max_num: int = 64,
                 focus_span: str = "first", lazy_pixels: bool = False) -> None:
        if focus_span not in ("first", "reply"):
            raise InputError(f"focus_span must be 'first' or 'reply', got {focus_span!r}")
        self.processor = processor
        # Plan tiles from image headers and decode on first use (lazy_pixels.py): ranks decode their own rows only.
        self.lazy_pixels = lazy_pixels
        self.max_num = max_num
        self.total_max_num = total_max_num
        self.focus_span = focus_span  # supervise the reply's first token, or every token of its text

    def encode(
        self,
        conversations: Sequence[Mapping[str, Any]],
        images: Sequence[Any] = (),
        kind: str = "direct",
        system: str | None = None,
        max_num: int | None = None,
        sample_id: str = "",
        focus: Sequence[Sequence[Sequence[float]]] | None = None,
    ) -> EncodedSample:
        """`focus` (optional): per assistant turn, the `[image_index, x1, y1, x2, y2]` boxes (0-1000) its answer
        depends on; they become (query, image-token positions) pairs for focus supervision."""
        if kind not in ("direct", "cot"):
            raise InputError(f"kind must be 'direct' or 'cot', got {kind!r}")
        turns = normalize_turns(conversations)
        if turns and turns[0]["role"] == "system":
            system = turns.pop(0)["content"] if system is None else system
        if not turns or turns[-1]["role"] != "assistant":
            raise InputError(f"sample {sample_id!r}: the last turn must be the assistant's")
        images = list(images)
        turns = _place_images(turns, len(images), sample_id)

        budget = self.max_num if max_num is None else max_num
        if images:
            budget = min(budget or self.processor.image_config.max_num, max(1, self.total_max_num // len(images)))
            if self.lazy_pixels:
                from .lazy_pixels import LazyPixels

                config = self.processor.image_config
                tiles = [num_tiles_for_size(*image_size_of(image), config, budget) for image in images]
                pixel_values = LazyPixels(images, config, budget, sum(tiles))
            else:
                pixel_values, tiles = preprocess_images(images, self.processor.image_config, max_num=budget)
        else:
            pixel_values, tiles = None, []

        segments = self._segments(turns, system, kind)
        texts, trained = [], []
        tile_iter = iter(tiles)
        for text, is_label in segments:
            count = text.count(IMAGE_PLACEHOLDER)
            if count and is_label:
                raise ImagePlaceholderError(f"sample {sample_id!r}: '<image>' inside an assistant reply")
            if count:
                text = self.processor.expand_prompt(text, [next(tile_iter) for _ in range(count)])
            texts.append(text)
            trained.append(is_label)
        input_ids, labels, replies = self._tokenize(texts, trained)
        sample = EncodedSample(input_ids, labels, pixel_values, list(tiles), str(sample_id))
        if focus:
            sample.focus = self._focus(focus, images, budget, sample, replies)
        return sample

    def _focus(self, focus: Sequence[Sequence[Sequence[float]]], images: list[Any], budget: int | None,
               sample: EncodedSample, replies: list[list[int]]) -> list[FocusQuery]:
        from .focus import box_token_positions  # only runs for records that carry focus boxes

        if len(focus) != len(replies):
            raise InputError(f"sample {sample.sample_id!r}: 'focus' has {len(focus)} entries for "
                             f"{len(replies)} assistant turns")
        image_tokens = (sample.input_ids == self.processor.image_token_id).nonzero().flatten().tolist()
        per_tile = self.processor.tokens_per_tile
        spans, offset = [], 0
        for count in sample.image_num_tiles:
            spans.append(image_tokens[offset:offset + count * per_tile])
            offset += count * per_tile
        items = []
        end_id = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        for boxes, reply in zip(focus, replies):
            # Image-token positions per subject: None = untagged boxes (every supervised head), k = boxes tagged
            # with subject k (the k-th supervised head; training/focus.py).
            positions: dict[int | None, set[int]] = {}
            spread = False
            for box in boxes:
                if len(box) == 1 and 0 <= int(box[0]) < len(images):
                    # [image_index] alone: the image's start token <img> (the sink) joins the untagged targets and
                    # makes them a count (training/focus.py).
                    start = spans[int(box[0])][0] - 1
                    if int(sample.input_ids[start]) != self.processor.image_start_token_id:
                        raise InputError(f"sample {sample.sample_id!r}: image {int(box[0])} has no <img> token "
                                         "before its image tokens, so a count's sink cannot be placed")
                    positions.setdefault(None, set()).add(start)
                    spread = True
                    continue
                if len(box) == 2 and 0 <= int(box[0]) < len(images) and int(box[1]) >= 0:
                    # [image_index, subject]: the image's start token as a tagged target (e.g. "no" of a yes/no
                    # question whose subject head otherwise finds a shape).
                    positions.setdefault(int(box[1]), set()).add(spans[int(box[0])][0] - 1)
                    continue
                tagged = len(box) == 6
                if len(box) not in (5, 6) or not 0 <= int(box[0]) < len(images) or (tagged and int(box[5]) < 0):
                    raise InputError(f"sample {sample.sample_id!r}: a focus box must be [image_index, x1, y1, x2, y2]"
                                     f", [image_index, x1, y1, x2, y2, subject], [image_index] or [image_index, "
                                     f"subject] with an index below {len(images)} and a subject >= 0, "
                                     f"got {list(box)!r}")
                tokens = box_token_positions(box[1:5], image_size_of(images[int(box[0])]),
                                             self.processor.image_config, budget, per_tile)
                subject = int(box[5]) if tagged else None
                positions.setdefault(subject, set()).update(spans[int(box[0])][t] for t in tokens)
            # A query is the position that predicts a reply token: the one before it. "first": the reply's first
            # token only; "reply": every token of its text (not the closing <|im_end|>), e.g. both words of
            # "top left" or every digit of a box.
            # Every reply weighs the same whatever its length: with per-query weights, the ~25 queries of a box
            # reply drowned the one of a colour answer, and the full nano ladder lost colour reading
            # (docs/nano-sessions.md, session 7). A reply's share is split among its subjects.
            text = [t for t in reply if int(sample.input_ids[t]) != end_id]
            queries = []
            for token in text[:1] if self.focus_span == "first" else text:
                for subject, targets in sorted(positions.items(), key=lambda pair: -1 if pair[0] is None else pair[0]):
                    visible = sorted(p for p in targets if p < token - 1)  # an image after the query is unseen
                    if visible:
                        queries.append((token - 1, visible, -1 if subject is None else subject))
            items += [FocusQuery(query, visible, subject, spread and subject < 0, 1.0 / len(queries))
                      for query, visible, subject in queries]
        return items

    def _segments(self, turns: list[dict[str, str]], system: str | None, kind: str) -> list[tuple[str, bool]]:
        """Split the full prompt into (text, trained) pieces using prompt prefixes."""
        full = build_prompt(turns, add_generation_prompt=False, system=system)
        segments: list[tuple[str, bool]] = []
        cursor = 0
        for index, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            start = len(build_prompt(turns[:index], add_generation_prompt=True, system=system))
            end = len(build_prompt(turns[: index + 1], add_generation_prompt=False, system=system))
            if not full.startswith(build_prompt(turns[: index + 1], add_generation_prompt=False, system=system)):
                raise InputError("the prompt format is not prefix-stable; cannot locate assistant turns")
            reply = full[start:end]
            if kind == "direct" and THINK_END in reply:
                # Direct samples train on the answer only (Think-Fusion, PAPER.md 8.4).
                cut = reply.rindex(THINK_END) + len(THINK_END)
                start += cut
            segments += [(full[cursor:start], False), (full[start:end], True)]
            cursor = end
        if cursor < len(full):
            segments.append((full[cursor:], False))
        return [(text, trained) for text, trained in segments if text]

    def _tokenize(self, texts: list[str], trained: list[bool]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """input ids, labels, and each trained span's token positions."""
        joined = "".join(texts)
        encoding = self.processor.tokenizer(joined, add_special_tokens=False, return_offsets_mapping=True)
        bounds, position = [], 0
        for text, is_label in zip(texts, trained):
            if is_label:
                bounds.append((position, position + len(text)))
            position += len(text)
        ids = torch.tensor(encoding["input_ids"], dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        starts = torch.tensor([start for start, _ in encoding["offset_mapping"]])
        spans = []
        for low, high in bounds:
            inside = (starts >= low) & (starts < high)
            labels[inside] = ids[inside]
            spans.append(inside.nonzero().flatten().tolist())
        return ids, labels, spans


def _place_images(turns: list[dict[str, str]], num_images: int, sample_id: str) -> list[dict[str, str]]:
    """Check placeholders against images; with none written, put them before the first user text, as the
    release's chat() does."""
    placed = sum(turn["content"].count(IMAGE_PLACEHOLDER) for turn in turns if turn["role"] == "user")
    if placed == 0 and num_images:
        turns = [dict(turn) for turn in turns]
        first_user = next(i for i, turn in enumerate(turns) if turn["role"] == "user")
        turns[first_user]["content"] = (IMAGE_PLACEHOLDER + "\n") * num_images + turns[first_user]["content"]
        return turns
    if placed != num_images:
        raise ImagePlaceholderError(
            f"sample {sample_id!r} has {placed} '<image>' placeholder(s) but {num_images} image(s)"
        )
    return turns
