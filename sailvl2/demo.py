"""`make demo`: chat about example images with the default model, end to end on the CPU, offline.

    python -m sailvl2.demo [--model DIR] [--out DIR]

Until the trained nano SAIL-VL2 ships in the repo, the default model is a small RANDOM-weight model in the
release layout, built on first use into `$SAILVL2_HOME` (default `~/.cache/sailvl2`). Its answers are
gibberish; the demo shows that every step (tiling, prompt, vision tower, generation, streaming, batching,
answer parsing, box drawing) runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

RANDOM_DEMO_NAME = "random-demo-v1"


def _home() -> Path:
    return Path(os.environ.get("SAILVL2_HOME", Path.home() / ".cache" / "sailvl2"))


def default_model_dir() -> Path:
    """The model used when none is given (a random-weight demo model for now; built once, then reused)."""
    directory = _home() / RANDOM_DEMO_NAME
    if not (directory / "config.json").is_file():
        from .tiny import build_random_checkpoint

        print(f"[sailvl2] building a small random-weight demo model in {directory} "
              "(the trained nano model is not shipped yet)", file=sys.stderr)
        staging = directory.with_name(directory.name + f".tmp-{os.getpid()}")
        build_random_checkpoint(staging, seed=0)
        if directory.exists():  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.replace(directory)
    return directory


def example_images() -> list[tuple[str, Image.Image]]:
    """Deterministic example scenes (shapes and text), drawn with PIL."""
    scene = Image.new("RGB", (640, 480), "white")
    draw = ImageDraw.Draw(scene)
    draw.rectangle((60, 80, 220, 240), fill=(220, 30, 30))
    draw.ellipse((300, 120, 460, 280), fill=(30, 80, 220))
    draw.polygon([(500, 400), (600, 400), (550, 300)], fill=(30, 170, 60))
    banner = Image.new("RGB", (900, 220), (250, 240, 200))
    ImageDraw.Draw(banner).text((40, 90), "SAIL-VL2 reads 42 words", fill="black")
    return [("shapes.png", scene), ("banner.png", banner)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint directory (default: the built-in model)")
    parser.add_argument("--out", default="out/demo", help="where example images and the boxes PNG go")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    import sailvl2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = example_images()
    for name, image in images:
        image.save(out / name)
    started = time.perf_counter()
    vlm = sailvl2.load(args.model)
    print(f"loaded {vlm.model.config._name_or_path} on {vlm.device} in {time.perf_counter() - started:.1f}s")
    if args.model is None:
        print("NOTE: random weights (no trained default model yet): the answers below are noise; the pipeline is real.")

    shapes = out / "shapes.png"
    cost = vlm.processor.num_image_tokens(shapes)
    print(f"\n[streamed chat] shapes.png costs {cost} image tokens")
    print("Q: What shapes are in the picture?\nA: ", end="")
    for piece in vlm.chat("What shapes are in the picture?", images=shapes, stream=True,
                          max_new_tokens=args.max_new_tokens):
        print(piece, end="", flush=True)
    print()

    print("\n[batch_chat] three questions in one left-padded batch")
    questions = ["Describe the image.", "What is written here?", "What is the capital of France?"]
    started = time.perf_counter()
    answers = vlm.batch_chat(questions, images=[shapes, out / "banner.png", None], max_new_tokens=args.max_new_tokens)
    for question, response in zip(questions, answers):
        print(f"Q: {question}\nA: {response.answer!r} ({response.num_generated_tokens} tokens)")
    print(f"({time.perf_counter() - started:.1f}s for the batch)")

    print("\n[thinking mode] the answer is split into thinking / answer / \\boxed{}")
    response = vlm.chat("How many shapes are there?", images=shapes, thinking=True, max_new_tokens=args.max_new_tokens)
    print(f"thinking={response.thinking!r}\nanswer={response.answer!r}\nboxed={response.boxed!r}")

    grounded = vlm.chat("Where is the red square? Answer with <ref> and <box>.", images=shapes,
                        max_new_tokens=args.max_new_tokens)
    drawn = grounded.draw(shapes)
    drawn.save(out / "boxes.png")
    print(f"\n[grounding] {len(grounded.boxes)} box(es) parsed; drawn on {out / 'boxes.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
