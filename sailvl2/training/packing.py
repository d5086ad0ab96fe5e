"""Stream packing and visual packing (PAPER.md 6.1-6.2).

Samples are concatenated into rows of at most `max_seq_len` tokens. Position ids restart at 0 for every
sample; with no attention mask, transformers turns restarting position ids into a block-diagonal causal
mask (SDPA/eager on CPU) or varlen flash attention (`flash_attention_2` on GPU), so samples in one row never
see each other. An image's tokens are never split: over-long samples are truncated only after their last
image token (or skipped), and every truncation or skip is counted.

Visual packing: when building the micro-batches of one step for R data-parallel ranks, samples are taken
from an online buffer largest-first and each goes to the rank that has the fewest ViT tiles (or tokens, with
`balance_tiles=False`) among those where it fits, so both the ViT and the LLM see balanced work.

Loss reduction (`token` / `sample` / `sqrt`): every trained token of sample i gets weight n_i^-p (p = 0, 1,
0.5, n_i = trained tokens of sample i), normalised over the whole global batch, so packed and unpacked
batches give the same loss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from ..errors import InputError
from .tokenize import IGNORE_INDEX, EncodedSample, FocusQuery
from .lazy_pixels import LazyPixels, concat_pixels, materialize

_REDUCTION_POWER = {"token": 0.0, "sample": 1.0, "sqrt": 0.5}


@dataclass(frozen=True)
class PackingConfig:
    max_seq_len: int = 8192
    buffer_size: int = 64
    overlong: str = "truncate"  # "truncate" (text after the last image) or "skip"
    balance_tiles: bool = True
    loss_reduction: str = "token"

    def __post_init__(self) -> None:
        if self.max_seq_len < 16:
            raise InputError(f"max_seq_len must be >= 16, got {self.max_seq_len}")
        if self.overlong not in ("truncate", "skip"):
            raise InputError(f"overlong must be 'truncate' or 'skip', got {self.overlong!r}")
        if self.loss_reduction not in _REDUCTION_POWER:
            raise InputError(f"loss_reduction must be one of {sorted(_REDUCTION_POWER)}, got {self.loss_reduction!r}")


class RowFocusQuery(NamedTuple):
    """A sample's FocusQuery (training/tokenize.py) at packed-row positions, with where its sample starts: its
    query sees keys from there on only (training/focus.py)."""

    start: int
    query: int
    targets: list[int]
    subject: int
    spread: bool
    share: float

    @classmethod
    def shifted(cls, item: FocusQuery, start: int) -> "RowFocusQuery":
        return cls(start, start + item.query, [start + t for t in item.targets], item.subject, item.spread,
                   item.share)


@dataclass
class PackedBatch:
    """One packed row (batch dimension 1) for one rank's micro-batch."""

    input_ids: torch.Tensor  # [1, L]
    labels: torch.Tensor  # [1, L]
    position_ids: torch.Tensor  # [1, L]
    pixel_values: Any  # [tiles, 3, S, S] tensor, LazyPixels (lazy_pixels.py) or None; read it via pixels()
    sample_lengths: list[int]
    sample_loss_tokens: list[int]
    sample_ids: list[str] = field(default_factory=list)
    focus: list[RowFocusQuery] = field(default_factory=list)  # focus supervision's queries, at row positions

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def num_real_tokens(self) -> int:
        return sum(self.sample_lengths)

    @property
    def num_tiles(self) -> int:
        if self.pixel_values is None:
            return 0
        pixels = self.pixel_values
        return pixels.num_tiles if isinstance(pixels, LazyPixels) else int(pixels.shape[0])

    def pixels(self) -> torch.Tensor | None:
        """The row's tiles as a tensor, decoding lazily planned images now (once)."""
        self.pixel_values = materialize(self.pixel_values)
        return self.pixel_values


def fit_to_length(sample: EncodedSample, config: PackingConfig, image_token_id: int) -> EncodedSample | None:
    """Apply the over-long policy. Returns None when the sample must be skipped."""
    if sample.length <= config.max_seq_len:
        return sample
    if config.overlong == "skip":
        return None
    image_positions = (sample.input_ids == image_token_id).nonzero()
    last_image = int(image_positions[-1]) + 2 if len(image_positions) else 0  # keep `</img>` too
    if last_image > config.max_seq_len:
        return None  # cutting would split an image
    keep = config.max_seq_len
    return EncodedSample(sample.input_ids[:keep], sample.labels[:keep], sample.pixel_values,
                         sample.image_num_tiles, sample.sample_id, sample.source,
                         [item for item in sample.focus if item.query < keep - 1])


def pack_row(samples: list[EncodedSample], pad_token_id: int, pad_to: int | None = None) -> PackedBatch:
    """Concatenate samples into one row with restarting position ids; optional right padding."""
    ids, labels, positions, focus = [], [], [], []
    start = 0
    for sample in samples:
        focus += [RowFocusQuery.shifted(item, start) for item in sample.focus]
        start += sample.length
        sample_labels = sample.labels.clone()
        sample_labels[0] = IGNORE_INDEX  # never predict a sample's first token from the previous sample
        ids.append(sample.input_ids)
        labels.append(sample_labels)
        positions.append(torch.arange(sample.length))
    length = sum(sample.length for sample in samples)
    if pad_to is not None and pad_to > length:
        pad = pad_to - length
        ids.append(torch.full((pad,), pad_token_id, dtype=torch.long))
        labels.append(torch.full((pad,), IGNORE_INDEX, dtype=torch.long))
        positions.append(torch.arange(pad))  # padding is its own block: it attends only to itself
    pixels = concat_pixels([s.pixel_values for s in samples])
    return PackedBatch(
        input_ids=torch.cat(ids).unsqueeze(0),
        labels=torch.cat(labels).unsqueeze(0),
        position_ids=torch.cat(positions).unsqueeze(0),
        pixel_values=pixels,
        sample_lengths=[s.length for s in samples],
        sample_loss_tokens=[max(0, s.num_loss_tokens - int(s.labels[0] != IGNORE_INDEX)) for s in samples],
        sample_ids=[s.sample_id for s in samples],
        focus=focus,
    )


def token_weights(batches: list[PackedBatch], reduction: str) -> list[torch.Tensor]:
    """Per-token loss weights [1, L] for every micro-batch of a global batch (see module docstring)."""
    power = _REDUCTION_POWER[reduction]
    counts = [n for batch in batches for n in batch.sample_loss_tokens if n > 0]
    normaliser = sum(n ** (1.0 - power) for n in counts) or 1.0
    weights = []
    for batch in batches:
        row = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        start = 0
        for length, trained in zip(batch.sample_lengths, batch.sample_loss_tokens):
            if trained:
                row[0, start : start + length] = trained ** (-power) / normaliser
            start += length
        weights.append(row * (batch.labels != IGNORE_INDEX))
    return weights


@dataclass
class PackingStats:
    samples: int = 0
    skipped: Counter = field(default_factory=Counter)
    truncated: int = 0
    real_tokens: int = 0
    slot_tokens: int = 0

    @property
    def efficiency(self) -> float:
        """Share of non-pad tokens in the emitted rows."""
        return self.real_tokens / self.slot_tokens if self.slot_tokens else 0.0


class StreamPacker:
    """Online packing: keeps a buffer of samples and emits, per step, one packed row per rank."""

    def __init__(self, config: PackingConfig, image_token_id: int, pad_token_id: int, num_ranks: int = 1) -> None:
        self.config = config
        self.image_token_id = image_token_id
        self.pad_token_id = pad_token_id
        self.num_ranks = num_ranks
        self.stats = PackingStats()
        self.buffer: list[EncodedSample] = []

    def _admit(self, sample: EncodedSample) -> EncodedSample | None:
        fitted = fit_to_length(sample, self.config, self.image_token_id)
        if fitted is None:
            self.stats.skipped["over max_seq_len" if self.config.overlong == "skip" else "image past max_seq_len"] += 1
        elif fitted is not sample:
            self.stats.truncated += 1
        return fitted

    def next_step(self, pull: Callable[[], EncodedSample | None], pad_to_max: bool = False) -> list[PackedBatch]:
        """Fill `num_ranks` rows from the buffer, refilling it from `pull` (None = no more data) until no
        buffered sample fits any row, so a step is never short because the buffer was small. Returns the
        non-empty rows (none when the data is exhausted). `self.buffer` keeps what is left for later steps;
        checkpoints save it so a resumed run packs exactly the same rows."""
        bins: list[list[EncodedSample]] = [[] for _ in range(self.num_ranks)]
        lengths, tiles = [0] * self.num_ranks, [0] * self.num_ranks
        exhausted = False
        while True:
            while not exhausted and len(self.buffer) < self.config.buffer_size:
                sample = pull()
                if sample is None:
                    exhausted = True
                    break
                fitted = self._admit(sample)
                if fitted is not None:
                    self.buffer.append(fitted)
            if not self._place(bins, lengths, tiles):
                break
        rows = []
        for members in (b for b in bins if b):
            row = pack_row(members, self.pad_token_id, self.config.max_seq_len if pad_to_max else None)
            self.stats.samples += len(members)
            self.stats.real_tokens += row.num_real_tokens
            self.stats.slot_tokens += self.config.max_seq_len
            rows.append(row)
        return rows

    def steps(self, samples: Iterable[EncodedSample], pad_to_max: bool = False) -> Iterator[list[PackedBatch]]:
        """Yield lists of up to `num_ranks` packed rows until `samples` is exhausted."""
        source = iter(samples)
        while rows := self.next_step(lambda: next(source, None), pad_to_max):
            yield rows

    def _place(self, bins: list[list[EncodedSample]], lengths: list[int], tiles: list[int]) -> int:
        """Largest first, each buffered sample into the least-loaded row (ViT tiles, or tokens) where it fits;
        returns how many were placed. What fits nowhere stays buffered."""
        if self.config.balance_tiles:
            order = sorted(range(len(self.buffer)), key=lambda i: (self.buffer[i].num_tiles, self.buffer[i].length),
                           reverse=True)
        else:
            order = sorted(range(len(self.buffer)), key=lambda i: self.buffer[i].length, reverse=True)
        taken = set()
        for index in order:
            sample = self.buffer[index]
            fits = [r for r in range(self.num_ranks) if lengths[r] + sample.length <= self.config.max_seq_len]
            if not fits:
                continue
            load = tiles if self.config.balance_tiles else lengths
            rank = min(fits, key=lambda r: (load[r], lengths[r], r))
            bins[rank].append(sample)
            lengths[rank] += sample.length
            tiles[rank] += sample.num_tiles
            taken.add(index)
        self.buffer[:] = [sample for i, sample in enumerate(self.buffer) if i not in taken]
        return len(taken)
