"""``SAILVLProcessor``: messages -> prompt, images -> tiles, and ALL the token math between them.

It reproduces the release (FACTS.md): each ``<image>`` placeholder, in order, becomes ``<img>`` +
``<IMG_CONTEXT>`` x (tokens_per_tile x num_tiles of that image) + ``</img>``, tokens_per_tile =
(image_size / patch_size)^2 x downsample_ratio^2 = 256. Unlike the release processor (which only handles
``text[0]``, hard-codes ``.cuda()`` and fails deep in the model on a placeholder/image mismatch) it batches
with left padding, checks placeholder counts up front, applies the evaluation's 64-tile budget per request,
and raises our own exception types with messages that say what to change.

A plain class rather than ``transformers.ProcessorMixin``: the mixin wants a registered image-processor
class and writes its own file layout, while we read and write the release layout. ``AutoProcessor.register``
only needs ``from_pretrained(path, **kwargs)``, which this class has.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any, Mapping, Sequence

import torch
import transformers
from transformers import BatchFeature

from ..errors import CheckpointError, ConfigError, ContextLengthError, ImagePlaceholderError, InputError, TileBudgetError
from .images import (
    PREPROCESSOR_CONFIG_NAME,
    ImageProcessorConfig,
    image_size_of,
    num_tiles_for_size,
    preprocess_images,
)
from .prompt import IMAGE_PLACEHOLDER, add_thinking_suffix, build_prompt

__all__ = ["SAILVLProcessor"]

IMAGE_TOKEN, IMAGE_START_TOKEN, IMAGE_END_TOKEN = "<IMG_CONTEXT>", "<img>", "</img>"
_EOS_TOKEN, _PAD_TOKEN = "<|im_end|>", "<|endoftext|>"
_IMAGE_CONFIG_KWARGS = {"max_num": "max_num", "max_dynamic_patch": "max_num", "min_num": "min_num",
                        "min_dynamic_patch": "min_num", "use_msac": "use_msac", "use_thumbnail": "use_thumbnail"}


class SAILVLProcessor:
    """Tokenizer + image tiler of SAIL-VL2. Build with :meth:`from_pretrained` or from (config, tokenizer)."""

    model_input_names = ["input_ids", "attention_mask", "pixel_values", "image_num_tiles"]

    def __init__(self, image_config: ImageProcessorConfig, tokenizer: Any, downsample_ratio: float = 0.5) -> None:
        self.image_config = image_config
        self.tokenizer = tokenizer
        try:
            self.downsample_ratio = float(downsample_ratio)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"downsample_ratio must be a number, got {downsample_ratio!r}") from exc
        side = image_config.image_size // image_config.patch_size
        tokens = side * side * self.downsample_ratio**2
        if tokens <= 0 or tokens != int(tokens):
            raise ConfigError(f"downsample_ratio {downsample_ratio} does not give a whole number of tokens per tile")
        self.tokens_per_tile = int(tokens)
        self._ids = {name: self._token_id(name) for name in (IMAGE_TOKEN, IMAGE_START_TOKEN, IMAGE_END_TOKEN, _EOS_TOKEN)}
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = pad if pad is not None else self._token_id(_PAD_TOKEN)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == getattr(self.tokenizer, "unk_token_id", None):
            raise ConfigError(f"the tokenizer has no {token!r} token; is this a SAIL-VL2 tokenizer?")
        return int(token_id)

    # ------------------------------------------------------------------------------------- load / save

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> "SAILVLProcessor":
        """Load from a checkpoint directory: ``preprocessor_config.json``, the tokenizer files, and
        ``downsample_ratio`` from ``config.json`` when present (default 0.5).

        Keyword overrides of the image settings: ``max_num`` (alias ``max_dynamic_patch``), ``min_num``,
        ``use_msac``, ``use_thumbnail``; ``tokenizer=`` reuses a loaded tokenizer. Other keywords (e.g.
        ``trust_remote_code`` from ``AutoProcessor``) are accepted and ignored.
        """
        directory = pathlib.Path(path)
        if not directory.is_dir():
            raise CheckpointError(f"processor path {str(path)!r} is not a local directory")
        image_config = ImageProcessorConfig.from_pretrained(directory)
        overrides = {_IMAGE_CONFIG_KWARGS[k]: v for k, v in kwargs.items() if k in _IMAGE_CONFIG_KWARGS and v is not None}
        if overrides:
            image_config = dataclasses.replace(image_config, **overrides)  # re-validated in __post_init__
        tokenizer = kwargs.get("tokenizer") or _load_tokenizer(directory)
        downsample_ratio = 0.5
        model_config = directory / "config.json"
        if model_config.is_file():
            try:
                downsample_ratio = json.loads(model_config.read_text(encoding="utf-8")).get("downsample_ratio", 0.5)
            except (OSError, json.JSONDecodeError, AttributeError) as exc:
                raise ConfigError(f"cannot read {str(model_config)!r}: {exc}") from exc
        return cls(image_config, tokenizer, downsample_ratio)

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> list[str]:
        """Write the release layout: ``preprocessor_config.json``, ``vocab.json``, ``merges.txt``,
        ``tokenizer_config.json``, ``added_tokens.json``, ``special_tokens_map.json`` (plus ``tokenizer.json``
        and ``chat_template.jinja``, which the real release also ships). Each file is written to a temporary
        name in the target directory and moved into place with ``os.replace`` (atomic per file)."""
        target = pathlib.Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target, prefix=".sailvl2-save-") as tmp:
            staging = pathlib.Path(tmp)
            self.tokenizer.save_pretrained(str(staging))
            _write_release_tokenizer_files(self.tokenizer, staging)
            _write_json(staging / PREPROCESSOR_CONFIG_NAME, self.image_config.to_dict())
            names = sorted(p.name for p in staging.iterdir() if p.is_file())
            for name in names:
                os.replace(staging / name, target / name)
        return [str(target / name) for name in names]

    # ------------------------------------------------------------------------------------- prompts

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        system: str | None = None,
        thinking: bool = False,
        **call_kwargs: Any,
    ) -> Any:
        """The univl-chat prompt of ``messages`` (see :func:`prompt.build_prompt`); ``thinking=True`` appends
        the -Thinking checkpoints' reasoning instruction to the last user text. ``tokenize=True`` also runs
        :meth:`__call__` with the images found in the messages (``"image"`` / ``"image_url"`` values) and
        returns its ``BatchFeature``."""
        if thinking:
            messages = add_thinking_suffix(messages)
        prompt = build_prompt(messages, add_generation_prompt=add_generation_prompt, system=system)
        if not tokenize:
            return prompt
        images = [_image_of(item) for message in messages if not isinstance(message["content"], str)
                  for item in message["content"] if isinstance(item, Mapping) and _image_of(item) is not None]
        return self(images=images or None, text=prompt, **call_kwargs)

    # ------------------------------------------------------------------------------------- main call

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: Any = None,
        max_length: int | None = None,
        max_num: int | None = None,
        total_max_num: int | None = 64,
        use_msac: bool | None = None,
        pixel_dtype: torch.dtype = torch.float32,
        **ignored: Any,
    ) -> BatchFeature:
        """Tokenize ``text`` (a prompt or a list of prompts) and tile ``images``.

        ``images``: for one prompt, an image or a list of images; for a list of prompts, a list with one entry
        per prompt (an image, a list of images, or None). Images fill the ``<image>`` placeholders in order.
        Per image the tile budget is ``min(max_num, total_max_num // images_in_that_prompt)`` (the evaluation
        rule). Returns ``input_ids`` / ``attention_mask`` (left-padded with ``<|endoftext|>``),
        ``pixel_values`` [total_tiles, 3, 448, 448] (only when there are images) and ``image_num_tiles``
        (tiles incl. thumbnail per image, rows in order). Rows longer than ``max_length`` raise
        :class:`ContextLengthError`; nothing is ever cut (``truncation`` is ignored).
        """
        texts, per_text = self._normalize_inputs(images, text)
        if return_tensors not in ("pt", None):
            raise InputError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        budget = self.image_config.max_num if max_num is None else int(max_num)
        flat_images: list[Any] = []
        flat_budgets: list[int] = []
        for row, (prompt, row_images) in enumerate(zip(texts, per_text)):
            found = prompt.count(IMAGE_PLACEHOLDER)
            if found != len(row_images):
                raise ImagePlaceholderError(
                    f"prompt {row} has {found} '<image>' placeholder(s) but {len(row_images)} image(s) were given; "
                    "put one '<image>' in the text per image (apply_chat_template adds them for image items)"
                )
            if IMAGE_TOKEN in prompt:
                raise ImagePlaceholderError(
                    f"prompt {row} already contains {IMAGE_TOKEN!r}; pass '<image>' placeholders, the processor expands them"
                )
            flat_images += row_images
            flat_budgets += [self._image_budget(budget, total_max_num, len(row_images), row)] * len(row_images)
        pixel_values, tiles = preprocess_images(flat_images, self.image_config, flat_budgets, use_msac, pixel_dtype)

        expanded, start = [], 0
        for prompt, row_images in zip(texts, per_text):
            expanded.append(self.expand_prompt(prompt, tiles[start : start + len(row_images)]))
            start += len(row_images)
        rows = self.tokenizer(expanded)["input_ids"]
        for row, ids in enumerate(rows):
            self._check_row(row, ids, tiles, per_text, max_length)
        data: dict[str, Any] = self._pad(rows, padding, max_length, return_tensors)
        if flat_images:
            data["pixel_values"] = pixel_values
        data["image_num_tiles"] = torch.tensor(tiles, dtype=torch.long) if return_tensors else tiles
        return BatchFeature(data=data)

    def _normalize_inputs(self, images: Any, text: Any) -> tuple[list[str], list[list[Any]]]:
        if text is None:
            raise InputError("text is required: a prompt with one '<image>' per image (see apply_chat_template)")
        batched = not isinstance(text, str)
        texts = [text] if not batched else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InputError("text must be a string or a non-empty list of strings")
        if images is None:
            return texts, [[] for _ in texts]
        if not batched:
            if isinstance(images, (list, tuple)) and images and all(isinstance(i, (list, tuple)) for i in images):
                if len(images) != 1:
                    raise InputError(f"got {len(images)} image lists for 1 prompt")
                images = images[0]
            return texts, [list(images) if isinstance(images, (list, tuple)) else [images]]
        if not isinstance(images, (list, tuple)) or len(images) != len(texts):
            raise InputError(
                f"for {len(texts)} prompts, images must be a list with one entry per prompt (an image, a list of "
                f"images, or None), got {type(images).__name__}"
                + (f" of length {len(images)}" if isinstance(images, (list, tuple)) else "")
            )
        return texts, [[] if i is None else list(i) if isinstance(i, (list, tuple)) else [i] for i in images]

    def _image_budget(self, max_num: int, total_max_num: int | None, count: int, row: int) -> int:
        if count == 0 or total_max_num is None:
            return max_num
        if count > total_max_num:
            raise TileBudgetError(
                f"prompt {row} has {count} images but total_max_num={total_max_num} tiles allows at most "
                f"{total_max_num} images; pass fewer images or raise total_max_num"
            )
        return max(1, min(max_num, total_max_num // count))

    def expand_prompt(self, prompt: str, image_num_tiles: Sequence[int]) -> str:
        """The full prompt string the release tokenizes: each ``<image>``, in order, becomes ``<img>`` +
        ``<IMG_CONTEXT>`` x (tokens_per_tile x that image's tiles) + ``</img>``."""
        parts = prompt.split(IMAGE_PLACEHOLDER)
        if len(parts) - 1 != len(image_num_tiles):
            raise ImagePlaceholderError(
                f"prompt has {len(parts) - 1} '<image>' placeholder(s) but {len(image_num_tiles)} tile counts were given"
            )
        out = [parts[0]]
        for count, rest in zip(image_num_tiles, parts[1:]):
            out += [IMAGE_START_TOKEN, IMAGE_TOKEN * (self.tokens_per_tile * count), IMAGE_END_TOKEN, rest]
        return "".join(out)

    def _check_row(self, row: int, ids: Sequence[int], tiles: list[int], per_text: list[list[Any]], max_length: int | None) -> None:
        first = sum(len(r) for r in per_text[:row])
        row_tiles = sum(tiles[first : first + len(per_text[row])])
        expected = self.tokens_per_tile * row_tiles
        found = sum(1 for i in ids if i == self.image_token_id)
        if found != expected:  # e.g. a tokenizer that splits '<IMG_CONTEXT>': fail here, not in the model
            raise ImagePlaceholderError(f"prompt {row}: expected {expected} image tokens after tokenization, got {found}")
        if max_length is not None and len(ids) > max_length:
            raise ContextLengthError(
                f"prompt {row} is {len(ids)} tokens ({expected} image tokens for {row_tiles} tiles), more than "
                f"max_length={max_length}; lower max_num/total_max_num, use fewer images or shorten the text"
            )

    def _pad(self, rows: list[list[int]], padding: bool | str, max_length: int | None, return_tensors: str | None) -> dict[str, Any]:
        if padding in (False, "do_not_pad"):
            width = None
        elif padding in (True, "longest"):
            width = max(len(r) for r in rows)
        elif padding == "max_length":
            if max_length is None:
                raise InputError("padding='max_length' needs max_length")
            width = max_length
        else:
            raise InputError(f"padding must be True/'longest', 'max_length' or False, got {padding!r}")
        if width is None:
            ids, mask = [list(r) for r in rows], [[1] * len(r) for r in rows]
            if return_tensors and len({len(r) for r in rows}) > 1:
                raise InputError("prompts of different lengths need padding=True to be returned as tensors")
        else:  # left padding: generation appends on the right, so every row must end at the same column
            ids = [[self._pad_id] * (width - len(r)) + list(r) for r in rows]
            mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        if return_tensors:
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long)}
        return {"input_ids": ids, "attention_mask": mask}

    # ------------------------------------------------------------------------------------- token cost

    def num_tiles(self, image_or_size: Any, max_num: int | None = None, use_msac: bool | None = None) -> int:
        """Tiles (thumbnail included) an image or a ``(width, height)`` becomes, computed without resizing."""
        return num_tiles_for_size(*image_size_of(image_or_size), self.image_config, max_num, use_msac)

    def num_image_tokens(self, image_or_size: Any, max_num: int | None = None, use_msac: bool | None = None) -> int:
        """Tokens one ``<image>`` placeholder expands into: tokens_per_tile x tiles ``<IMG_CONTEXT>`` plus
        ``<img>`` and ``</img>`` (the ``\\n`` after the placeholder is ordinary prompt text)."""
        return self.tokens_per_tile * self.num_tiles(image_or_size, max_num, use_msac) + 2

    # ------------------------------------------------------------------------------------- tokenizer passthrough

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def image_token_id(self) -> int:
        return self._ids[IMAGE_TOKEN]

    @property
    def image_start_token_id(self) -> int:
        """``<img>``, which opens every image's tokens."""
        return self._ids[IMAGE_START_TOKEN]

    @property
    def eos_token_id(self) -> int:
        """``<|im_end|>`` (151645): the end of an assistant turn, where generation stops."""
        return self._ids[_EOS_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return self._pad_id

    def __repr__(self) -> str:
        return (f"SAILVLProcessor(image_config={self.image_config}, tokens_per_tile={self.tokens_per_tile}, "
                f"tokenizer={type(self.tokenizer).__name__}(vocab={len(self.tokenizer)}))")


def _image_of(item: Mapping[str, Any]) -> Any:
    """The image of a content item (``image`` value, or ``image_url`` as a string or ``{"url": ...}``)."""
    value = item.get("image", item.get("image_url"))
    return value.get("url") if isinstance(value, Mapping) else value


def _load_tokenizer(directory: pathlib.Path) -> Any:
    """The tokenizer class named in ``tokenizer_config.json`` when transformers has it (skips AutoTokenizer's
    probing of ``config.json``, whose ``sailvl`` model type it does not know and warns about), else
    ``AutoTokenizer`` without remote code. The release dir may lack ``tokenizer.json``: it is then built
    from ``vocab.json`` + ``merges.txt`` + the added tokens (FACTS.md, "Tokenizer")."""
    try:
        name = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, json.JSONDecodeError, AttributeError):
        name = None
    try:
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedTokenizerBase):
            return cls.from_pretrained(str(directory))
        return transformers.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {str(directory)!r}: {exc}") from exc


def _write_json(path: pathlib.Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_release_tokenizer_files(tokenizer: Any, staging: pathlib.Path) -> None:
    """Add/rewrite the slow-tokenizer files of the release layout next to what ``save_pretrained`` wrote.

    transformers 5 writes only ``tokenizer.json`` + a ``tokenizer_config.json`` whose ``extra_special_tokens``
    list older loaders (the release's transformers 4.51) cannot read; write ``vocab.json`` / ``merges.txt``
    from the BPE model, ``added_tokens.json`` / ``special_tokens_map.json``, and a release-style config.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend.model, "save"):
        backend.model.save(str(staging))  # BPE: vocab.json + merges.txt
    decoder = dict(sorted(getattr(tokenizer, "added_tokens_decoder", {}).items()))
    config_path = staging / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    for key in ("backend", "is_local", "local_files_only"):
        config.pop(key, None)
    config.setdefault("add_bos_token", False)
    config["added_tokens_decoder"] = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                 "single_word": t.single_word, "special": t.special}
        for i, t in decoder.items()
    }
    _write_json(config_path, dict(sorted(config.items())))
    _write_json(staging / "added_tokens.json", {t.content: i for i, t in sorted(decoder.items(), key=lambda kv: kv[1].content)})
    special: dict[str, Any] = {"additional_special_tokens": config.get("additional_special_tokens", [])}
    for key in ("eos_token", "pad_token", "bos_token", "unk_token"):
        token = getattr(tokenizer, key, None)
        if token is not None:
            special[key] = {"content": str(token), "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    _write_json(staging / "special_tokens_map.json", special)
