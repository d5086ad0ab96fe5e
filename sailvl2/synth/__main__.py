"""``python -m sailvl2.synth OUT_DIR [--train N --val N --test N --seed S --workers W --text-slot PX
--number-images N --letter-images N --chart-images N --shape-images N --check]``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .checker import check_suite
from .writer import FAMILIES, generate_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sailvl2.synth", description=__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    for split, default in (("train", 20000), ("val", 1000), ("test", 1000)):
        parser.add_argument(f"--{split}", type=int, default=default, help=f"records (default {default})")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--text-slot", type=int, default=0,
                        help="draw text one character per PX-pixel cell (the slot layout; 0: free layout)")
    parser.add_argument("--chart-slot", type=int, default=0,
                        help="draw charts and tables one character per PX-pixel cell (0: free layout)")
    parser.add_argument("--number-images", type=int, default=0,
                        help="extra number-reading images for the train split (stream ocr-numbers)")
    parser.add_argument("--letter-images", type=int, default=0,
                        help="extra letter-string reading images for the train split (stream ocr-letters)")
    parser.add_argument("--chart-images", type=int, default=0,
                        help="extra chart and table read-out images for the train split (stream charts-read)")
    parser.add_argument("--shape-images", type=int, default=0,
                        help="extra shape scenes asked counts and spatial questions, train split (stream shapes-more)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--check", action="store_true", help="run the independent checker afterwards")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    manifest = generate_suite(args.out_dir, args.seed, {"train": args.train, "val": args.val, "test": args.test},
                              args.families.split(","), image_size=args.image_size, workers=args.workers,
                              overwrite=args.overwrite, text_slot=args.text_slot, chart_slot=args.chart_slot,
                              number_images=args.number_images, letter_images=args.letter_images,
                              chart_images=args.chart_images, shape_images=args.shape_images)
    counts = {split: info["records"] for split, info in manifest["splits"].items()}
    print(f"wrote {json.dumps(counts)} to {args.out_dir} in {time.perf_counter() - start:.1f}s")
    if args.check:
        report = check_suite(args.out_dir)
        print(f"checked {report.checked} records: {len(report.failures)} failures, shared scenes "
              f"{report.shared_scenes}, shared images {report.shared_images}")
        for failure in report.failures[:20]:
            print("  " + failure)
        return 0 if report.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
