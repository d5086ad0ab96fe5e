"""MinHash signatures of text shingles and a banded LSH index, for near-duplicate text search.

A text becomes a set of shingles (character ``k``-grams or word ``k``-grams of its normalised form: NFKC,
case-folded, punctuation dropped, whitespace collapsed, so case and punctuation edits do not count as
changes). The MinHash signature keeps, for each of ``num_perm`` random hash functions
``h(x) = (a * x + b) mod p`` (``p = 2**31 - 1``), the minimum over the set; two signatures agree in one position
with probability equal to the sets' Jaccard similarity. The LSH index cuts the signature into ``bands`` of
``rows`` values; texts sharing any whole band become candidates, which happens with probability
``1 - (1 - J**rows)**bands``. :func:`choose_bands` picks (bands, rows) for a Jaccard threshold so that pairs
above it are very likely found; the caller then confirms each candidate with the exact Jaccard of the
shingle sets, so the index only costs recall (rarely), never precision.

Everything is deterministic: the hash functions come from a seeded ``numpy`` generator and shingles are
hashed with BLAKE2b (not Python's per-process salted ``hash``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Hashable

import numpy as np

__all__ = ["SHINGLE_KINDS", "LSHIndex", "MinHasher", "choose_bands", "jaccard", "normalize_text", "shingles"]

_PRIME = (1 << 31) - 1   # Mersenne prime: a * x + b stays below 2**63, so uint64 arithmetic never overflows
_WORD = re.compile(r"\w+")
SHINGLE_KINDS = ("char", "word")


def normalize_text(text: str) -> str:
    """NFKC, case-folded, words (``\\w+`` runs) joined by single spaces: the form that is shingled."""
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def shingles(text: str, kind: str = "char", size: int = 5) -> frozenset[str]:
    """The set of character or word ``size``-grams of ``normalize_text(text)``.

    A text shorter than one shingle yields its whole normalised form as the only shingle; an empty text
    (after normalisation) yields the empty set.
    """
    if kind not in SHINGLE_KINDS:
        raise ValueError(f"shingle kind must be one of {SHINGLE_KINDS}, got {kind!r}")
    if size < 1:
        raise ValueError(f"shingle size must be >= 1, got {size}")
    norm = normalize_text(text)
    if not norm:
        return frozenset()
    units: str | list[str] = norm if kind == "char" else norm.split(" ")
    joiner = "" if kind == "char" else " "
    if len(units) <= size:
        return frozenset([norm])
    return frozenset(joiner.join(units[i:i + size]) for i in range(len(units) - size + 1))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """|a & b| / |a | b| (0.0 when both are empty)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


class MinHasher:
    """``num_perm`` seeded universal hash functions; :meth:`signature` maps a shingle set to its MinHash."""

    def __init__(self, num_perm: int = 128, seed: int = 0) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self._a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)[:, None]
        self._b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)[:, None]

    def signature(self, shingle_set: frozenset[str] | set[str]) -> np.ndarray:
        """uint64 array of ``num_perm`` minima; the empty set gets all ``p`` (matches nothing real)."""
        if not shingle_set:
            return np.full(self.num_perm, _PRIME, dtype=np.uint64)
        values = np.fromiter(
            (int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little") % _PRIME
             for s in sorted(shingle_set)),
            dtype=np.uint64, count=len(shingle_set),
        )
        return ((self._a * values[None, :] + self._b) % _PRIME).min(axis=1)


def _candidate_probability(similarity: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - similarity ** rows) ** bands


def choose_bands(threshold: float, num_perm: int, miss_weight: float = 0.8) -> tuple[int, int]:
    """(bands, rows) with ``bands * rows <= num_perm`` minimising the weighted area of misses above
    ``threshold`` (weight ``miss_weight``) and of needless candidates below it (``1 - miss_weight``).

    Misses are weighted up because candidates are verified exactly afterwards: a needless candidate costs one
    Jaccard computation, a miss costs a duplicate kept.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    below = np.linspace(0.0, threshold, 200)
    above = np.linspace(threshold, 1.0, 200)
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        false_pos = np.trapezoid(_candidate_probability(below, bands, rows), below)
        false_neg = np.trapezoid(1.0 - _candidate_probability(above, bands, rows), above)
        cost = miss_weight * false_neg + (1.0 - miss_weight) * false_pos
        if best is None or cost < best[0]:
            best = (float(cost), bands, rows)
    assert best is not None
    return best[1], best[2]


class LSHIndex:
    """Banded LSH over MinHash signatures: :meth:`candidates` returns keys sharing at least one band."""

    def __init__(self, num_perm: int, bands: int, rows: int) -> None:
        if bands * rows > num_perm or bands < 1 or rows < 1:
            raise ValueError(f"{bands} bands x {rows} rows do not fit a {num_perm}-value signature")
        self.num_perm, self.bands, self.rows = num_perm, bands, rows
        self._buckets: list[defaultdict[bytes, list[Hashable]]] = [defaultdict(list) for _ in range(bands)]

    def _band_keys(self, signature: np.ndarray) -> list[bytes]:
        if signature.shape != (self.num_perm,):
            raise ValueError(f"expected a signature of {self.num_perm} values, got shape {signature.shape}")
        return [signature[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def add(self, key: Hashable, signature: np.ndarray) -> None:
        for bucket, band in zip(self._buckets, self._band_keys(signature)):
            bucket[band].append(key)

    def candidates(self, signature: np.ndarray) -> list[Hashable]:
        """Stored keys sharing a band with ``signature``, each once (deterministic order: band, then insertion)."""
        seen: dict[Hashable, None] = {}
        for bucket, band in zip(self._buckets, self._band_keys(signature)):
            for key in bucket.get(band, ()):
                seen.setdefault(key, None)
        return list(seen)
