"""Balancing stages: ``bucket_balance`` (latent-class buckets, PAPER.md 4.5) and ``ngram_resample``
(n-gram resampling, PAPER.md 4.8). Both are global stages: they read every surviving item, decide, then
answer in input order. The algorithms live in :mod:`sailvl2.curation.balance`.

``bucket_balance``: embed each item (``embedder: model``, the mean-pooled last hidden state of a SAIL-VL2
checkpoint's LLM over the sample's tokens, or ``embedder: tfidf``, a hashing TF-IDF of its text), cluster
into ``buckets`` with seeded k-means, keep ``target`` items (or ``fraction`` of them) spread uniformly over
the buckets. Dropped items read ``"balance: bucket <k> over quota"``; every item gets scores ``bucket`` and
``bucket_size``.

``ngram_resample``: weight each item by how rare the word n-grams of its ``text_from`` turns (default the
answers) are, keep ``fraction`` (or ``target``) by a seeded weighted draw. Dropped items read
``"resample: over-represented n-grams (weight <w>)"``; every item gets score ``ngram_weight`` (1 = all its
n-grams unique). The top-``top`` n-gram share before and after is logged and returned by ``summary()``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..balance import (ModelEmbedder, balanced_sample, hashing_tfidf, kmeans, ngram_weights, top_ngram_share,
                       weighted_sample)
from ..types import CurationError, Decision, Item
from . import register_stage
from .validate import TEXT_SOURCES, image_paths, record_text

__all__ = ["BucketBalanceStage", "NgramResampleStage"]

_LOG = logging.getLogger(__name__)
_EMBEDDERS = ("model", "tfidf")


def _require(stage: str, condition: bool, message: str) -> None:
    if not condition:
        raise CurationError(f"stage {stage!r}: {message}")


def _check_size(stage: str, target: int | None, fraction: float | None) -> None:
    _require(stage, (target is None) != (fraction is None), "give exactly one of target (a count) and fraction")
    _require(stage, target is None or (isinstance(target, int) and target >= 0), f"target must be >= 0, got {target!r}")
    _require(stage, fraction is None or 0.0 < fraction <= 1.0, f"fraction must be in (0, 1], got {fraction!r}")


def _goal(total: int, target: int | None, fraction: float | None) -> int:
    return min(total, target) if target is not None else round(total * fraction)  # type: ignore[operator]


@register_stage("bucket_balance")
@dataclass
class BucketBalanceStage:
    """Settings: ``embedder`` (model | tfidf), ``model`` (checkpoint folder, for ``embedder: model``),
    ``device``, ``dtype``, ``batch_size``, ``max_tokens``, ``images`` (feed the images too), ``text_from``
    (tfidf text: all | human | gpt), ``tfidf_dim``, ``buckets`` (k), ``target`` or ``fraction``, ``seed``,
    ``iterations``, ``n_init``."""

    name: ClassVar[str] = "bucket_balance"
    embedder: str = "model"
    model: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    batch_size: int = 8
    max_tokens: int = 512
    images: bool = False
    text_from: str = "all"
    tfidf_dim: int = 4096
    buckets: int = 16
    target: int | None = None
    fraction: float | None = None
    seed: int = 0
    iterations: int = 100
    n_init: int = 3
    _summary: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        _require(self.name, self.embedder in _EMBEDDERS, f"embedder must be one of {_EMBEDDERS}, got {self.embedder!r}")
        _require(self.name, self.embedder != "model" or bool(self.model),
                 "embedder 'model' needs model: <checkpoint folder> (or use embedder: tfidf)")
        _require(self.name, self.text_from in TEXT_SOURCES, f"text_from must be one of {TEXT_SOURCES}")
        _require(self.name, self.buckets >= 1 and self.iterations >= 1 and self.n_init >= 1,
                 "buckets, iterations and n_init must be >= 1")
        _require(self.name, self.batch_size >= 1 and self.max_tokens >= 1 and self.tfidf_dim >= 2,
                 "batch_size and max_tokens must be >= 1, tfidf_dim >= 2")
        _check_size(self.name, self.target, self.fraction)

    def embed(self, items: list[Item]) -> np.ndarray:
        """One L2-normalised row per item, from the configured embedder."""
        if self.embedder == "tfidf":
            return hashing_tfidf([record_text(item.record, self.text_from) for item in items], self.tfidf_dim)
        embedder = ModelEmbedder(self.model, self.device, self.dtype, self.batch_size,  # type: ignore[arg-type]
                                 self.max_tokens, self.images)
        files = [image_paths(item) for item in items] if self.images else None
        return embedder.embed([item.record for item in items], files)

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]:
        items = list(items)
        if not items:
            return
        result = kmeans(self.embed(items), self.buckets, self.seed, self.iterations, self.n_init)
        goal = _goal(len(items), self.target, self.fraction)
        keep = balanced_sample(result.labels, goal, self.seed)
        sizes = np.bincount(result.labels, minlength=len(result.centroids))
        kept = np.bincount(result.labels[keep], minlength=len(result.centroids))
        self._summary = {"items": len(items), "target": goal, "buckets": len(sizes), "bucket_sizes": sizes.tolist(),
                         "bucket_kept": kept.tolist(), "inertia": result.inertia}
        _LOG.info("bucket_balance: %d buckets of sizes %s -> kept %s", len(sizes), sizes.tolist(), kept.tolist())
        for item, label, chosen in zip(items, result.labels.tolist(), keep.tolist()):
            scores = {"bucket": float(label), "bucket_size": float(sizes[label])}
            yield Decision(item.id, self.name, chosen, None if chosen else f"balance: bucket {label} over quota", scores)

    def summary(self) -> dict[str, Any]:
        """Bucket sizes and kept counts of the last run (for the report)."""
        return dict(self._summary)


@register_stage("ngram_resample")
@dataclass
class NgramResampleStage:
    """Settings: ``n`` (word n-gram size), ``text_from`` (gpt | human | all), ``fraction`` or ``target``,
    ``power`` (how hard common n-grams are pushed down; 0 = uniform sampling), ``top`` (n-grams counted in
    the share), ``seed``."""

    name: ClassVar[str] = "ngram_resample"
    n: int = 3
    text_from: str = "gpt"
    fraction: float | None = None
    target: int | None = None
    power: float = 1.0
    top: int = 100
    seed: int = 0
    _summary: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        _require(self.name, isinstance(self.n, int) and self.n >= 1, f"n must be an integer >= 1, got {self.n!r}")
        _require(self.name, self.text_from in TEXT_SOURCES, f"text_from must be one of {TEXT_SOURCES}")
        _require(self.name, self.power >= 0, f"power must be >= 0, got {self.power!r}")
        _require(self.name, self.top >= 1, f"top must be >= 1, got {self.top!r}")
        _check_size(self.name, self.target, self.fraction)

    def process_all(self, items: Iterable[Item]) -> Iterator[Decision]:
        items = list(items)
        if not items:
            return
        texts = [record_text(item.record, self.text_from) for item in items]
        weights = ngram_weights(texts, self.n, self.power)
        keep = weighted_sample(weights, _goal(len(items), self.target, self.fraction), self.seed)
        before = top_ngram_share(texts, self.n, self.top)
        after = top_ngram_share([t for t, k in zip(texts, keep) if k], self.n, self.top)
        self._summary = {"items": len(items), "kept": int(keep.sum()), "n": self.n, "top": self.top,
                         "top_share_before": before, "top_share_after": after}
        _LOG.info("ngram_resample: top-%d %d-gram share %.4f -> %.4f", self.top, self.n, before, after)
        for item, weight, chosen in zip(items, weights.tolist(), keep.tolist()):
            reason = None if chosen else f"resample: over-represented n-grams (weight {weight:.3g})"
            yield Decision(item.id, self.name, chosen, reason, {"ngram_weight": round(weight, 6)})

    def summary(self) -> dict[str, Any]:
        """The top-n-gram share before and after the last run (for the report)."""
        return dict(self._summary)
