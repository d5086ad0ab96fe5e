"""Learning-rate schedules: cosine, WSD (warmup-stable-decay) and constant, each with linear warmup.

The schedule gives a multiplier in [0, 1] of each part's peak learning rate; AdaLRS (PAPER.md 7) multiplies
its own scale on top. LongCoT and Think-Fusion SFT use cosine with peak 1e-6 (PAPER.md 8.2, 8.4); WSD is
offered because AdaLRS is reported to work with both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "cosine"  # cosine | wsd | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of the peak
    decay_fraction: float = 0.1  # WSD: share of training spent decaying at the end

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "wsd", "constant"):
            raise ConfigError(f"schedule.kind must be cosine, wsd or constant, got {self.kind!r}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0 or not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"invalid schedule settings: {self}")


def lr_multiplier(config: ScheduleConfig, step: int, total_steps: int) -> float:
    """Multiplier of the peak LR at optimizer step `step` (0-based) of `total_steps`."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.kind == "constant":
        return 1.0
    floor = config.min_lr_ratio
    if config.kind == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_steps = max(1, round(total_steps * config.decay_fraction))
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / decay_steps)
    return floor + (1.0 - floor) * (1.0 - progress)
