"""The ``validate`` stage: drop records whose images or text cannot or should not be trained on.

Text checks run first (they are cheap), then every image of the record (``image`` paths and ``video``
frames, resolved against ``Item.root``). The first failed rule decides; its reason reads
``"<category>: <detail>"`` with category ``image`` or ``text``, e.g. ``"image: bomb (100000000 pixels)"``.

Images are never decoded blindly: the header size is checked against ``max_pixels`` before any pixel is
decoded (without touching PIL's global ``Image.MAX_IMAGE_PIXELS``; PIL itself still refuses images above
twice that global in ``Image.open``, which is reported as a bomb too). Every decoder failure, whatever
exception a PIL plugin raises on hostile input, becomes a dropped record, never a crashed worker.
Sizes are taken after EXIF orientation (``ImageOps.exif_transpose``), as a viewer shows the picture.

Kept and dropped items get ``scores`` ``width`` / ``height`` (first image, EXIF-corrected),
``repetition`` and ``language_confidence`` (as far as the checks got); ``features`` gets ``image_sizes``,
``image_sha256`` and ``phash`` (per image, for the dedup stages) and ``language``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image, ImageOps

from ..language import SUPPORTED_LANGUAGES, UNDETERMINED, detect_language
from ..phash import phash
from ..types import CurationError, Decision, Item
from . import register_stage

__all__ = [
    "INNER_CROP", "PIL_DEFAULT_MAX_PIXELS", "TEXT_SOURCES", "ImageCheck", "ValidateStage", "check_image",
    "image_paths", "image_phashes", "record_text", "repetition_ratio",
]

PIL_DEFAULT_MAX_PIXELS = 89_478_485   # PIL's own default MAX_IMAGE_PIXELS (a 0.25 GB RGBA image)
TEXT_SOURCES = ("all", "human", "gpt")
INNER_CROP = 0.035  # margin of the second, crop-tolerant pHash (see dedup.ImageDedupStage)
_ROLE_ALIASES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
# sailvl2.processing.prompt.IMAGE_PLACEHOLDER (tests/test_import_cost.py checks they agree), not imported:
# the sailvl2.processing package loads transformers, which a CPU-only curation worker must not pay for.
_IMAGE_PLACEHOLDER = "<image>"
_PIXEL_COUNT = re.compile(r"\((\d+) pixels\)")
# Han and kana have no spaces between words: each character is one token; everything else is \w+ runs.
_CJK_CHARS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK_CHARS}]|[^\W{_CJK_CHARS}]+")


# --------------------------------------------------------------------------------------------- helpers


def image_paths(item: Item) -> list[str]:
    """The item's image files (``image`` then ``video`` frames), relative ones joined to ``item.root``."""
    paths: list[str] = []
    for field in ("image", "video"):
        value = item.record.get(field)
        entries = [value] if isinstance(value, str) else list(value or [])
        for entry in entries:
            if isinstance(entry, str) and entry:
                path = os.path.expanduser(entry)
                paths.append(os.path.normpath(path if os.path.isabs(path) else os.path.join(item.root, path)))
    return paths


def record_text(record: Mapping[str, Any], source: str = "all") -> str:
    """The conversation text of ``source`` turns (``all``, ``human`` or ``gpt``), one turn per line, without
    ``<image>`` placeholders. Accepts ``from``/``value`` and ``role``/``content`` turn spellings."""
    if source not in TEXT_SOURCES:
        raise CurationError(f"text source must be one of {TEXT_SOURCES}, got {source!r}")
    turns = record.get("conversations")
    texts = []
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, Mapping):
            continue
        role = _ROLE_ALIASES.get(turn.get("from") or turn.get("role"))
        value = turn.get("value") if turn.get("value") is not None else turn.get("content")
        if role is not None and isinstance(value, str) and source in ("all", role):
            texts.append(value.replace(_IMAGE_PLACEHOLDER, " ").strip())
    return "\n".join(text for text in texts if text)


def repetition_ratio(text: str, ngram: int = 3) -> float:
    """Share of the text's word ``ngram``-grams that repeat an earlier one (0 = none, near 1 = a loop).

    Words are case-folded ``\\w+`` runs; Han and kana characters count as one word each. A text with fewer
    than two n-grams scores 0. Any repeated phrase, whatever its period, pushes the score up, which is what
    degenerate model output ("the cat the cat the cat ...") looks like.
    """
    tokens = _TOKEN.findall(text.casefold())
    total = len(tokens) - ngram + 1
    if total < 2:
        return 0.0
    counts = Counter(tuple(tokens[i:i + ngram]) for i in range(total))
    return (total - len(counts)) / total


@dataclass
class ImageCheck:
    """The outcome of :func:`check_image`: ``problem`` (a reason detail such as ``"zero bytes"``) or the
    decoded, EXIF-transposed ``image`` with its raw-byte ``sha256`` and original ``mode``."""

    problem: str | None = None
    image: Image.Image | None = None
    sha256: str | None = None
    mode: str | None = None


def check_image(path: str, max_pixels: int = PIL_DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> ImageCheck:
    """Read and decode one image file defensively; never raises for bad files (see :class:`ImageCheck`)."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return ImageCheck("zero bytes")
        if max_bytes is not None and size > max_bytes:
            return ImageCheck(f"file too large ({size} bytes > {max_bytes})")
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return ImageCheck(f"missing file ({path})")
    except OSError as exc:
        return ImageCheck(f"unreadable ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # PIL warns between 1x and 2x its global limit; our own max_pixels check below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        found = _PIXEL_COUNT.search(str(exc))
        return ImageCheck(f"bomb ({found.group(1)} pixels)" if found else "bomb (over PIL's pixel limit)", None, digest)
    except Exception:  # noqa: BLE001 - a hostile file may make any plugin raise anything; drop it, never crash
        return ImageCheck("undecodable", None, digest)
    width, height = image.size
    if width * height > max_pixels:
        return ImageCheck(f"bomb ({width * height} pixels)", None, digest)
    mode = image.mode
    try:
        image.load()
    except OSError as exc:
        return ImageCheck("truncated" if "truncated" in str(exc) else "undecodable", None, digest)
    except Exception:  # noqa: BLE001 - as above
        return ImageCheck("undecodable", None, digest)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF: keep the pixels as stored
        pass
    return ImageCheck(None, image, digest, mode)


def image_phashes(image: Image.Image) -> list[int]:
    """[pHash of the whole image, pHash of its centre without an ``INNER_CROP`` margin per side]."""
    width, height = image.size
    dx, dy = round(width * INNER_CROP), round(height * INNER_CROP)
    inner = image.crop((dx, dy, width - dx, height - dy)) if width - 2 * dx > 0 and height - 2 * dy > 0 else image
    return [phash(image), phash(inner)]


# --------------------------------------------------------------------------------------------- the stage


@register_stage("validate")
@dataclass
class ValidateStage:
    """Settings (YAML keys) of the ``validate`` stage; see docs/curation_stages.md for each rule.

    Images: ``min_side`` / ``max_side`` on the EXIF-corrected size, ``max_pixels`` (decompression-bomb
    guard, checked from the header before decoding), ``max_bytes`` (file size), ``max_aspect`` (long side over
    short side), ``modes`` (allowed PIL modes of the stored file; None = any). Text (of ``text_from`` turns):
    ``min_text_chars`` / ``max_text_chars`` (stripped length), ``max_repetition`` (see
    :func:`repetition_ratio`, on word ``repetition_ngram``-grams), ``languages`` (allowed codes of
    :func:`sailvl2.curation.language.detect_language`; None = any) and ``keep_undetermined`` (keep text the
    detector cannot place, e.g. a bare list of nouns).
    """

    name: ClassVar[str] = "validate"
    min_side: int = 32
    max_side: int | None = None
    max_pixels: int = PIL_DEFAULT_MAX_PIXELS
    max_bytes: int | None = 64 * 1024 * 1024
    max_aspect: float = 20.0
    modes: tuple[str, ...] | None = ("RGB", "RGBA", "L", "LA", "P", "PA")
    text_from: str = "all"
    min_text_chars: int = 1
    max_text_chars: int | None = 100_000
    max_repetition: float = 0.5
    repetition_ngram: int = 3
    languages: tuple[str, ...] | None = None
    keep_undetermined: bool = True

    def __post_init__(self) -> None:
        _require(self.min_side >= 1, "min_side must be >= 1")
        _require(self.max_side is None or self.max_side >= self.min_side, "max_side must be >= min_side")
        _require(self.max_pixels >= 1, "max_pixels must be >= 1")
        _require(self.max_bytes is None or self.max_bytes >= 1, "max_bytes must be >= 1")
        _require(self.max_aspect >= 1.0, "max_aspect must be >= 1")
        _require(self.text_from in TEXT_SOURCES, f"text_from must be one of {TEXT_SOURCES}")
        _require(self.min_text_chars >= 0, "min_text_chars must be >= 0")
        _require(self.max_text_chars is None or self.max_text_chars >= self.min_text_chars,
                 "max_text_chars must be >= min_text_chars")
        _require(0.0 <= self.max_repetition <= 1.0, "max_repetition must be in [0, 1]")
        _require(self.repetition_ngram >= 1, "repetition_ngram must be >= 1")
        # YAML gives lists (or one bare string); keep tuples so the settings stay hashable and printable.
        if self.languages is not None:
            self.languages = (self.languages,) if isinstance(self.languages, str) else tuple(self.languages)
            unknown = sorted(set(self.languages) - {*SUPPORTED_LANGUAGES, UNDETERMINED})
            _require(not unknown, f"unknown language code(s) {unknown}; known: {SUPPORTED_LANGUAGES}")
        if self.modes is not None:
            self.modes = (self.modes,) if isinstance(self.modes, str) else tuple(self.modes)

    def setup(self) -> None:
        """Nothing to load: the checks need only PIL."""

    def process(self, items: list[Item]) -> list[Decision]:
        return [self._decide(item) for item in items]

    def _decide(self, item: Item) -> Decision:
        scores: dict[str, float] = {}
        reason = self._check_text(item, scores) or self._check_images(item, scores)
        item.scores.update(scores)
        return Decision(item.id, self.name, reason is None, reason, scores)

    def _check_text(self, item: Item, scores: dict[str, float]) -> str | None:
        text = record_text(item.record, self.text_from).strip()
        if len(text) < self.min_text_chars:
            return f"text: too short ({len(text)} chars < {self.min_text_chars})"
        if self.max_text_chars is not None and len(text) > self.max_text_chars:
            return f"text: too long ({len(text)} chars > {self.max_text_chars})"
        repetition = repetition_ratio(text, self.repetition_ngram)
        scores["repetition"] = round(repetition, 4)
        if repetition > self.max_repetition:
            return f"text: repetitive ({repetition:.2f} of word {self.repetition_ngram}-grams repeat)"
        if self.languages is None:
            return None
        guess = detect_language(text)
        scores["language_confidence"] = guess.confidence
        item.features["language"] = guess.language
        if guess.language == UNDETERMINED and self.keep_undetermined:
            return None
        if guess.language not in self.languages:
            return f"text: language {guess.language} not allowed"
        return None

    def _check_images(self, item: Item, scores: dict[str, float]) -> str | None:
        sizes, digests, hashes = [], [], []
        paths = image_paths(item)
        for index, path in enumerate(paths):
            which = f"image {index + 1} of {len(paths)}" if len(paths) > 1 else ""
            where, suffix = (f"{which}, ", f" ({which})") if which else ("", "")
            check = check_image(path, self.max_pixels, self.max_bytes)
            if check.problem is not None:
                return f"image: {check.problem}{suffix}"
            assert check.image is not None and check.sha256 is not None
            width, height = check.image.size
            if index == 0:
                scores["width"], scores["height"] = float(width), float(height)
            if min(width, height) < self.min_side:
                return f"image: too small ({where}{width}x{height}, min side {self.min_side})"
            if self.max_side is not None and max(width, height) > self.max_side:
                return f"image: too large ({where}{width}x{height}, max side {self.max_side})"
            aspect = max(width, height) / min(width, height)
            if aspect > self.max_aspect:
                return f"image: aspect ratio ({where}{aspect:.1f} > {self.max_aspect:g})"
            if self.modes is not None and check.mode not in self.modes:
                return f"image: colour mode {check.mode} not allowed{suffix}"
            sizes.append([width, height])
            digests.append(check.sha256)
            hashes.append(image_phashes(check.image))
        item.features.update(image_sizes=sizes, image_sha256=digests, phash=hashes)
        return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CurationError(f"stage 'validate': {message}")
