"""A nano multi-task training step under CPU bf16 autocast (ours, `cpu_bf16: true`) against fp32 (the baseline).

    .venv/bin/python benchmarks/train_precision.py [--steps 20] [--threads 2] [--json benchmarks/results/train_precision.json]
    .venv/bin/python benchmarks/train_precision.py --steps 2 --train-records 300     # a quick check (a test runs it)

It generates a small nano task suite (shapes, OCR and charts, slot layout) in a temporary folder, builds the
nano model, and times the same packed rows through the trainer's step (forward, backward, Muon) with
`cpu_bf16` off and on. On a CPU without native bf16 products (AVX512-BF16 / AMX) the flag does nothing and
the script says so. It also reports the two runs' mean losses over the timed steps, which must stay close.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_snapshot, finish, print_rows
from sailvl2.nano.ladder import _corpus
from sailvl2.nano.model import NANO_IMAGE_SIZE, build_nano_init
from sailvl2.synth import generate_suite
from sailvl2.training.precision import cpu_has_native_bf16
from sailvl2.training.recipe import load_recipe
from sailvl2.training.trainer import Trainer


def time_steps(init: Path, data: Path, out: Path, steps: int, cpu_bf16: bool) -> tuple[list[float], list[float]]:
    recipe = load_recipe("nano_multitask", [
        f"init={{checkpoint: {init}}}", f"data.mixture={data / 'mixtures' / 'multitask.yaml'}",
        f"output_dir={out}", f"max_steps={steps + 3}", "save_every=0", f"cpu_bf16={str(cpu_bf16).lower()}"])
    trainer = Trainer(recipe, device="cpu", resume=False)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    times, losses = [], []
    for step in range(steps + 3):  # the first three warm up
        rows = trainer.data.next_rows()
        began = time.perf_counter()
        loss, _ = trainer._step(rows)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if step >= 3:
            times.append(time.perf_counter() - began)
            losses.append(loss)
    return times, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train-records", type=int, default=1500, help="size of the generated suite")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate_suite(root / "data", seed=0, sizes={"train": args.train_records, "test": 10}, image_size=NANO_IMAGE_SIZE,
                       families=["shapes", "ocr", "charts", "grounding"], text_slot=28, chart_slot=28)
        build_nano_init(root / "init", _corpus(root / "data" / "train.jsonl"), seed=0)
        started, cpu_before = time.perf_counter(), cpu_snapshot()
        fp32_times, fp32_losses = time_steps(root / "init", root / "data", root / "fp32", args.steps, False)
        bf16_times, bf16_losses = time_steps(root / "init", root / "data", root / "bf16", args.steps, True)
    results = {
        "machine": {"torch": torch.__version__, "threads": args.threads,
                    "cpu": platform.processor() or platform.machine(), "native_bf16": cpu_has_native_bf16()},
        "steps": args.steps,
        "baseline_fp32_step_s": statistics.median(fp32_times), "ours_bf16_step_s": statistics.median(bf16_times),
        "baseline_mean_loss": statistics.fmean(fp32_losses), "ours_mean_loss": statistics.fmean(bf16_losses),
    }
    results["speedup"] = results["baseline_fp32_step_s"] / results["ours_bf16_step_s"]

    def table(r: dict) -> None:
        print_rows("nano multi-task step (packed 2048-token row, Muon)", [
            ("native bf16 on this CPU", "yes" if r["machine"]["native_bf16"] else "no: cpu_bf16 changes nothing"),
            ("fp32 (baseline)", f"{r['baseline_fp32_step_s'] * 1e3:.0f} ms"),
            ("cpu_bf16 (ours)", f"{r['ours_bf16_step_s'] * 1e3:.0f} ms"),
            ("speed-up", f"{r['speedup']:.2f}x"),
            ("mean loss, fp32 / bf16", f"{r['baseline_mean_loss']:.4f} / {r['ours_mean_loss']:.4f}"),
        ], r)

    finish(results, started, cpu_before, table, args.json)


if __name__ == "__main__":
    main()
