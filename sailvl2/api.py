"""High-level API: `sailvl2.load(path)` -> `SAILVL2` with `chat` and `batch_chat`.

    >>> vlm = sailvl2.load("path/to/SAIL-VL2-2B")              # CPU fp32, CUDA bf16 by default
    >>> vlm.chat("Describe the image.", images="cat.png").answer
    >>> for piece in vlm.chat("Describe it.", images="cat.png", stream=True): print(piece, end="")
    >>> vlm.batch_chat(["What is this?", "Hi!"], images=["a.png", None])

Prompts are the release's `chat()` prompts (FACTS.md "Prompt format"): with images and no `<image>`
placeholder in the question, one `<image>\n` per image is put in front of it, as the release does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from .answers import GroundedBox, draw_boxes, parse_grounding, parse_thinking_answer
from .errors import InputError
from .generation import SamplingSettings, stream_tokens
from .generation.generate import DEFAULT_STOP, resolve_stop_ids
from .modeling import SAILVLModel
from .modeling.sailvl import parse_dtype
from .processing import SAILVLProcessor
from .processing.images import load_image

ImageInput = Any  # a path, bytes, PIL image, numpy array or tensor
Message = dict[str, Any]


@dataclass
class ChatResponse:
    """One answer. `answer` is the text after any `</think>`; `boxes` are grounding boxes in pixel
    coordinates of the first image (0-1000 units when there is no image)."""

    text: str
    answer: str
    thinking: str | None = None
    boxed: str | None = None
    format_ok: bool = True
    boxes: list[GroundedBox] = field(default_factory=list)
    num_generated_tokens: int = 0

    def draw(self, image: ImageInput) -> Image.Image:
        """The image with this answer's grounding boxes drawn on it (a new image)."""
        return draw_boxes(load_image(image), self.boxes)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where it is fast and safe (CUDA with bf16 support), float32 elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load(
    path: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> "SAILVL2":
    """Load a SAIL-VL2 checkpoint directory (release layout) with its processor."""
    if path is None:
        from .demo import default_model_dir

        path = default_model_dir()
    device = torch.device(device) if device is not None else default_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
    model = SAILVLModel.from_pretrained(path, dtype=dtype, device=device)
    processor = SAILVLProcessor.from_pretrained(path)
    return SAILVL2(model, processor)


class SAILVL2:
    """A loaded model and its processor, with chat helpers."""

    def __init__(self, model: SAILVLModel, processor: SAILVLProcessor) -> None:
        self.model = model
        self.processor = processor

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # ---- prompt building ----
    def _conversation(
        self, question: str | Sequence[Message], images: Any, thinking: bool, system: str | None,
        history: Sequence[tuple[str, str]] | None,
    ) -> tuple[str, list[Image.Image]]:
        if isinstance(question, str):
            image_list = _as_image_list(images)
            text = question
            placed = "<image>" in text or any("<image>" in turn for turn, _ in history or ())
            if image_list and not placed:
                text = "<image>\n" * len(image_list) + text
            messages: list[Message] = []
            for user_turn, assistant_turn in history or ():
                messages += [{"role": "user", "content": user_turn}, {"role": "assistant", "content": assistant_turn}]
            messages.append({"role": "user", "content": text})
        elif isinstance(question, Sequence):
            messages = list(question)
            image_list = _as_image_list(images) if images is not None else _images_in_messages(messages)
        else:
            raise InputError(f"question must be a str or a list of messages, got {type(question).__name__}")
        prompt = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, system=system, thinking=thinking
        )
        return prompt, [load_image(image) for image in image_list]

    # ---- chat ----
    def chat(
        self,
        question: str | Sequence[Message],
        images: ImageInput | Sequence[ImageInput] | None = None,
        *,
        thinking: bool = False,
        system: str | None = None,
        history: Sequence[tuple[str, str]] | None = None,
        max_new_tokens: int = 512,
        stream: bool = False,
        max_num: int | None = None,
        use_msac: bool | None = None,
        **generation: Any,
    ) -> ChatResponse | Iterator[str]:
        """Answer one question about zero or more images. `stream=True` returns an iterator of text pieces.

        `thinking=True` appends the release's chain-of-thought instruction; the response is then split into
        `thinking`, `answer` and the `\\boxed{}` content. `max_num` (tiles per image) and `use_msac` (the
        multi-scale second tiling, FACTS.md) override the processor's settings when given. `generation`:
        do_sample, temperature, top_p, top_k, repetition_penalty, eos_token_id, seed.
        """
        prompt, image_list = self._conversation(question, images, thinking, system, history)
        inputs = self.processor(
            images=[image_list], text=[prompt], max_num=max_num, use_msac=use_msac, return_tensors="pt"
        )
        steps = self._steps(inputs, max_new_tokens, generation)
        if stream:
            return self._stream_text(steps)
        ids = [int(tokens[0]) for tokens in steps]
        return self._response(ids, image_list)

    def batch_chat(
        self,
        questions: Sequence[str | Sequence[Message]],
        images: Sequence[ImageInput | Sequence[ImageInput] | None] | None = None,
        *,
        thinking: bool = False,
        system: str | None = None,
        max_new_tokens: int = 512,
        max_num: int | None = None,
        use_msac: bool | None = None,
        batch_size: int = 8,
        progress: bool | None = None,
        **generation: Any,
    ) -> list[ChatResponse]:
        """Answer many questions, `batch_size` at a time (left-padded batches; same greedy answers as
        one-by-one). `images[i]` belongs to `questions[i]`: None, one image, or a list. `max_num` / `use_msac`:
        as in `chat`, for every question. `progress`: a progress bar over batches (default: on when there is
        more than one batch)."""
        if isinstance(questions, str):
            raise InputError("batch_chat takes a list of questions; use chat() for one")
        if images is not None and len(images) != len(questions):
            raise InputError(f"got {len(questions)} questions but {len(images)} image entries")
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        per_row = [self._conversation(q, images[i] if images else None, thinking, system, None)
                   for i, q in enumerate(questions)]
        responses: list[ChatResponse] = []
        starts = range(0, len(per_row), batch_size)
        show = len(starts) > 1 if progress is None else progress
        for start in tqdm(starts, desc="batch_chat", unit="batch", disable=not show):
            chunk = per_row[start : start + batch_size]
            inputs = self.processor(
                images=[image_list for _, image_list in chunk], text=[prompt for prompt, _ in chunk],
                max_num=max_num, use_msac=use_msac, return_tensors="pt",
            )
            rows: list[list[int]] = [[] for _ in chunk]
            stop_ids = set(resolve_stop_ids(self.model, generation.get("eos_token_id", DEFAULT_STOP)))
            done = [False] * len(chunk)
            for tokens in self._steps(inputs, max_new_tokens, generation):
                for row, token in enumerate(tokens.tolist()):
                    if not done[row]:
                        rows[row].append(token)
                        done[row] = token in stop_ids
            responses += [self._response(ids, image_list) for ids, (_, image_list) in zip(rows, chunk)]
        return responses

    # ---- internals ----
    def _steps(self, inputs: Any, max_new_tokens: int, generation: dict[str, Any]) -> Iterator[torch.Tensor]:
        generation = dict(generation)
        seed = generation.pop("seed", None)
        # eos_token_id=None means "never stop early" (as in generate), so absence needs its own marker.
        eos = generation.pop("eos_token_id", DEFAULT_STOP)
        sampling = SamplingSettings(**generation)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        pixel_values = inputs.get("pixel_values")
        if pixel_values is not None:
            pixel_values = pixel_values.to(self.device, self.model.vision_model.dtype)
        return stream_tokens(
            self.model, inputs["input_ids"], inputs["attention_mask"], pixel_values,
            max_new_tokens=max_new_tokens, sampling=sampling, eos_token_id=eos, generator=generator,
        )

    def _decode(self, ids: list[int]) -> str:
        # Keep special tokens: `<ref>`/`<box>` (grounding) are special in the release tokenizer and
        # `skip_special_tokens=True` would erase them. Cut at the end-of-turn token instead, as the release
        # README does (`response.split('<|im_end|>')[0]`), and drop padding.
        text = self.processor.tokenizer.decode(ids, skip_special_tokens=False)
        return text.split("<|im_end|>")[0].replace("<|endoftext|>", "")

    def _stream_text(self, steps: Iterator[torch.Tensor]) -> Iterator[str]:
        ids: list[int] = []
        emitted = ""
        for tokens in steps:
            ids.append(int(tokens[0]))
            text = self._decode(ids)
            # Hold back an incomplete UTF-8 sequence (shown as U+FFFD) until its last byte arrives.
            if text.endswith("\ufffd"):
                continue
            if text.startswith(emitted) and len(text) > len(emitted):
                yield text[len(emitted):]
                emitted = text
        text = self._decode(ids)
        if text.startswith(emitted) and len(text) > len(emitted):
            yield text[len(emitted):]

    def _response(self, ids: list[int], image_list: list[Image.Image]) -> ChatResponse:
        text = self._decode(ids).strip()
        parsed = parse_thinking_answer(text)
        size = image_list[0].size if image_list else (1000, 1000)
        return ChatResponse(
            text=text,
            answer=parsed.answer,
            thinking=parsed.thinking,
            boxed=parsed.boxed,
            format_ok=parsed.format_ok,
            boxes=parse_grounding(parsed.answer, image_size=size),
            num_generated_tokens=len(ids),
        )


def _as_image_list(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _images_in_messages(messages: Sequence[Message]) -> list[Any]:
    """Images embedded in chat-template content items, in order of appearance."""
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") != "text":
                    for key in ("image", "image_url", "path", "url"):
                        if key in item:
                            value = item[key]
                            found.append(value.get("url") if isinstance(value, dict) else value)
                            break
    return found
