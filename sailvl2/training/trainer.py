"""The trainer: one loop for every stage of the ladder, driven by a recipe.

    sailvl2 train debug                                   # shipped recipe name or a YAML path
    sailvl2 train my.yaml max_steps=200 optim.lr.llm=1e-5 # key=value overrides
    torchrun --nproc_per_node 2 -m sailvl2.cli train my.yaml

Each optimizer step takes `global_batch_rows` packed rows from the stream packer (the same rows whatever
the number of processes), deals them to the ranks balancing ViT tiles, and accumulates gradients; the loss
weights are normalised over the whole global batch, so one process and N processes compute the same loss
and gradients. Checkpoints hold the model, optimizer, step, data position (source cursor + packer buffer),
RNG states and AdaLRS state, and a resumed run continues bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.errors import DataError
from .._malloc import active_allocator
from ..errors import CheckpointError, SailVL2Error
from .checkpoint import export_model, latest_checkpoint, load_checkpoint, load_snapshot, save_checkpoint
from .loss import packed_loss
from .metrics import MetricsLogger, format_summary
from .mixture_source import MixtureSource, from_json, to_json
from .packing import PackedBatch, StreamPacker, token_weights
from .precision import use_bf16_autocast
from .prefetch import RowPrefetcher
from .recipe import Recipe
from .schedule import lr_multiplier
from .setup import DistInfo, build_model, build_optimizer, freeze_parts, init_distributed, shard_model
from .sources import SyntheticShapes
from .tokenize import ConversationEncoder, EncodedSample

logger = logging.getLogger(__name__)
_EXPECTED_EFFICIENCY = 0.97


class DataPipeline:
    """Records -> encoded samples -> packed rows, with an exact, checkpointable position."""

    def __init__(self, recipe: Recipe, processor: Any, run_dir: Path, image_token_id: int, pad_id: int,
                 lazy_pixels: bool = False) -> None:
        self.recipe = recipe
        self.source = _build_source(recipe, run_dir)
        # lazy_pixels (several ranks): tiles planned from image headers, decoded by the rank that trains the row.
        self.encoder = ConversationEncoder(processor, max_num=recipe.data.max_num, focus_span=recipe.focus.span,
                                           lazy_pixels=lazy_pixels)
        self.packer = StreamPacker(recipe.packing, image_token_id, pad_id, num_ranks=recipe.global_batch_rows)
        self.skipped: Counter = Counter()
        self.seen = 0

    def _encode(self, record: dict[str, Any]) -> EncodedSample:
        sample = self.encoder.encode(
            record["conversations"], images=record.get("image") or [], kind=record.get("kind", "direct"),
            system=record.get("system"), max_num=record.get("max_num"), sample_id=str(record.get("id", "")),
            focus=record.get("focus") if self.recipe.focus.enabled else None,
        )
        sample.source = record
        return sample

    def _pull(self) -> EncodedSample | None:
        for record in self.source:
            self.seen += 1
            try:
                return self._encode(record)
            except SailVL2Error as err:
                reason = type(err).__name__
                self.skipped[reason] += 1
                if self.skipped.total() <= 5:
                    logger.warning("skipping sample %s: %s", record.get("id"), err)
                budget = self.recipe.data.error_budget
                if self.seen >= 100 and self.skipped.total() > budget * self.seen:
                    raise DataError(f"{self.skipped.total()} of {self.seen} samples were bad (budget {budget:.1%}): "
                                    f"{dict(self.skipped)}") from err
        return None

    def next_rows(self) -> list[PackedBatch]:
        return self.packer.next_step(self._pull)

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "buffer": [to_json(s.source) for s in self.packer.buffer],
                "skipped": dict(self.skipped), "seen": self.seen,
                "truncated": self.packer.stats.truncated, "packing_skipped": dict(self.packer.stats.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.packer.buffer = [self._encode(from_json(record)) for record in state["buffer"]]
        self.skipped = Counter(state["skipped"])
        self.seen = state["seen"]
        self.packer.stats.truncated = state["truncated"]
        self.packer.stats.skipped = Counter(state["packing_skipped"])


def _build_source(recipe: Recipe, run_dir: Path) -> Any:
    data = recipe.data
    if data.synthetic is not None:
        return SyntheticShapes(run_dir / "synthetic-images", seed=recipe.seed, **data.synthetic)
    if data.mixture is not None:
        return MixtureSource(data.mixture, seed=recipe.seed, check_images=data.check_images,
                             error_budget=data.error_budget)
    raise DataError("the recipe's data section needs `mixture` or `synthetic`")


def deal_rows(rows: list[PackedBatch], world_size: int) -> list[list[PackedBatch]]:
    """Rows -> per-rank lists of equal length (snake order over rows sorted by tiles: visual packing)."""
    per_rank: list[list[PackedBatch]] = [[] for _ in range(world_size)]
    ordered = sorted(rows, key=lambda row: (row.num_tiles, row.num_tokens), reverse=True)
    for index, row in enumerate(ordered):
        lap, offset = divmod(index, world_size)
        per_rank[offset if lap % 2 == 0 else world_size - 1 - offset].append(row)
    return per_rank


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    steps: int
    losses: list[float]
    summary: dict[str, Any]


class Trainer:
    def __init__(self, recipe: Recipe, device: str | torch.device | None = None, resume: bool = True) -> None:
        self.recipe = recipe
        self.info: DistInfo = init_distributed()
        if device is None:
            device = f"cuda:{self.info.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.run_dir = recipe.run_dir
        self.resume = resume
        torch.manual_seed(recipe.seed)
        self.model, self.processor = build_model(recipe, self.run_dir, self.info, self.device)
        if recipe.lora is not None:
            from .lora import LoRAConfig, apply_lora

            apply_lora(self.model, LoRAConfig.from_dict(recipe.lora))  # freezes everything but the adapters
        else:
            freeze_parts(self.model, recipe)
        if self.info.world_size > 1:
            shard_model(self.model, self.device)
        self.optimizer = build_optimizer(self.model, recipe)
        self.data = DataPipeline(recipe, self.processor, self.run_dir, self.model.config.image_token_id,
                                 self.processor.pad_token_id, lazy_pixels=self.info.world_size > 1)
        self.late_image_errors = 0  # this rank's rows whose lazy images failed since (re)start (zero weight)
        self._late_image_errors_before = 0  # all ranks' count in the checkpoint resumed from
        # With a token budget the schedule length is estimated at the packing efficiency we aim for (97%);
        # the run itself stops when the real (non-pad) tokens reach the budget.
        self.total_steps = recipe.max_steps or math.ceil(
            recipe.max_tokens / (recipe.global_batch_rows * recipe.packing.max_seq_len * _EXPECTED_EFFICIENCY))
        self.step_limit = recipe.max_steps or 10 * self.total_steps
        self.adalrs = None
        if recipe.adalrs and recipe.adalrs.get("enabled", True):
            from .adalrs import AdaLRS, AdaLRSConfig

            self.adalrs = AdaLRS(AdaLRSConfig(**{k: v for k, v in recipe.adalrs.items() if k != "enabled"}),
                                 self.total_steps)
        self.snapshot = None
        self._data_state: dict[str, Any] | None = None  # the data position after the last step (prefetching)
        self.focus = None
        self._focus_step: tuple[float, float] | None = None  # the last step's focus metrics
        if recipe.focus.enabled:
            from .focus import FocusSupervision

            self.focus = FocusSupervision(self.model, recipe.focus)
        self.balance = self._load_balance()
        self._balance_step: dict[str, float] = {}
        # bf16 autocast: one CUDA process with fp32 weights (FSDP2 runs use its mixed-precision policy), or a CPU
        # with native bf16 products when the recipe sets cpu_bf16 (training/precision.py).
        self.autocast = use_bf16_autocast(self.device, self.info.world_size, recipe.dtype, recipe.cpu_bf16)
        if self.autocast and hasattr(self.optimizer, "ns_dtype"):
            self.optimizer.ns_dtype = torch.bfloat16  # Muon's Newton-Schulz iteration in bf16, as published

    # ---- state ----
    def _state(self, step: int, counters: dict[str, Any]) -> dict[str, Any]:
        # With prefetching, the pipeline is a step ahead: the state taken after this step's rows is the position.
        data = self._data_state if self._data_state is not None else self.data.state_dict()
        return {"data": data, "counters": counters, "recipe": self.recipe.name,
                "adalrs": self.adalrs.state_dict() if self.adalrs else None}

    def _late_image_error_rows(self) -> int:
        """All ranks' late image errors of the whole run, resumed segments included (a collective)."""
        count = torch.tensor(self.late_image_errors, dtype=torch.long)
        if self.info.world_size > 1:
            dist.all_reduce(count)
        return self._late_image_errors_before + int(count)

    def _save(self, step: int, counters: dict[str, Any]) -> Path:
        counters["late_image_error_rows"] = self._late_image_error_rows()
        # An AdaLRS trial in progress needs its rollback point to survive a restart (sharded under FSDP2).
        snapshot = self.snapshot if self.adalrs is not None and self.adalrs.in_trial else None
        return save_checkpoint(self.run_dir / "checkpoints", step, self.model, self.optimizer,
                               self._state(step, counters), self.recipe.keep_last, self.info.rank,
                               self.info.world_size, snapshot)

    # ---- one optimizer step ----
    def _step(self, rows: list[PackedBatch]) -> tuple[float, int]:
        world = self.info.world_size
        weights = token_weights(rows, self.recipe.packing.loss_reduction)
        weight_of = {id(row): weight for row, weight in zip(rows, weights)}
        mine = deal_rows(rows, world)
        micro_steps = max(len(r) for r in mine)
        local = torch.zeros((), dtype=torch.float64)
        # Focus loss: mean over the global batch's supervised replies, times the rank factor like the LM loss.
        focus_replies = sum(item.share for row in rows for item in row.focus)
        focus_seen: list[tuple[float, float, float]] = []  # (loss, target probability, replies) per row
        balance_seen: list[tuple[float, float]] = []  # (load-balancing loss, max load) per real row
        for micro in range(micro_steps):
            if micro < len(mine[self.info.rank]):
                row = mine[self.info.rank][micro]
                weight, focus_items = weight_of[id(row)], row.focus
            else:  # this rank has no row left: a zero-weight step keeps the collectives in step
                row = rows[0]
                weight, focus_items = torch.zeros_like(weight_of[id(row)]), []
            # FSDP averages gradients over ranks; the weights already normalise over the global batch.
            weight = self._decode_or_blank(row, weight)
            if self.focus is not None:
                self.focus.arm(focus_items, self.recipe.focus.weight * world / max(1.0, focus_replies))
            if self.balance is not None:  # dummy rows run the hooks too: the global counts are a collective
                self.balance.arm(row.num_real_tokens, 1.0 / micro_steps if weight.any() else 0.0)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = packed_loss(self.model, row, weight) * world
            loss.backward()
            if self.focus is not None:
                self.focus.disarm()
                if self.focus.last_loss is not None:
                    focus_seen.append((self.focus.last_loss, self.focus.last_target_probability,
                                       sum(item.share for item in focus_items)))
            if self.balance is not None:
                self.balance.disarm()
                if weight.any() and self.balance.last_loss is not None:
                    balance_seen.append((self.balance.last_loss, self.balance.last_max_load))
            local += loss.detach().double().cpu() / world
        if world > 1:
            dist.all_reduce(local)
        self._focus_step = _reply_weighted_means(focus_seen)
        self._balance_step = {} if not balance_seen else {
            "moe_aux_loss": sum(loss for loss, _ in balance_seen) / len(balance_seen),
            "moe_max_load": max(load for _, load in balance_seen)}
        return float(local), sum(row.num_real_tokens for row in rows)

    def run(self) -> TrainResult:
        recipe, info = self.recipe, self.info
        start_step, counters = 0, {"tokens": 0, "samples": 0, "train_seconds": 0.0}
        checkpoint = latest_checkpoint(self.run_dir / "checkpoints") if self.resume else None
        if checkpoint is not None:
            record = load_checkpoint(checkpoint, self.model, self.optimizer, self.info.rank, self.info.world_size)
            start_step, counters = record["step"], record["counters"]
            self._late_image_errors_before = int(counters.get("late_image_error_rows", 0))
            self.data.load_state_dict(record["data"])
            if self.adalrs and record.get("adalrs"):
                self.adalrs.load_state_dict(record["adalrs"])
                if (checkpoint / "adalrs_snapshot").is_dir():
                    self.snapshot = load_snapshot(checkpoint / "adalrs_snapshot", self.model, self.optimizer,
                                                  self.info.rank, self.info.world_size)
            if info.is_main:
                logger.info("resumed from %s at step %d", checkpoint, start_step)
        metrics = MetricsLogger(self.run_dir, self.total_steps, start_step, enabled=info.is_main)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        losses: list[float] = []
        prefetcher = RowPrefetcher(self.data, self.step_limit - start_step) if recipe.data.prefetch else None
        try:
            for step in range(start_step, self.step_limit):
                if not self._train_one(step, prefetcher, counters, losses, metrics, trainable):
                    break
        finally:
            if prefetcher is not None:
                prefetcher.close()
        final_step = start_step + len(losses)
        self._save(final_step, counters)
        final_dir = self.run_dir / "final"
        # The final export: full weights in the release layout plus the processor files.
        if self.recipe.lora is not None:
            from .lora import merge_lora, save_adapter

            if info.is_main:
                save_adapter(self.model, self.run_dir / "adapter")
            merge_lora(self.model)  # merged: plain release keys again
        export_model(self.model, final_dir, info.is_main)
        if info.is_main:
            self.processor.save_pretrained(final_dir)
        metrics.close()
        data_state = self._data_state if self._data_state is not None else self.data.state_dict()
        summary = {  # skip counts as of the last step trained (the prefetcher may have drawn one step more)
            "recipe": recipe.name, "steps": final_step, "tokens_seen": counters["tokens"],
            "samples_seen": counters["samples"], "skipped_samples": dict(data_state["skipped"]),
            "truncated_samples": data_state["truncated"],
            "late_image_error_rows": counters["late_image_error_rows"],  # set by the final save
            "skipped_by_packing": dict(data_state["packing_skipped"]),
            "skipped_by_reader": getattr(self.data.source, "stats", {}).get("datasets", {}),
            "packing_efficiency": self.data.packer.stats.efficiency, "train_seconds": counters["train_seconds"],
            "final_loss": losses[-1] if losses else None,
            "allocator": active_allocator(),  # step times depend on it (sailvl2/_malloc.py)
        }
        if info.is_main:
            metrics.plot(self.run_dir / "loss.png")
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            print(format_summary(summary))
        if info.world_size > 1:
            # Ranks leave together: a non-main rank that exits while rank 0 still writes the summary and the loss
            # plot aborts now and then in gloo's teardown (SIGABRT, "terminate called without an active
            # exception", ~1 run in 12 of the 2-rank debug run; session 14), failing a run that succeeded.
            dist.barrier()
        return TrainResult(self.run_dir, final_dir if info.is_main else None, final_step, losses, summary)

    def _train_one(self, step: int, prefetcher: RowPrefetcher | None, counters: dict[str, Any], losses: list[float],
                   metrics: MetricsLogger, trainable: list[torch.nn.Parameter]) -> bool:
        """One optimizer step with its logging and checkpoint; False when the run ends before or after it."""
        recipe = self.recipe
        began = time.perf_counter()
        if prefetcher is not None:
            rows, self._data_state = prefetcher.next()
        else:
            rows = self.data.next_rows()
        if not rows:
            return False
        loss, tokens = self._step(rows)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, recipe.optim.grad_clip))
        multiplier = lr_multiplier(recipe.schedule, step, self.total_steps)
        scale = self.adalrs.scale if self.adalrs else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * multiplier * scale
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        decision = self._adalrs_observe(step, loss)
        elapsed = time.perf_counter() - began
        counters["tokens"] += tokens
        counters["samples"] += sum(len(row.sample_lengths) for row in rows)
        counters["train_seconds"] += elapsed
        losses.append(loss)
        metrics.log({"step": step + 1, "loss": loss, "grad_norm": grad_norm,
                     "lr": self.optimizer.param_groups[0]["lr"], "lr_scale": scale,
                     "tokens_per_s": tokens / elapsed, "tiles": sum(row.num_tiles for row in rows),
                     "packing_efficiency": sum(r.num_real_tokens for r in rows) / (len(rows) * recipe.packing.max_seq_len),
                     **self._focus_metrics(), **self._balance_step,
                     **({"adalrs": decision.as_dict()} if decision is not None else {})})
        done = recipe.max_tokens is not None and counters["tokens"] >= recipe.max_tokens
        if recipe.save_every and (step + 1) % recipe.save_every == 0 and step + 1 < self.step_limit and not done:
            self._save(step + 1, counters)
        return not done

    def _decode_or_blank(self, row: PackedBatch, weight: torch.Tensor) -> torch.Tensor:
        """Decode the row's lazily planned images now. If one fails (a header that reads over broken data),
        the row still runs, so every rank stays in step, but with black tiles and zero loss weight."""
        from .lazy_pixels import LazyPixels

        if not isinstance(row.pixel_values, LazyPixels):
            return weight
        try:
            row.pixels()
            return weight
        except SailVL2Error as err:
            self.late_image_errors += 1
            logger.warning("rank %d: row with samples %s trained with zero weight: %s", self.info.rank,
                           row.sample_ids, err)
            row.pixel_values = row.pixel_values.zeros()
            return torch.zeros_like(weight)

    def _load_balance(self) -> Any:
        """The MoE load-balancing hooks (training/moe_balance.py), or None for a dense LLM or coefficient 0."""
        from ..modeling.language import is_moe

        llm_config = self.model.language_model.config
        if not is_moe(llm_config):
            return None
        coefficient = self.recipe.moe.aux_loss_coef
        if coefficient is None:
            coefficient = float(getattr(llm_config, "router_aux_loss_coef", 0.0) or 0.0)
        if coefficient == 0:
            return None
        from .moe_balance import LoadBalance

        return LoadBalance(self.model, self.recipe.moe, coefficient)

    def _focus_metrics(self) -> dict[str, float]:
        """The step's focus loss and mean attention on the targets over this rank's rows, weighted by their
        replies (only with focus supervision on, and only when a row had focus items)."""
        if self._focus_step is None:
            return {}
        loss, probability = self._focus_step
        return {"focus_loss": loss, "focus_probability": probability}

    def _adalrs_observe(self, step: int, loss: float) -> Any:
        """Feed AdaLRS the step's (global) loss; take or restore the rollback point it asks for."""
        if self.adalrs is None:
            return None
        from .adalrs import restore_snapshot, take_snapshot

        decision = self.adalrs.observe(step, loss)
        if decision is None:
            return None
        if decision.rollback:
            if self.snapshot is None:
                raise CheckpointError("AdaLRS asked for a rollback but no snapshot exists")
            restore_snapshot(self.snapshot, self.model, self.optimizer)
        if decision.snapshot:
            self.snapshot = take_snapshot(self.model, self.optimizer, None)
        return decision


def _reply_weighted_means(rows: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """Mean focus loss and target probability over rows given as (loss, probability, replies), each row
    weighted by its number of supervised replies; None when no row had any."""
    replies = sum(count for _, _, count in rows)
    if replies == 0:
        return None
    return (sum(loss * count for loss, _, count in rows) / replies,
            sum(probability * count for _, probability, count in rows) / replies)

