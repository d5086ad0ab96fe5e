"""CPU inference benchmark of sailvl2 on a mid-size random model built in memory (no files, no network).

Run (what ``make bench`` does):

    .venv/bin/python benchmarks/inference.py --json benchmarks/results/inference.json

``--quick`` runs fewer repeats with shorter prompts (used by a test); ``--threads N`` sets torch threads
(default 2). Measures image preprocessing (the release's path vs ours), vision ms per tile, prefill and
decode tokens/s (batch 1 and 8) and peak RSS, prints a table, and optionally writes every number as JSON.
Timings are medians of several repeats after warmups; nothing here asserts on time.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from _common import base_parser, cpu_snapshot, finish, print_rows
from sailvl2.configuration import SAILVLConfig
from sailvl2.generation.generate import stream_tokens
from sailvl2.modeling.sailvl import SAILVLModel
from sailvl2.processing.images import (
    ImageProcessorConfig,
    candidate_grids,
    closest_grid,
    preprocess_image,
    preprocess_images,
)

PREPROCESS_TARGET = 3.0  # baseline / ours
DECODE_BATCH_TARGET = 4.0  # batch-8 aggregate tokens/s over batch-1 tokens/s
TEXT_TOKEN_LIMIT = 151_000  # random prompt ids stay below the special tokens (<IMG_CONTEXT> is 151671)


def build_model() -> SAILVLModel:
    """The mid-size random fp32 model: ViT 384x6, Qwen3 512x8 with the full 151936 vocabulary."""
    torch.manual_seed(0)
    config = SAILVLConfig(
        vision_config={"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6,
                       "intermediate_size": 1024, "image_size": 448, "patch_size": 14},
        llm_config={"model_type": "qwen3", "hidden_size": 512, "num_hidden_layers": 8,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
                    "intermediate_size": 1536, "vocab_size": 151936},
    )
    return SAILVLModel(config).float().eval()


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ preprocessing


def make_image(seed: int, width: int = 800, height: int = 600) -> Image.Image:
    """A deterministic photo-like RGB image: smooth gradients plus noise (so resampling has real work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    noisy = base + rng.normal(0.0, 24.0, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), mode="RGB")


def release_preprocess(image: Image.Image, config: ImageProcessorConfig) -> torch.Tensor:
    """The release's per-image path, written out: one resize, per-tile crop, ToTensor and Normalize."""
    size = config.image_size
    cols, rows = closest_grid(*image.size, candidate_grids(config.min_num, config.max_num), size)
    resized = image.resize((cols * size, rows * size), Image.Resampling.BICUBIC)
    tiles = [resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
             for r in range(rows) for c in range(cols)]
    if len(tiles) > 1 and config.use_thumbnail:
        tiles.append(image.resize((size, size), Image.Resampling.BICUBIC))
    mean = torch.tensor(config.image_mean).view(3, 1, 1)
    std = torch.tensor(config.image_std).view(3, 1, 1)
    out = []
    for tile in tiles:
        pixels = torch.from_numpy(np.array(tile)).permute(2, 0, 1).float() / 255
        out.append((pixels - mean) / std)
    return torch.stack(out)


def bench_preprocess(repeats: int) -> tuple[dict[str, Any], torch.Tensor]:
    config = ImageProcessorConfig()
    images = [make_image(seed) for seed in range(8)]
    expected = release_preprocess(images[0], config)
    ours = preprocess_image(images[0], config)
    max_diff = float((expected - ours).abs().max()) if expected.shape == ours.shape else float("inf")
    baseline = median_seconds(lambda: release_preprocess(images[0], config), repeats)
    single = median_seconds(lambda: preprocess_image(images[0], config), repeats)
    batch = median_seconds(lambda: preprocess_images(images, config), repeats) / len(images)
    result = {
        "image_size": list(images[0].size),
        "tiles_per_image": int(ours.shape[0]),
        "baseline_ms_per_image": baseline * 1e3,
        "ours_single_ms_per_image": single * 1e3,
        "ours_batch8_ms_per_image": batch * 1e3,
        "speedup_single": baseline / single,
        "speedup_batch8": baseline / batch,
        "max_abs_diff_vs_baseline": max_diff,
        "matches_baseline": max_diff <= 1e-6,
    }
    return result, ours


# ------------------------------------------------------------------------------------------ model


def bench_vision(model: SAILVLModel, pixel_values: torch.Tensor, repeats: int) -> dict[str, Any]:
    with torch.inference_mode():
        seconds = median_seconds(lambda: model.get_image_features(pixel_values), repeats)
    tiles = int(pixel_values.shape[0])
    return {"tiles": tiles, "ms_per_batch": seconds * 1e3, "ms_per_tile": seconds * 1e3 / tiles}


def random_prompt(batch: int, length: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TEXT_TOKEN_LIMIT, (batch, length), generator=generator)


def bench_prefill(model: SAILVLModel, length: int, repeats: int) -> dict[str, Any]:
    """One text-only forward over the prompt, KV cache on and logits only at the last position."""
    input_ids = random_prompt(1, length, seed=1)
    with torch.inference_mode():
        seconds = median_seconds(lambda: model(input_ids=input_ids, use_cache=True, logits_to_keep=1), repeats)
    return {"prompt_tokens": length, "ms": seconds * 1e3, "tokens_per_s": length / seconds}


def decode_seconds(model: SAILVLModel, input_ids: torch.Tensor, new_tokens: int) -> float:
    """Time from the first generated token (prefill done) to the last: ``new_tokens - 1`` decode steps."""
    stream = stream_tokens(model, input_ids, max_new_tokens=new_tokens, eos_token_id=None)
    next(stream)
    start = time.perf_counter()
    steps = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    if steps != new_tokens - 1:  # eos is disabled, so every step must run
        raise RuntimeError(f"generation stopped after {steps + 1} of {new_tokens} tokens")
    return seconds


def bench_decode(model: SAILVLModel, prompt: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    result: dict[str, Any] = {"prompt_tokens": prompt, "new_tokens": new_tokens}
    with torch.inference_mode():
        for batch in (1, 8):
            input_ids = random_prompt(batch, prompt, seed=2)
            decode_seconds(model, input_ids, new_tokens)  # warmup
            seconds = statistics.median(decode_seconds(model, input_ids, new_tokens) for _ in range(repeats))
            result[f"batch{batch}_ms_per_step"] = seconds * 1e3 / (new_tokens - 1)
            result[f"batch{batch}_tokens_per_s"] = batch * (new_tokens - 1) / seconds
    result["batch8_over_batch1"] = result["batch8_tokens_per_s"] / result["batch1_tokens_per_s"]
    return result


# ------------------------------------------------------------------------------------------ report


def targets(pre: dict[str, Any], dec: dict[str, Any]) -> dict[str, Any]:
    best = max(("speedup_single", "speedup_batch8"), key=lambda key: pre[key])
    return {
        "preprocess_speedup": {
            "target": PREPROCESS_TARGET, "single": pre["speedup_single"], "batch8": pre["speedup_batch8"],
            "met_by": [k.removeprefix("speedup_") for k in ("speedup_single", "speedup_batch8")
                       if pre[k] >= PREPROCESS_TARGET],
            "met": pre[best] >= PREPROCESS_TARGET,
        },
        "decode_batch8_over_batch1": {
            "target": DECODE_BATCH_TARGET, "value": dec["batch8_over_batch1"],
            "met": dec["batch8_over_batch1"] >= DECODE_BATCH_TARGET,
        },
    }


def print_table(results: dict[str, Any]) -> None:
    pre, vis, pf, dec, tg = (results[k] for k in ("preprocess", "vision", "prefill", "decode", "targets"))
    w, h = pre["image_size"]
    base, one, many = (pre[f"{k}_ms_per_image"] for k in ("baseline", "ours_single", "ours_batch8"))
    rows = [
        (f"preprocess {w}x{h} -> {pre['tiles_per_image']} tiles, release path", f"{base:.2f} ms/img"),
        ("preprocess, ours (1 image)", f"{one:.2f} ms/img  ({pre['speedup_single']:.2f}x)"),
        ("preprocess, ours (batch of 8, per image)", f"{many:.2f} ms/img  ({pre['speedup_batch8']:.2f}x)"),
        ("preprocess, ours == release (max |diff|)",
         f"{'yes' if pre['matches_baseline'] else 'NO'} ({pre['max_abs_diff_vs_baseline']:.1e})"),
        (f"vision, batch of {vis['tiles']} tiles", f"{vis['ms_per_tile']:.1f} ms/tile"),
        (f"prefill, {pf['prompt_tokens']}-token text prompt", f"{pf['tokens_per_s']:.0f} tok/s ({pf['ms']:.0f} ms)"),
        (f"decode batch 1 ({dec['prompt_tokens']}-token prompt)", f"{dec['batch1_tokens_per_s']:.1f} tok/s"),
        ("decode batch 8 (aggregate)", f"{dec['batch8_tokens_per_s']:.1f} tok/s"),
        ("peak RSS", f"{results['peak_rss_mb']:.0f} MB"),
    ]
    print_rows(f"sailvl2 inference benchmark  (torch {results['torch']}, {results['threads']} threads"
               f"{', quick' if results['quick'] else ''})", rows, results)
    pt = tg["preprocess_speedup"]
    met_by = ", ".join(pt["met_by"]) or "neither measure"
    print(f"  target preprocess speedup >= {pt['target']:.0f}x: {'MET' if pt['met'] else 'NOT MET'} "
          f"(single {pt['single']:.2f}x, batch8 {pt['batch8']:.2f}x; met by {met_by})")
    dt = tg["decode_batch8_over_batch1"]
    print(f"  target decode batch8/batch1 >= {dt['target']:.0f}x: "
          f"{'MET' if dt['met'] else 'NOT MET'} ({dt['value']:.2f}x)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], "fewer repeats and shorter prompts (for tests)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    started = time.perf_counter()
    cpu_before = cpu_snapshot()

    preprocess, tiles = bench_preprocess(repeats=3 if args.quick else 15)
    model = build_model()
    results: dict[str, Any] = {
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "model": {"parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32",
                  "vision": "hidden 384, 6 layers, 6 heads, mlp 1024, 448 px, patch 14",
                  "llm": "qwen3 hidden 512, 8 layers, 8/4 heads, head_dim 64, mlp 1536, vocab 151936"},
        "preprocess": preprocess,
        "vision": bench_vision(model, tiles, repeats=repeats),
        "prefill": bench_prefill(model, 256 if args.quick else 1024, repeats=repeats),
        "decode": bench_decode(model, prompt=64, new_tokens=9 if args.quick else 33, repeats=repeats),
    }
    results["targets"] = targets(results["preprocess"], results["decode"])
    return finish(results, started, cpu_before, print_table, args.json)


if __name__ == "__main__":
    main()
