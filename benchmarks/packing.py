"""CPU training benchmark of stream packing: non-pad token fraction and training tokens/s, packed vs padded.

Run (full, about 4 minutes on 2 cores; writes every number as JSON):

    .venv/bin/python benchmarks/packing.py --json benchmarks/results/packing.json

Smaller / faster (120 shorter samples, ``max_seq_len`` 2048, one timed pass; about 30 s):

    .venv/bin/python benchmarks/packing.py --quick

``--threads N`` sets torch threads (default 2); ``--repeats N`` the timed passes per side (default 2).
Everything is synthetic and built on the fly in a temporary directory (a small random checkpoint from
``sailvl2.tiny.build_random_checkpoint`` with its own tokenizer and processor): no files, no network.

The mix: a skewed length distribution (most samples short, a few long), 1-3 turns, ~30% of samples with one
small generated image and ~5% with two (``max_num=1``: one 448 tile = 256 + 2 tokens per image), the rest
text only. The same encoded samples are trained on twice, from the same initial weights:

* packed: ``StreamPacker`` rows (restarting position ids, no attention mask -> block-diagonal attention)
  through ``sailvl2.training.loss.packed_loss`` with ``token_weights(..., "token")``;
* padded: batches of B samples in stream order, right-padded to the longest in the batch, with a 2D
  attention mask and labels -100 on the pads, through the same model forward with ``loss_weights`` (the same
  chunked loss over labelled positions only), weights = 1 / labelled tokens of the batch.

B is the mean number of samples per packed row, so both sides take (about) the same number of optimizer
steps. Each row / batch is one step: zero_grad, forward, backward, ``AdamW.step``. Tokens/s = real (non-pad)
tokens / seconds of one pass over all samples; the median of the timed passes, after a two-step warmup.
Nothing here asserts on time.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from _common import base_parser, cpu_snapshot, finish, print_rows
from sailvl2.modeling.sailvl import SAILVLModel
from sailvl2.processing import SAILVLProcessor
from sailvl2.tiny import TINY_LLM, TINY_VISION, build_random_checkpoint
from sailvl2.training.loss import packed_loss
from sailvl2.training.packing import PackedBatch, PackingConfig, StreamPacker, token_weights
from sailvl2.training.tokenize import IGNORE_INDEX, ConversationEncoder, EncodedSample

FRACTION_TARGET = 0.97  # packed non-pad token fraction
SPEEDUP_TARGET = 1.8  # packed / padded training tokens/s

# Larger than the default tiny LLM so the transformer's compute dominates Python overhead; still fast on CPU.
# head_dim 32 keeps attention (quadratic in the row length, and dense over a packed row on CPU) from dwarfing
# the matmuls far more than in the real model, where hidden 2048 makes the projections and MLP the bulk.
LLM = {**TINY_LLM, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
       "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
WORDS = ("describe the image what colour is largest shape how many circles are there picture shows a red square "
         "blue circle and green triangle on white background written here compare two images answer boxed "
         "you first think about reasoning process as an internal monologue then provide final "
         "0 1 2 3 4 5 6 7 8 9 10 100 1000 left right top bottom above below yes no").split()


# ------------------------------------------------------------------------------------------ data


def make_image(rng: np.random.Generator) -> Image.Image:
    """A small random RGB image (a colour gradient plus noise); one 448 tile at max_num=1."""
    width, height = int(rng.integers(48, 160)), int(rng.integers(48, 160))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.uniform(0, 255, size=3)
    base = np.stack([x / width * colour[0], y / height * colour[1], np.full_like(x, colour[2])], axis=-1)
    noisy = base + rng.normal(0.0, 16.0, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="RGB")


def text(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, size=max(1, words)))


def text_budget(rng: np.random.Generator, long_max: int) -> int:
    """Words of assistant text in one sample: 92% log-normal with median 40 (most samples short), 8% uniform
    between long_max / 7 and long_max (a few long ones)."""
    if rng.random() < 0.08:
        return int(rng.integers(long_max // 7, long_max))
    return int(np.clip(rng.lognormal(math.log(40), 0.9), 4, long_max))


def make_samples(encoder: ConversationEncoder, count: int, long_max: int, max_seq_len: int,
                 seed: int = 0) -> tuple[list[EncodedSample], int]:
    """Encode `count` synthetic conversations; returns (samples that fit max_seq_len, number dropped)."""
    rng = np.random.default_rng(seed)
    samples, dropped = [], 0
    for index in range(count):
        draw = rng.random()
        images = [make_image(rng) for _ in range(2 if draw < 0.05 else 1 if draw < 0.35 else 0)]
        turns = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
        budget = text_budget(rng, long_max)
        conversation = []
        for _ in range(turns):
            conversation.append({"from": "human", "value": text(rng, int(rng.integers(3, 24)))})
            conversation.append({"from": "gpt", "value": text(rng, budget // turns)})
        sample = encoder.encode(conversation, images, sample_id=f"s{index}")
        if sample.length > max_seq_len:
            dropped += 1  # kept out of both sides so they train on exactly the same tokens
        else:
            samples.append(sample)
    return samples, dropped


def padded_batch(samples: list[EncodedSample], pad_id: int) -> dict[str, torch.Tensor | None]:
    """Right-padded batch: input_ids / labels / attention_mask / position_ids [B, Lmax], pixel_values."""
    longest = max(s.length for s in samples)
    input_ids = torch.full((len(samples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), longest), dtype=torch.long)
    for row, sample in enumerate(samples):
        input_ids[row, : sample.length] = sample.input_ids
        labels[row, : sample.length] = sample.labels
        mask[row, : sample.length] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    pixels = [s.pixel_values for s in samples if s.pixel_values is not None]
    # masked_scatter fills image slots in row-major order = batch order, so image features stay in order.
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "position_ids": position_ids,
            "pixel_values": torch.cat(pixels) if pixels else None}


def padded_weights(labels: torch.Tensor) -> torch.Tensor:
    """"token" reduction over one padded batch: 1 / (labelled next-token targets) on every labelled slot."""
    trained = (labels != IGNORE_INDEX).float()
    return trained / max(1.0, float(trained[:, 1:].sum()))


def padded_loss(model: SAILVLModel, batch: dict[str, torch.Tensor | None], weights: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"],
                 attention_mask=batch["attention_mask"], position_ids=batch["position_ids"],
                 labels=batch["labels"], loss_weights=weights).loss


# ------------------------------------------------------------------------------------------ measurement


def pack(samples: list[EncodedSample], config: PackingConfig, image_token_id: int,
         pad_id: int) -> tuple[list[PackedBatch], StreamPacker, float]:
    """All packed rows (one rank, so one row per step) and the seconds packing + weights take (median of 5)."""
    def run() -> tuple[list[PackedBatch], StreamPacker]:
        packer = StreamPacker(config, image_token_id, pad_id)
        rows = [row for step in packer.steps(samples) for row in step]
        token_weights(rows, config.loss_reduction)
        return rows, packer

    rows, packer = run()  # warmup
    times = []
    for _ in range(5):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return rows, packer, statistics.median(times)


def check_equivalence(model: SAILVLModel, row: PackedBatch, samples: list[EncodedSample], pad_id: int) -> float:
    """Relative difference between the unit-weight loss sums of one packed row and of the same samples padded
    (equal only if packing really keeps samples apart)."""
    batch = padded_batch(samples, pad_id)
    with torch.no_grad():
        packed = packed_loss(model, row, (row.labels != IGNORE_INDEX).float())
        padded = padded_loss(model, batch, (batch["labels"] != IGNORE_INDEX).float())
    return float((packed - padded).abs() / padded.abs())


def train_pass(model: SAILVLModel, optimizer: torch.optim.Optimizer, steps: list[Callable[[], torch.Tensor]]) -> float:
    """Seconds for one optimizer step (zero_grad, forward, backward, AdamW) per entry of `steps`."""
    start = time.perf_counter()
    for loss_fn in steps:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
    return time.perf_counter() - start


def load_model(directory: Path) -> tuple[SAILVLModel, torch.optim.Optimizer]:
    model = SAILVLModel.from_pretrained(directory, dtype=torch.float32)
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=False)


# ------------------------------------------------------------------------------------------ report


def print_table(results: dict[str, Any]) -> None:
    data, frac, speed, tg = (results[k] for k in ("data", "fraction", "training", "targets"))
    lengths = data["lengths"]
    rows = [
        (f"samples ({data['images_1']} with 1 image, {data['images_2']} with 2)",
         f"{data['samples']}, {data['real_tokens']} tokens"),
        ("sample length min / median / mean / p90 / max",
         f"{lengths['min']} / {lengths['median']:.0f} / {lengths['mean']:.0f} / {lengths['p90']:.0f} / "
         f"{lengths['max']}"),
        (f"packed rows (max_seq_len {frac['max_seq_len']}, buffer {frac['buffer_size']})",
         f"{frac['packed_rows']} rows, {frac['packed_samples_per_row']:.1f} samples/row"),
        ("non-pad fraction, packed", f"{frac['packed']:.2%}  (all but the last row: {frac['packed_but_last']:.2%})"),
        (f"non-pad fraction, padded (B={frac['padded_batch_size']}, stream order)",
         f"{frac['padded']:.2%}  ({frac['padded_batches']} batches)"),
        ("non-pad fraction, padded, B = 1 / 2 / 4 / 8 / 16 / 32",
         " / ".join(f"{v:.0%}" for v in frac["padded_by_batch_size"].values())),
        ("packing + token_weights (CPU, all samples)",
         f"{frac['packing_ms']:.1f} ms ({frac['packing_ms_per_row']:.2f} ms/row)"),
        ("loss check: packed row == same samples padded", f"rel diff {speed['equivalence_rel_diff']:.1e}"),
        ("train tokens/s, packed", f"{speed['packed_tokens_per_s']:.0f} tok/s  ({speed['packed_s']:.2f} s/pass)"),
        ("train tokens/s, padded", f"{speed['padded_tokens_per_s']:.0f} tok/s  ({speed['padded_s']:.2f} s/pass)"),
        ("peak RSS", f"{results['peak_rss_mb']:.0f} MB"),
    ]
    print_rows(f"sailvl2 packing benchmark  (torch {results['torch']}, {results['threads']} threads"
               f"{', quick' if results['quick'] else ''}, {speed['repeats']} timed passes, median)", rows, results)
    ft, st = tg["packed_fraction"], tg["speedup"]
    print(f"  target packed non-pad fraction >= {ft['target']:.0%}: {'MET' if ft['met'] else 'NOT MET'} "
          f"({ft['value']:.2%})")
    print(f"  target train tokens/s packed/padded >= {st['target']:.1f}x: {'MET' if st['met'] else 'NOT MET'} "
          f"({st['value']:.2f}x)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], "fewer, shorter samples and fewer repeats (< 60 s)")
    parser.add_argument("--repeats", type=int, help="timed passes per side (default 2, 1 with --quick)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    count, long_max, max_seq_len, repeats = (120, 900, 2048, 1) if quick else (200, 1800, 4096, 2)
    repeats = args.repeats or repeats
    buffer_size = 64
    started = time.perf_counter()
    cpu_before = cpu_snapshot()

    with tempfile.TemporaryDirectory(prefix="sailvl2-bench-packing-") as tmp:
        directory = build_random_checkpoint(Path(tmp) / "ckpt", vision=TINY_VISION, llm=LLM, max_num=1)
        processor = SAILVLProcessor.from_pretrained(directory)
        encoder = ConversationEncoder(processor, max_num=1)
        samples, dropped = make_samples(encoder, count, long_max, max_seq_len)
        image_token_id, pad_id = processor.image_token_id, processor.pad_token_id
        packed_model, packed_opt = load_model(directory)
        padded_model, padded_opt = load_model(directory)
    parameters = sum(p.numel() for p in packed_model.parameters())

    # 1. non-pad token fraction
    config = PackingConfig(max_seq_len=max_seq_len, buffer_size=buffer_size)
    rows, packer, pack_seconds = pack(samples, config, image_token_id, pad_id)
    real_tokens = sum(s.length for s in samples)
    if packer.stats.real_tokens != real_tokens or packer.stats.truncated or packer.stats.skipped:
        raise RuntimeError("packing dropped or truncated tokens; the two sides would not train on the same data")
    batch_size = max(1, round(len(samples) / len(rows)))
    batches = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    padded_slots = sum(len(b) * max(s.length for s in b) for b in batches)
    fraction = {
        "max_seq_len": max_seq_len, "buffer_size": buffer_size,
        "packed_rows": len(rows), "packed_samples_per_row": len(samples) / len(rows),
        "packed": packer.stats.efficiency,
        "packed_but_last": sum(r.num_real_tokens for r in rows[:-1]) / (max_seq_len * max(1, len(rows) - 1)),
        "packed_slot_tokens": packer.stats.slot_tokens,
        "padded_batch_size": batch_size, "padded_batches": len(batches),
        "padded": real_tokens / padded_slots, "padded_slot_tokens": padded_slots,
        "padded_by_batch_size": {
            b: real_tokens / sum(len(c) * max(s.length for s in c)
                                 for c in (samples[i : i + b] for i in range(0, len(samples), b)))
            for b in (1, 2, 4, 8, 16, 32)
        },
        "packing_ms": pack_seconds * 1e3, "packing_ms_per_row": pack_seconds * 1e3 / len(rows),
    }

    # 2. training tokens/s (each side has its own model + AdamW from the same checkpoint)
    first_row_samples = [s for s in samples if s.sample_id in set(rows[0].sample_ids)]
    equivalence = check_equivalence(packed_model, rows[0], first_row_samples, pad_id)
    row_weights = [token_weights([row], config.loss_reduction)[0] for row in rows]
    packed_steps = [lambda r=row, w=weight: packed_loss(packed_model, r, w) for row, weight in zip(rows, row_weights)]
    padded_data = [padded_batch(b, pad_id) for b in batches]
    padded_steps = [lambda b=batch, w=padded_weights(batch["labels"]): padded_loss(padded_model, b, w)
                    for batch in padded_data]
    train_pass(packed_model, packed_opt, packed_steps[:2])  # warmup
    train_pass(padded_model, padded_opt, padded_steps[:2])
    packed_times, padded_times = [], []
    for _ in range(repeats):  # alternate so slow drift on the machine hits both sides alike
        packed_times.append(train_pass(packed_model, packed_opt, packed_steps))
        padded_times.append(train_pass(padded_model, padded_opt, padded_steps))
    packed_s, padded_s = statistics.median(packed_times), statistics.median(padded_times)
    training = {
        "repeats": repeats, "equivalence_rel_diff": equivalence,
        "packed_steps": len(packed_steps), "padded_steps": len(padded_steps),
        "packed_s": packed_s, "padded_s": padded_s, "packed_s_all": packed_times, "padded_s_all": padded_times,
        "packed_tokens_per_s": real_tokens / packed_s, "padded_tokens_per_s": real_tokens / padded_s,
        "speedup": padded_s / packed_s,
    }

    lengths = sorted(s.length for s in samples)
    results: dict[str, Any] = {
        "quick": quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "processor": platform.processor(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "model": {"parameters": parameters, "dtype": "float32", "vision": dict(TINY_VISION),
                  "llm": {k: LLM[k] for k in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim")},
                  "vocab_size": packed_model.config.llm_config.vocab_size, "attention": "sdpa"},
        "data": {
            "generated": count, "samples": len(samples), "dropped_over_max_seq_len": dropped,
            "real_tokens": real_tokens, "loss_tokens": sum(s.num_loss_tokens for s in samples),
            "images_1": sum(1 for s in samples if len(s.image_num_tiles) == 1),
            "images_2": sum(1 for s in samples if len(s.image_num_tiles) == 2),
            "lengths": {"min": lengths[0], "median": statistics.median(lengths), "mean": statistics.fmean(lengths),
                        "p90": lengths[int(0.9 * (len(lengths) - 1))], "max": lengths[-1]},
        },
        "fraction": fraction,
        "training": training,
        "targets": {
            "packed_fraction": {"target": FRACTION_TARGET, "value": fraction["packed"],
                                "met": fraction["packed"] >= FRACTION_TARGET},
            "speedup": {"target": SPEEDUP_TARGET, "value": training["speedup"],
                        "met": training["speedup"] >= SPEEDUP_TARGET},
        },
    }
    return finish(results, started, cpu_before, print_table, args.json)


if __name__ == "__main__":
    main()
