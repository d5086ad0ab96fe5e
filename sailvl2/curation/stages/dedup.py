"""Dedup stages: exact (content hash), near-duplicate images (pHash), near-duplicate texts (MinHash LSH).

All three are global stages: they see every surviving item in input order and keep the first occurrence;
a later item is compared with the items kept so far only (so a chain A ~ B ~ C with A !~ C keeps C when B
was dropped: no drift along chains). A dropped item's reason names the kept item it duplicates and how
close it is: ``"duplicate: of <id>"``, ``"duplicate: of <id> (distance 3)"``,
``"duplicate: of <id> (jaccard 0.82)"``; the closest kept item is named, the earliest on ties.

Image hashes and digests come from ``Item.features`` when the ``validate`` stage left them there
(``image_sha256``, ``phash``), otherwise the images are read here with the same defensive loader. An item
whose image cannot be read here is kept and not indexed: dedup does not judge what it cannot see (put
``validate`` first to drop such items with a reason).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from ..minhash import SHINGLE_KINDS, LSHIndex, MinHasher, choose_bands, jaccard, normalize_text, shingles
from ..phash import HammingIndex, hamming
from ..types import CurationError, Decision, Item
from . import register_stage
from .validate import TEXT_SOURCES, check_image, image_paths, image_phashes, record_text

__all__ = ["ExactDedupStage", "ImageDedupStage", "TextDedupStage"]

_SPACES = re.compile(r"\s+")
_NO_TEXT = "none"


def _exact_text(text: str) -> str:
    """Text as compared by exact dedup: NFKC, whitespace runs collapsed, ends stripped (case and
    punctuation are kept: "2+2" and "2-2" are different questions)."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def _image_digests(item: Item) -> list[str] | None:
    cached = item.features.get("image_sha256")
    paths = image_paths(item)
    if isinstance(cached, list) and len(cached) == len(paths):
        return cached
    digests = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                digests.append(hashlib.file_digest(handle, "sha256").hexdigest())
        except OSError:
            return None
    item.features["image_sha256"] = digests
    return digests


def _image_hashes(item: Item) -> list[list[int]] | None:
    cached = item.features.get("phash")
    paths = image_paths(item)
    if isinstance(cached, list) and len(cached) == len(paths):
        return cached
    hashes = []
    for path in paths:
        check = check_image(path)
        if check.image is None:
            return None
        hashes.append(image_phashes(check.image))
    item.features["phash"] = hashes
    return hashes


def _require(stage: str, condition: bool, message: str) -> None:
    if not condition:
        raise CurationError(f"stage {stage!r}: {message}")


def _kept(item: Item, stage: str) -> Decision:
    return Decision(item.id, stage, True)


# --------------------------------------------------------------------------------------------- exact


@register_stage("exact_dedup")
@dataclass
class ExactDedupStage:
    """Drops items whose image bytes (SHA-256 of every image, in order) and text are identical to a kept one.

    ``text_from``: which turns form the text (``all``, ``human``, ``gpt``), or ``none`` to compare images only
    (items without images then all share the empty key, so ``none`` suits image-only data). Text is compared
    after NFKC and whitespace collapsing; case and punctuation matter.
    """

    name: ClassVar[str] = "exact_dedup"
    text_from: str = "all"

    def __post_init__(self) -> None:
        _require(self.name, self.text_from in (*TEXT_SOURCES, _NO_TEXT),
                 f"text_from must be one of {(*TEXT_SOURCES, _NO_TEXT)}, got {self.text_from!r}")

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]:
        first: dict[str, str] = {}
        for item in items:
            digests = _image_digests(item)
            if digests is None:
                yield _kept(item, self.name)
                continue
            text = "" if self.text_from == _NO_TEXT else _exact_text(record_text(item.record, self.text_from))
            key = hashlib.sha256("\0".join([*digests, text]).encode("utf-8")).hexdigest()
            item.features["sha256"] = key
            original = first.setdefault(key, item.id)
            if original == item.id:
                yield _kept(item, self.name)
            else:
                yield Decision(item.id, self.name, False, f"duplicate: of {original}")


# --------------------------------------------------------------------------------------------- images


@register_stage("image_dedup")
@dataclass
class ImageDedupStage:
    """Drops items whose images are perceptual near-duplicates of a kept item's.

    ``max_distance`` (0..31): largest pHash Hamming distance still counted as the same picture (of 64 bits;
    unrelated pictures differ in about 32). Each image carries two hashes, of the whole picture and of its
    centre without a 3.5% margin per side; the distance of two images is the smallest over the four
    pairings, which is what makes slight crops match (``crop_tolerant: false`` uses the whole-image hash
    only). Items match when they have the same number of images and every image pair (in order) is within
    ``max_distance``; the reported distance is the largest of those. ``match_text`` (``human``, ``gpt``,
    ``all``) additionally requires equal normalised text of those turns, e.g. ``human`` to drop repeated
    (image, question) pairs but keep different questions about the same picture, as in PAPER.md section 4.6.
    Items without images are kept untouched.
    """

    name: ClassVar[str] = "image_dedup"
    max_distance: int = 8
    crop_tolerant: bool = True
    match_text: str | None = None

    def __post_init__(self) -> None:
        _require(self.name, isinstance(self.max_distance, int) and 0 <= self.max_distance <= 31,
                 f"max_distance must be an integer in 0..31, got {self.max_distance!r}")
        _require(self.name, self.match_text is None or self.match_text in TEXT_SOURCES,
                 f"match_text must be null or one of {TEXT_SOURCES}, got {self.match_text!r}")

    def _views(self, hashes: list[int]) -> list[int]:
        return hashes if self.crop_tolerant else hashes[:1]

    def _distance(self, a: list[list[int]], b: list[list[int]]) -> int:
        return max(min(hamming(x, y) for x in self._views(ha) for y in self._views(hb)) for ha, hb in zip(a, b))

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]:
        index = HammingIndex(self.max_distance)
        kept: list[tuple[str, list[list[int]], str]] = []   # (id, hashes per image, text key)
        for item in items:
            hashes = _image_hashes(item)
            if not hashes:  # no images, or one that cannot be read
                yield _kept(item, self.name)
                continue
            text = normalize_text(record_text(item.record, self.match_text)) if self.match_text else ""
            best: tuple[int, int] | None = None   # (distance, kept slot)
            for view in self._views(hashes[0]):
                for slot, _ in index.near(view):
                    other_id, other_hashes, other_text = kept[slot]  # type: ignore[index]
                    if len(other_hashes) != len(hashes) or other_text != text:
                        continue
                    distance = self._distance(hashes, other_hashes)
                    if distance <= self.max_distance and (best is None or (distance, slot) < best):
                        best = (distance, slot)  # type: ignore[assignment]
            if best is None:
                for view in self._views(hashes[0]):
                    index.add(len(kept), view)
                kept.append((item.id, hashes, text))
                yield _kept(item, self.name)
                continue
            distance, slot = best
            yield Decision(item.id, self.name, False, f"duplicate: of {kept[slot][0]} (distance {distance})",
                           {"phash_distance": float(distance)})


# --------------------------------------------------------------------------------------------- texts


@register_stage("text_dedup")
@dataclass
class TextDedupStage:
    """Drops items whose text is a near-duplicate (shingle Jaccard >= ``threshold``) of a kept item's.

    Text of ``text_from`` turns is normalised (NFKC, case-folded, punctuation dropped) and cut into
    ``shingle`` (``char`` or ``word``) ``shingle_size``-grams; MinHash LSH (``num_perm`` hash functions,
    ``seed``) proposes candidates and the exact Jaccard of the shingle sets confirms them. Texts shorter than
    ``min_chars`` normalised characters are kept without comparison (short answers like "Yes." repeat
    legitimately). ``same_images: true`` compares only items with byte-identical images, e.g. with
    ``text_from: human`` to drop near-repeated questions about one picture while keeping the same question
    about different pictures.
    """

    name: ClassVar[str] = "text_dedup"
    threshold: float = 0.6
    shingle: str = "char"
    shingle_size: int = 5
    num_perm: int = 128
    seed: int = 0
    text_from: str = "all"
    min_chars: int = 20
    same_images: bool = False

    def __post_init__(self) -> None:
        _require(self.name, 0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold!r}")
        _require(self.name, self.shingle in SHINGLE_KINDS,
                 f"shingle must be one of {SHINGLE_KINDS}, got {self.shingle!r}")
        _require(self.name, self.shingle_size >= 1, "shingle_size must be >= 1")
        _require(self.name, self.num_perm >= 8, "num_perm must be >= 8")
        _require(self.name, self.text_from in TEXT_SOURCES, f"text_from must be one of {TEXT_SOURCES}")
        _require(self.name, self.min_chars >= 0, "min_chars must be >= 0")

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]:
        hasher = MinHasher(self.num_perm, self.seed)
        bands, rows = choose_bands(self.threshold, self.num_perm)
        indexes: dict[tuple[str, ...], LSHIndex] = {}
        kept: list[tuple[str, frozenset[str]]] = []   # (id, shingles)
        for item in items:
            text = record_text(item.record, self.text_from)
            group: tuple[str, ...] | None = ()
            if self.same_images:
                digests = _image_digests(item)
                group = tuple(digests) if digests is not None else None
            if group is None or len(normalize_text(text)) < self.min_chars:
                yield _kept(item, self.name)
                continue
            shingle_set = shingles(text, self.shingle, self.shingle_size)
            signature = hasher.signature(shingle_set)
            index = indexes.setdefault(group, LSHIndex(self.num_perm, bands, rows))
            best: tuple[float, int] | None = None   # (-jaccard, kept slot)
            for slot in index.candidates(signature):
                similarity = jaccard(shingle_set, kept[slot][1])  # type: ignore[index]
                if similarity >= self.threshold and (best is None or (-similarity, slot) < best):
                    best = (-similarity, slot)  # type: ignore[assignment]
            if best is None:
                index.add(len(kept), signature)
                kept.append((item.id, shingle_set))
                yield _kept(item, self.name)
                continue
            similarity, slot = -best[0], best[1]
            yield Decision(item.id, self.name, False, f"duplicate: of {kept[slot][0]} (jaccard {similarity:.2f})",
                           {"text_jaccard": round(similarity, 4)})
