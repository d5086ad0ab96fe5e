"""Balancing tools: latent-class buckets (PAPER.md 4.5) and n-gram resampling (PAPER.md 4.8).

Latent-class balancing: SAIL-Instruction2 embeds every VQA sample with an LVM, clusters the latent classes
into fine-grained buckets and samples uniformly across buckets (PAPER.md 4.5; the embedding layer, the
clustering and the quotas are [NOT FOUND]). Here a sample's embedding is the mean of the LLM's last hidden
state over the sample's own conversation tokens (:class:`ModelEmbedder`, through ``sailvl2.load``), or, for
a model-free run, a hashing TF-IDF vector (:func:`hashing_tfidf`); :func:`kmeans` (k-means++ seeding, Lloyd
iterations, seeded) forms the buckets and :func:`balanced_sample` fills equal per-bucket quotas
(water-filling: a bucket smaller than the quota gives its spare places to the others).

N-gram resampling: PAPER.md 4.8 rebalances captions and synthetic VQA at the n-gram level to undo the
linguistic homogenisation of LLM-written data (4.2); the algorithm is [NOT FOUND]. Here a sample's weight is
the geometric mean over its distinct word n-grams of ``1 / document frequency``, raised to ``power``
(:func:`ngram_weights`): a sample made of n-grams that many samples share is drawn less often; then a
seeded weighted draw without replacement (:func:`weighted_sample`, Efraimidis-Spirakis keys) keeps the
target count. :func:`top_ngram_share` measures the effect: the share of all n-gram occurrences that the
``top`` most frequent n-grams account for.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["KMeansResult", "ModelEmbedder", "balanced_sample", "bucket_quotas", "hashing_tfidf", "kmeans",
           "ngram_weights", "ngrams", "top_ngram_share", "weighted_sample", "words"]

# Han and kana have no spaces between words: each character is one word; everything else is \w+ runs.
_CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+")
_PLACEHOLDER = re.compile(r"<image>\n?")


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``text``, in order; a text of 1..n-1 words is one (shorter) gram, an empty one none."""
    tokens = words(text)
    if len(tokens) < n:
        return [tuple(tokens)] if tokens else []
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# --------------------------------------------------------------------------------------------- embeddings


def _normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def hashing_tfidf(texts: Sequence[str], dim: int = 4096, max_n: int = 2) -> np.ndarray:
    """L2-normalised TF-IDF rows [len(texts), dim] of word 1..max_n-grams, hashed into ``dim`` signed buckets
    (CRC-32, stable across runs and processes); tf is ``1 + log(count)``, idf ``log((1 + N) / (1 + df)) + 1``."""
    if dim < 2 or max_n < 1:
        raise InputError(f"dim must be >= 2 and max_n >= 1, got {dim} and {max_n}")
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        tokens = words(text)
        grams = Counter(" ".join(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))
        for gram, count in grams.items():
            code = zlib.crc32(gram.encode("utf-8"))
            matrix[row, code % dim] += (1.0 + math.log(count)) * (1.0 if code >> 31 == 0 else -1.0)
    df = (matrix != 0).sum(axis=0)
    idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
    return _normalize_rows(matrix * idf.astype(np.float32))


class ModelEmbedder:
    """Sample embeddings from a SAIL-VL2 checkpoint: the chat-template text of the record's conversation
    (empty system message), through the LLM, last hidden state mean-pooled over the conversation tokens (the
    system block every sample shares is left out), L2-normalised. ``images=True`` also feeds the record's
    images (placeholders expanded by the processor, no truncation); otherwise placeholders are removed and
    the text is cut to ``max_tokens`` tokens. Rows are left-padded in batches with explicit position ids, so
    a sample's embedding does not depend on its batch."""

    def __init__(self, path: str, device: str = "cpu", dtype: str | None = None, batch_size: int = 8,
                 max_tokens: int = 512, images: bool = False) -> None:
        from ..api import load
        from ..processing.prompt import build_prompt

        if batch_size < 1 or max_tokens < 1:
            raise InputError(f"batch_size and max_tokens must be >= 1, got {batch_size} and {max_tokens}")
        self.chat = load(path, device=device, dtype=dtype)
        self.batch_size, self.max_tokens, self.images = batch_size, max_tokens, images
        self._build_prompt = build_prompt
        probe = build_prompt([{"role": "user", "content": "x"}], add_generation_prompt=False, system="")
        head = probe[:probe.index("<|im_end|>") + len("<|im_end|>")]
        self._prefix = len(self.chat.processor.tokenizer(head)["input_ids"])

    def _messages(self, record: Mapping[str, Any], keep_placeholders: bool) -> list[dict[str, str]]:
        messages = []
        for turn in record.get("conversations") or []:
            if not isinstance(turn, Mapping):
                continue
            role = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}.get(
                turn.get("from") or turn.get("role"))
            text = turn.get("value") if turn.get("value") is not None else turn.get("content")
            if role and isinstance(text, str):
                messages.append({"role": role, "content": text if keep_placeholders else _PLACEHOLDER.sub("", text)})
        return messages or [{"role": "user", "content": ""}]

    def _row(self, record: Mapping[str, Any], image_files: Sequence[str]) -> tuple[list[int], Any]:
        from ..processing.images import load_image

        processor = self.chat.processor
        if self.images and image_files:
            messages = self._messages(record, keep_placeholders=True)
            prompt = self._build_prompt(messages, add_generation_prompt=False, system="")
            if prompt.count("<image>") == len(image_files):
                try:
                    batch = processor(images=[load_image(f) for f in image_files], text=prompt)
                    return batch["input_ids"][0].tolist(), batch["pixel_values"]
                except Exception:  # noqa: BLE001 - an unreadable image: embed the text alone, as without images
                    pass
        prompt = self._build_prompt(self._messages(record, False), add_generation_prompt=False, system="")
        return processor.tokenizer(prompt)["input_ids"][: self._prefix + self.max_tokens], None

    def embed(self, records: Sequence[Mapping[str, Any]], image_files: Sequence[Sequence[str]] | None = None
              ) -> np.ndarray:
        """[len(records), hidden] float32 embeddings; ``image_files[i]`` are record i's image paths."""
        import torch

        model = self.chat.model
        pad = self.chat.processor.tokenizer.pad_token_id or 0
        out = []
        for start in range(0, len(records), self.batch_size):
            rows = [self._row(r, image_files[start + k] if image_files else ())
                    for k, r in enumerate(records[start:start + self.batch_size])]
            width = max(len(ids) for ids, _ in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r, _ in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r, _ in rows])
            pool = mask.clone()
            for k, (r, _) in enumerate(rows):  # the shared system block is not part of the sample
                pool[k, width - len(r): width - len(r) + min(self._prefix, len(r) - 1)] = 0
            pixels = [p for _, p in rows if p is not None]
            with torch.no_grad():
                embeds = model.embed_inputs(ids.to(self.chat.device), torch.cat(pixels).to(
                    self.chat.device, model.vision_model.dtype) if pixels else None)
                hidden = model.language_model.model(
                    inputs_embeds=embeds, attention_mask=mask.to(self.chat.device),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.chat.device), use_cache=False,
                ).last_hidden_state.float()
            keep = pool.to(hidden.device).bool().unsqueeze(-1)
            summed = hidden.masked_fill(~keep, 0.0).sum(1)  # masked_fill: padded rows may hold NaN
            out.append((summed / keep.sum(1).clamp(min=1)).cpu().numpy())
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return _normalize_rows(np.concatenate(out).astype(np.float32))


# --------------------------------------------------------------------------------------------- k-means


@dataclass(frozen=True)
class KMeansResult:
    centroids: np.ndarray  # [k, dim]
    labels: np.ndarray  # [n] bucket per point, numbered in order of first appearance in the input
    inertia: float  # sum of squared distances to the assigned centroid
    iterations: int


def _sq_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (points ** 2).sum(1)[:, None] - 2.0 * points @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance to
    the nearest centre chosen so far."""
    centres = [points[rng.integers(len(points))]]
    nearest = _sq_distances(points, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres.append(points[index])
        nearest = np.minimum(nearest, _sq_distances(points, points[index][None])[:, 0])
    return np.stack(centres)


def _lloyd(points: np.ndarray, centroids: np.ndarray, iterations: int, tol: float
           ) -> tuple[np.ndarray, np.ndarray, float, int]:
    labels = np.full(len(points), -1)
    for step in range(1, iterations + 1):
        distances = _sq_distances(points, centroids)
        new_labels = distances.argmin(1)
        moved = centroids.copy()
        for cluster in range(len(centroids)):
            members = new_labels == cluster
            if members.any():
                moved[cluster] = points[members].mean(0)
            else:  # an empty cluster restarts at the point worst served by its centroid
                worst = int(distances[np.arange(len(points)), new_labels].argmax())
                moved[cluster], new_labels[worst] = points[worst], cluster
        shift = float(((moved - centroids) ** 2).sum())
        centroids = moved
        if np.array_equal(new_labels, labels) or shift <= tol:
            labels = new_labels
            break
        labels = new_labels
    labels = _sq_distances(points, centroids).argmin(1)
    inertia = float(_sq_distances(points, centroids)[np.arange(len(points)), labels].sum())
    return centroids, labels, inertia, step


def kmeans(points: np.ndarray, k: int, seed: int = 0, iterations: int = 100, n_init: int = 3,
           tol: float = 1e-8) -> KMeansResult:
    """Seeded k-means: ``n_init`` k-means++ starts, each refined by Lloyd iterations; the lowest inertia
    wins. ``k`` is capped at the number of points."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) == 0:
        raise InputError(f"points must be a non-empty [n, dim] array, got shape {points.shape}")
    if k < 1 or iterations < 1 or n_init < 1:
        raise InputError(f"k, iterations and n_init must be >= 1, got {k}, {iterations}, {n_init}")
    k = min(k, len(points))
    best: tuple[float, np.ndarray, np.ndarray, int] | None = None
    for start in range(n_init):
        rng = np.random.default_rng([seed, start])
        centroids, labels, inertia, steps = _lloyd(points, _plus_plus(points, k, rng), iterations, tol)
        if best is None or inertia < best[0]:
            best = (inertia, centroids, labels, steps)
    inertia, centroids, labels, steps = best  # type: ignore[misc]
    order = list(dict.fromkeys(labels.tolist()))  # renumber by first appearance: stable, readable ids
    order += [c for c in range(k) if c not in order]
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return KMeansResult(centroids[order], remap[labels], inertia, steps)


# --------------------------------------------------------------------------------------------- sampling


def bucket_quotas(sizes: Sequence[int], target: int) -> list[int]:
    """Per-bucket sample counts summing to ``min(target, sum(sizes))``, as equal as the sizes allow: every
    bucket gets ``min(size, q)`` for the largest such level q, and the few places left over go one each to
    the lowest-numbered buckets that still have samples."""
    if target < 0 or any(s < 0 for s in sizes):
        raise InputError(f"target and sizes must be >= 0, got {target} and {list(sizes)}")
    if target >= sum(sizes):
        return list(sizes)
    low, high = 0, max(sizes)
    while low < high:  # largest q with sum(min(s, q)) <= target
        mid = (low + high + 1) // 2
        low, high = (mid, high) if sum(min(s, mid) for s in sizes) <= target else (low, mid - 1)
    quotas = [min(s, low) for s in sizes]
    left = target - sum(quotas)
    for bucket, size in enumerate(sizes):
        if left and size > quotas[bucket]:
            quotas[bucket] += 1
            left -= 1
    return quotas


def balanced_sample(labels: Sequence[int], target: int, seed: int = 0) -> np.ndarray:
    """A keep mask choosing ``bucket_quotas`` samples per bucket, uniformly at random within each bucket."""
    labels = np.asarray(labels)
    buckets = int(labels.max()) + 1 if len(labels) else 0
    quotas = bucket_quotas([int((labels == b).sum()) for b in range(buckets)], target)
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for bucket, quota in enumerate(quotas):
        members = np.flatnonzero(labels == bucket)
        keep[rng.permutation(members)[:quota]] = True
    return keep


def top_ngram_share(texts: Sequence[str], n: int = 3, top: int = 100) -> float:
    """Share of all word n-gram occurrences in ``texts`` that belong to the ``top`` most frequent n-grams."""
    counts = Counter(gram for text in texts for gram in ngrams(text, n))
    total = sum(counts.values())
    return sum(c for _, c in counts.most_common(top)) / total if total else 0.0


def ngram_weights(texts: Sequence[str], n: int = 3, power: float = 1.0) -> np.ndarray:
    """Per text ``(geometric mean over its distinct n-grams of 1 / document frequency) ** power``; a text
    without words gets weight 1, like a text whose n-grams are all unique."""
    grams = [set(ngrams(text, n)) for text in texts]
    df = Counter(gram for text_grams in grams for gram in text_grams)
    mean_log = [sum(math.log(df[g]) for g in text_grams) / len(text_grams) if text_grams else 0.0
                for text_grams in grams]
    return np.exp(-power * np.asarray(mean_log, dtype=np.float64))


def weighted_sample(weights: Sequence[float], count: int, seed: int = 0) -> np.ndarray:
    """A keep mask of ``count`` items drawn without replacement with probability proportional to weight
    (Efraimidis-Spirakis: key ``log(u) / w``, the largest keys win), deterministic for a seed."""
    weights = np.asarray(weights, dtype=np.float64)
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise InputError("weights must be finite and >= 0")
    count = max(0, min(count, len(weights)))
    u = 1.0 - np.random.default_rng(seed).random(len(weights))  # in (0, 1]
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(u) / np.where(weights > 0, weights, 1.0), -np.inf)
    keep = np.zeros(len(weights), dtype=bool)
    keep[np.argsort(-keys, kind="stable")[:count]] = True
    return keep
