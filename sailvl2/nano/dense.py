"""Nano ladder, stage 0: dense vision pre-training from the scene descriptions.

The release starts SAIL-ViT from AIMv2, a ViT pre-trained on billions of images (PAPER.md 3), so its image
tokens already describe what is where before the LLM ever reads them. The nano ViT starts from random
weights, and the language-model loss alone teaches it slowly: after a full ladder the shape kind of a small
object was still at chance (docs/nano-sessions.md, "readout probes"). Every generated image comes with the scene that
drew it, so every LLM image token has exact labels: the kind, colour and size of the shape in its cell (the
nano tile is 168 px = a 3 x 3 grid of 56-px LLM tokens, aligned with the scenes' 3 x 3 shape grid), the
row and column words of the cell, and the characters of rendered text whose centres fall in it. Heads on
the projector output learn them with cross-entropy (multi-label for characters); with ``word_aligned`` (the
ladder's setting) the attribute heads' class weights are the LLM's own embeddings of the class names. The
heads are dropped afterwards, so the checkpoint keeps the release layout and the LLM meets image tokens
that already name what they hold.

    sailvl2 nano                                    # runs this stage first (the `vision` stage)
    python -m sailvl2.nano.dense INIT_DIR SUITE_DIR OUT_DIR --steps 600   # this stage alone (CPU)
    python -m sailvl2.nano.dense ... --device cuda                          # one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.errors import DataError
from ..errors import ConfigError
# The labels live in dense_labels.py; the names tests and scripts import from here are re-exported.
from .dense_labels import (ATTRIBUTES, BOX_DIGIT_POWERS, BOX_DIGITS, CHARACTERS, IGNORE,  # noqa: F401
                           SHAPE_ATTRIBUTES, STRUCTURE_TARGETS, cell_of, dense_labels)


@dataclass(frozen=True)
class DenseConfig:
    steps: int = 600
    batch_images: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    eval_images: int = 256
    word_aligned: bool = False  # attribute heads use the LLM's word embeddings (see DenseHeads)
    # "set": per token, the multi-hot of the characters centred in its cell. "slots": per token, one class
    # per ViT patch under it (2 x 2), the character centred in that patch or none; meant for the slot text
    # layout (synth TextScene.slot = the patch size), where every glyph fills one patch (session 9).
    char_target: str = "set"
    # Share of every batch drawn from the text images (0: uniform over all images). They are ~1/6 of the
    # suite's images, and only they teach the character head.
    text_share: float = 0.0
    # Train-only streams of the suite (``families/train-<name>.jsonl``) whose images join the training images,
    # e.g. ("ocr-numbers", "ocr-letters"). Not used by the ladder: with both, the character head read 85.8 % of
    # the held-out characters instead of 93.8 % (not yet explained; the extra images outnumber the suite's text
    # images 12 to 1, and random strings lack the letter statistics of the held-out words; docs/nano-sessions.md,
    # session 12).
    extra_streams: tuple[str, ...] = ()
    # Weight of the box loss (0: off): per token holding a shape, a linear head regresses the shape's pixel
    # box in units of the token's cell. Grounding answers need the shape's place inside its cell (the shapes
    # jitter by up to 8 px); run 22 missed 24 % of held-out boxes, most by a few pixels (IoU 0.3-0.46), and
    # with this target at weight 4 (the ladder's) run 24 missed 5 % (docs/nano-sessions.md, session 13).
    box_weight: float = 0.0
    # Weight of the box-digit loss (0: off): per token holding a shape, one 10-way classifier per digit of the
    # box's four 0-1000 coordinates, the digits a grounding answer writes. The box head (above) reads 100 % of
    # held-out boxes off the image tokens while the LLM wrote 86 % right (run 49): its misses are whole boxes
    # shifted by 3-6 px, the LLM turning a position into decimal digits; with this target the tokens carry
    # the digits themselves (docs/nano-sessions.md, session 20).
    box_digit_weight: float = 0.0
    # Weight of the structure targets (0: off; dense_labels.STRUCTURE_TARGETS): per token, how many shapes the
    # scene holds and how many share this shape's colour and kind, and a chart category's (a table cell's)
    # rank. Counting and choosing the largest / smallest were the perception tasks run 27 (shipped until
    # session 16) missed most while it read every attribute and value (docs/nano-sessions.md, session 15).
    structure_weight: float = 0.0
    structure_targets: tuple[str, ...] = tuple(STRUCTURE_TARGETS)  # which of them, with structure_weight > 0

    def __post_init__(self) -> None:
        if self.char_target not in ("set", "slots"):
            raise ConfigError(f"char_target must be 'set' or 'slots', got {self.char_target!r}")
        if not 0.0 <= self.text_share < 1.0:
            raise ConfigError(f"text_share must be in [0, 1), got {self.text_share}")
        if self.box_weight < 0:
            raise ConfigError(f"box_weight must be >= 0, got {self.box_weight}")
        if self.box_digit_weight < 0:
            raise ConfigError(f"box_digit_weight must be >= 0, got {self.box_digit_weight}")
        if self.structure_weight < 0:
            raise ConfigError(f"structure_weight must be >= 0, got {self.structure_weight}")
        unknown = set(self.structure_targets) - set(STRUCTURE_TARGETS)
        if unknown:
            raise ConfigError(f"structure_targets must be some of {list(STRUCTURE_TARGETS)}, got {sorted(unknown)}")


class _WordHead(nn.Module):
    """A classifier whose class weights are fixed word vectors (the LLM's embeddings of the class names) plus
    a learned "none" vector: the features learn to point at the words' own embeddings."""

    def __init__(self, word_vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("words", word_vectors.detach().clone())
        self.none = nn.Parameter(torch.zeros(word_vectors.shape[1]))
        self.scale = nn.Parameter(torch.tensor(1.0 / float(word_vectors.norm(dim=1).mean()) ** 2))
        self.bias = nn.Parameter(torch.zeros(word_vectors.shape[0] + 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weights = torch.cat([self.words.to(features.dtype), self.none[None].to(features.dtype)])
        return self.scale * features @ weights.T + self.bias


def word_vectors(model: Any, tokenizer: Any) -> dict[str, torch.Tensor]:
    """Per shape attribute, the LLM input embedding of each class name: the mean of the bare word (how answers
    spell it) and the word after a space (how questions do), each the first token of its spelling."""
    embeddings = model.language_model.get_input_embeddings().weight
    vectors = {}
    for name, classes in ATTRIBUTES.items():
        rows = []
        for word in classes:
            ids = [tokenizer.encode(spelling, add_special_tokens=False)[0] for spelling in (word, " " + word)]
            rows.append(embeddings[ids].float().mean(0))
        vectors[name] = torch.stack(rows)
    return vectors


class DenseHeads(nn.Module):
    """One classifier per shape attribute and a multi-label character head, on each image token. With
    ``word_vectors`` the attribute classifiers are word-aligned (`_WordHead`): a red triangle's token learns
    to look like the LLM's own embeddings of "red" and "triangle" (tied with its output head), so the
    LLM can copy an attribute from the image token it attends to."""

    def __init__(self, hidden_size: int, word_vectors: dict[str, torch.Tensor] | None = None,
                 slots_per_token: int = 0, box_weight: float = 0.0, structure_weight: float = 0.0,
                 structure_targets: tuple[str, ...] = tuple(STRUCTURE_TARGETS), box_digit_weight: float = 0.0) -> None:
        super().__init__()
        self.attributes = nn.ModuleDict({
            name: _WordHead(word_vectors[name]) if word_vectors else nn.Linear(hidden_size, len(classes) + 1)
            for name, classes in ATTRIBUTES.items()})
        self.slots_per_token = slots_per_token
        # Either the character set of a cell, or (slots_per_token > 0) the character of each patch in order.
        self.chars = nn.Linear(hidden_size, slots_per_token * (len(CHARACTERS) + 1) or len(CHARACTERS))
        # The shape's box in its cell's units (DenseConfig.box_weight); None when off.
        self.box = nn.Linear(hidden_size, 4) if box_weight else None
        self.box_weight = box_weight
        # The box's 0-1000 coordinates, digit by digit (DenseConfig.box_digit_weight); None when off.
        self.box_digits = nn.Linear(hidden_size, BOX_DIGITS * 10) if box_digit_weight else None
        self.box_digit_weight = box_digit_weight
        # Linear heads for the structure targets (counts, ranks); empty when off.
        self.structure = nn.ModuleDict({name: nn.Linear(hidden_size, STRUCTURE_TARGETS[name])
                                        for name in structure_targets} if structure_weight else {})
        self.structure_weight = structure_weight

    def _digit_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.box_digits(features).unflatten(-1, (BOX_DIGITS, 10))

    def _slot_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.chars(features).unflatten(-1, (self.slots_per_token, len(CHARACTERS) + 1))

    def losses(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = {}
        for name, head in self.attributes.items():
            target = batch[name]
            if (target != IGNORE).any():
                logits = head(features)
                losses[name] = nn.functional.cross_entropy(logits.flatten(0, 1).float(), target.flatten(),
                                                           ignore_index=IGNORE)
        mask = batch["chars_mask"]
        if self.slots_per_token and mask.any():
            losses["chars"] = nn.functional.cross_entropy(self._slot_logits(features)[mask].flatten(0, 1).float(),
                                                          batch["char_slots"][mask].flatten())
        elif mask.any():
            logits = self.chars(features)[mask]
            losses["chars"] = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["chars"][mask])
        held = ~batch["box"][..., 0].isnan()
        if self.box is not None and held.any():
            predicted = self.box(features)[held].float()
            losses["box"] = self.box_weight * nn.functional.l1_loss(predicted, batch["box"][held])
        held = batch["box_digits"][..., 0] != IGNORE
        if self.box_digits is not None and held.any():
            losses["box_digits"] = self.box_digit_weight * nn.functional.cross_entropy(
                self._digit_logits(features)[held].flatten(0, 1).float(), batch["box_digits"][held].flatten())
        for name, head in self.structure.items():
            target = batch[name]
            if (target != IGNORE).any():
                losses[name] = self.structure_weight * nn.functional.cross_entropy(
                    head(features).flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE)
        return losses

    @torch.no_grad()
    def correct(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
        """(right, total) per attribute over the cells that hold a shape, and for characters over the cells
        with at least one character (right = every character of the cell predicted, no extra one)."""
        counts = {}
        for name, head in self.attributes.items():
            target = batch[name]
            occupied = (target != IGNORE) & (target != len(ATTRIBUTES[name]))
            predicted = head(features).argmax(-1)
            counts[name] = (int((predicted == target)[occupied].sum()), int(occupied.sum()))
        if self.slots_per_token:  # per character: the patches that hold one
            target = batch["char_slots"]
            held = batch["chars_mask"][..., None] & (target != len(CHARACTERS))
            right = (self._slot_logits(features).argmax(-1) == target) & held
            counts["chars"] = (int(right.sum()), int(held.sum()))
        if self.box is not None:  # boxes with IoU >= 0.5, grounding's criterion
            held = ~batch["box"][..., 0].isnan()
            counts["box"] = (int((box_iou(self.box(features)[held].float(), batch["box"][held]) >= 0.5).sum()),
                             int(held.sum()))
        if self.box_digits is not None:  # the boxes the digits spell, IoU >= 0.5 against the true digits' box
            held = batch["box_digits"][..., 0] != IGNORE
            predicted = spell_box(self._digit_logits(features)[held].argmax(-1))
            counts["box_digits"] = (int((box_iou(predicted, spell_box(batch["box_digits"][held])) >= 0.5).sum()),
                                    int(held.sum()))
        for name, head in self.structure.items():  # counts: every labelled token; ranks: the ranked tokens
            target = batch[name]
            scored = (target != IGNORE) & ((target > 0) if name in ("rank", "same_colour", "same_kind") else True)
            counts[name] = (int((head(features).argmax(-1) == target)[scored].sum()), int(scored.sum()))
        if self.slots_per_token:
            return counts
        with_text = batch["chars_mask"] & (batch["chars"].sum(-1) > 0)
        exact = ((self.chars(features) > 0).float() == batch["chars"]).all(-1)
        counts["chars"] = (int(exact[with_text].sum()), int(with_text.sum()))
        return counts


def spell_box(digits: torch.Tensor) -> torch.Tensor:
    """(..., BOX_DIGITS) digit classes -> (..., 4) 0-1000 coordinates, the digits' place values summed."""
    place = torch.tensor([10 ** power for power in BOX_DIGIT_POWERS] * 4, device=digits.device)
    return (digits * place).unflatten(-1, (4, -1)).sum(-1).float()


def box_iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Row-wise intersection over union of (x1, y1, x2, y2) boxes (a degenerate predicted box scores 0)."""
    width = (torch.minimum(predicted[:, 2], target[:, 2]) - torch.maximum(predicted[:, 0], target[:, 0])).clamp(min=0)
    height = (torch.minimum(predicted[:, 3], target[:, 3]) - torch.maximum(predicted[:, 1], target[:, 1])).clamp(min=0)
    inter = width * height
    area = lambda b: (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(predicted) + area(target) - inter).clamp(min=1e-9)


def load_images(suite_dir: str | Path, split: str, grid: int, patches: int = 0,
                extra_streams: tuple[str, ...] = ()) -> list[tuple[Path, dict[str, list[Any]]]]:
    """Every distinct image of a suite split with its dense labels (multi-image records give one per image),
    then those of the split's ``extra_streams`` (``families/<split>-<stream>.jsonl``, paths relative to it)."""
    suite = Path(suite_dir)
    seen: dict[Path, dict[str, list[Any]]] = {}
    files = [(suite / f"{split}.jsonl", suite)]
    for stream in extra_streams:
        path = suite / "families" / f"{split}-{stream}.jsonl"
        if not path.is_file():
            raise DataError(f"{suite} has no stream {stream!r} ({path} is missing)")
        files.append((path, suite / "families"))
    for file, root in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            paths = [record["image"]] if isinstance(record["image"], str) else list(record["image"])
            scenes = record["scene"]["images"] if record["scene"].get("type") == "multi" else [record["scene"]]
            for path, scene in zip(paths, scenes):
                image = Path(os.path.normpath(root / path))
                if image not in seen:
                    seen[image] = dense_labels(scene, grid, patches)
    # Every image: charts and tables only carry the row / column labels, but the ViT sees them before the LLM.
    return list(seen.items())


def sample_batches(items: list[tuple[Path, dict[str, list[Any]]]],
                   config: DenseConfig) -> Iterator[list[tuple[Path, dict[str, list[Any]]]]]:
    """Endless training batches: uniform over the images, or with ``text_share`` that share of each batch
    from the text images (when the suite has both kinds)."""
    rng = random.Random(config.seed)
    text = [item for item in items if _is_text(item[1])]
    other = [item for item in items if not _is_text(item[1])]
    from_text = round(config.text_share * config.batch_images) if text and other else 0
    while True:
        if from_text:
            yield rng.sample(text, min(from_text, len(text))) + rng.sample(
                other, min(config.batch_images - from_text, len(other)))
        else:
            yield rng.sample(items, min(config.batch_images, len(items)))


def _is_text(labels: dict[str, Any]) -> bool:
    """A text scene. Slot-layout charts and tables have characters too, but they do not count: run 23 drew them
    into the text share, the text images per batch fell from 8 to ~3.5, and held-out words fell from 62 % to
    38 % after the multi-task stage (docs/nano-sessions.md, session 13)."""
    return labels["type"] == "text"


def _collate(items: list[tuple[Path, dict[str, list[Any]]]], processor: Any, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from ..processing.images import load_image, preprocess_image

    # One tile per image (max_num=1): the labels describe the whole image as one token grid.
    tiles = [preprocess_image(load_image(path), processor.image_config, max_num=1, dtype=dtype) for path, _ in items]
    pixel_values = torch.cat(tiles).to(device)
    batch = {name: torch.tensor([labels[name] for _, labels in items], device=device)
             for name in (*ATTRIBUTES, *STRUCTURE_TARGETS)}
    cells = len(items[0][1]["kind"])
    blank = [[0.0] * len(CHARACTERS)] * cells
    batch["chars"] = torch.tensor([labels["chars"] if labels["chars"][0] is not None else blank
                                   for _, labels in items], device=device)
    batch["chars_mask"] = torch.tensor([[labels["chars"][0] is not None] * cells for _, labels in items],
                                       device=device)
    nan = [float("nan")] * 4  # marks the cells without a shape
    batch["box"] = torch.tensor([[box or nan for box in labels["box"]] for _, labels in items], device=device)
    batch["box_digits"] = torch.tensor([labels["box_digits"] for _, labels in items], device=device)
    if "char_slots" in items[0][1]:
        batch["char_slots"] = torch.tensor([labels["char_slots"] for _, labels in items], device=device)
    return pixel_values, batch


def train_dense(init_dir: str | Path, suite_dir: str | Path, out_dir: str | Path, config: DenseConfig = DenseConfig(),
                device: str | torch.device = "cpu", show_progress: bool = True) -> dict[str, Any]:
    """Train the ViT and projector of the checkpoint in ``init_dir`` on the dense labels of the suite's train
    images; write the checkpoint (release layout, heads dropped) to ``out_dir/final``, the per-step losses to
    ``out_dir/metrics.jsonl`` and the held-out (test split) accuracies to ``out_dir/summary.json``."""
    from ..modeling import SAILVLModel
    from ..processing import SAILVLProcessor
    from ..training.checkpoint import export_model
    from ..training.metrics import MetricsLogger

    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = SAILVLModel.from_pretrained(init_dir).to(device)
    processor = SAILVLProcessor.from_pretrained(init_dir)
    tokens = processor.tokens_per_tile
    grid = int(round(tokens ** 0.5))
    if grid * grid != tokens:
        raise ConfigError(f"dense labels need a square token grid, got {tokens} tokens per tile")
    patches = model.config.vision_config.image_size // model.config.vision_config.patch_size
    if config.char_target == "slots" and patches % grid:
        raise ConfigError(f"char_target 'slots' needs whole patches per token, got {patches} patches for {grid} tokens")
    patches = patches if config.char_target == "slots" else 0
    train = load_images(suite_dir, "train", grid, patches, config.extra_streams)
    test = load_images(suite_dir, "test", grid, patches)[: config.eval_images]
    if not train:
        raise DataError(f"{suite_dir} has no training images")
    model.language_model.requires_grad_(False)
    vectors = word_vectors(model, processor.tokenizer) if config.word_aligned else None
    slots_per_token = (patches // grid) ** 2 if patches else 0
    heads = DenseHeads(model.config.llm_config.hidden_size, vectors, slots_per_token, config.box_weight,
                       config.structure_weight, config.structure_targets, config.box_digit_weight).to(device)
    params = [*model.vision_model.parameters(), *model.mlp1.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up over 5 %, then cosine to 10 %
        optimizer, lambda step: min(1.0, (step + 1) / max(1, config.steps // 20)) * (
            0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / max(1, config.steps))).item())))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)  # a rerun starts its curve afresh
    metrics = MetricsLogger(out, config.steps, 0)  # metrics.jsonl, progress bar, TensorBoard, loss.png
    metrics.bar.disable = not show_progress
    batches = sample_batches(train, config)
    started = time.perf_counter()
    model.train()
    for step in range(config.steps):
        pixel_values, batch = _collate(next(batches), processor, device, torch.float32)
        losses = heads.losses(model.get_image_features(pixel_values), batch)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        metrics.log({"step": step + 1, "loss": loss.item(), **{f"loss_{k}": v.item() for k, v in losses.items()},
                     "lr": schedule.get_last_lr()[0]})
    metrics.close()
    metrics.plot(out / "loss.png")
    accuracy = evaluate_dense(model, heads, processor, test, device)
    summary = {"steps": config.steps, "train_images": len(train), "test_images": len(test),
               "train_seconds": time.perf_counter() - started, "heldout_accuracy": accuracy}
    # The same export as the trainer's final checkpoint: release-layout weights plus the processor files.
    export_model(model, out / "final", is_main=True)
    processor.save_pretrained(out / "final")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@torch.no_grad()
def evaluate_dense(model: Any, heads: DenseHeads, processor: Any, images: list[tuple[Path, dict[str, list[Any]]]],
                   device: torch.device, batch_images: int = 32) -> dict[str, float]:
    """Held-out accuracy per attribute (cells holding a shape), for the characters of a cell and, with the box
    head, the share of shapes whose predicted box has IoU >= 0.5."""
    model.eval()
    totals = {name: [0, 0] for name in (*ATTRIBUTES, "chars", "box", "box_digits", *STRUCTURE_TARGETS)}
    for start in range(0, len(images), batch_images):
        pixel_values, batch = _collate(images[start:start + batch_images], processor, device, torch.float32)
        for name, (right, total) in heads.correct(model.get_image_features(pixel_values), batch).items():
            totals[name][0] += right
            totals[name][1] += total
    return {name: right / total for name, (right, total) in totals.items() if total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sailvl2.nano.dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("init_dir")
    parser.add_argument("suite_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=DenseConfig.steps)
    parser.add_argument("--batch-images", type=int, default=DenseConfig.batch_images)
    parser.add_argument("--lr", type=float, default=DenseConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-share", type=float, default=0.0, help="share of each batch from text images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--word-aligned", action="store_true", help="attribute heads on the LLM's word embeddings")
    parser.add_argument("--char-target", choices=("set", "slots"), default="set",
                        help="characters per token as a set, or one per ViT patch (for the slot text layout)")
    parser.add_argument("--box-weight", type=float, default=0.0,
                        help="weight of a per-token box regression loss on the shapes (0: off)")
    parser.add_argument("--box-digit-weight", type=float, default=0.0,
                        help="weight of a per-token loss on the digits of the shapes' 0-1000 boxes (0: off)")
    parser.add_argument("--structure-weight", type=float, default=0.0,
                        help="weight of the per-token count and rank targets (0: off)")
    parser.add_argument("--structure-targets", default=",".join(STRUCTURE_TARGETS),
                        help=f"comma-separated, some of {','.join(STRUCTURE_TARGETS)}")
    parser.add_argument("--extra-streams", default="",
                        help="comma-separated train-only streams whose images join training (ocr-numbers,ocr-letters)")
    args = parser.parse_args(argv)
    summary = train_dense(args.init_dir, args.suite_dir, args.out_dir,
                          DenseConfig(steps=args.steps, batch_images=args.batch_images, lr=args.lr, seed=args.seed,
                                      word_aligned=args.word_aligned, char_target=args.char_target,
                                      text_share=args.text_share, box_weight=args.box_weight,
                                      box_digit_weight=args.box_digit_weight,
                                      structure_weight=args.structure_weight,
                                      structure_targets=tuple(filter(None, args.structure_targets.split(","))),
                                      extra_streams=tuple(filter(None, args.extra_streams.split(",")))),
                          device=args.device)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
