"""Training feedback: progress bar, metrics JSONL (+ TensorBoard when installed), loss-curve PNG, summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class MetricsLogger:
    """Rank-0 logger. On resume, metrics lines past the resumed step (written by the killed run after its
    last checkpoint) are dropped, so the file reads like one uninterrupted run."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.start_step = start_step
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not enabled,
                        dynamic_ncols=True)
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
            self.records = [json.loads(line) for line in kept]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        except ImportError:  # tensorboard is an optional extra
            self.writer = None

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(key, value, record["step"])
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record.get('lr', 0):.2e}",
                             tok_s=f"{record.get('tokens_per_s', 0):.0f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def plot(self, path: Path) -> Path | None:
        """Loss curve PNG (matplotlib, optional)."""
        if not self.enabled or not self.records:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.plot([r["step"] for r in self.records], [r["loss"] for r in self.records], linewidth=1.2)
        axis.set_xlabel("step")
        axis.set_ylabel("loss")
        axis.set_title(path.parent.name)
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return path


def format_summary(summary: dict[str, Any]) -> str:
    lines = ["", "== training summary =="]
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"{key:>22}: {value}")
    return "\n".join(lines)
