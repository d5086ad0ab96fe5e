"""The evaluation subcommands of ``sailvl2`` (added by :func:`register`):

    sailvl2 eval --data MMStar.tsv [--model DIR] [--out DIR] [--batch-size 8] [--limit N] [--thinking]
    sailvl2 eval --data MMStar.tsv --api-base http://host:8000 --api-model sail-vl2   # an OpenAI-compatible server
    sailvl2 eval-compare runs/eval/a/MMStar runs/eval/b/MMStar [--paper 2B] [--out DIR]
    sailvl2 eval-suite-export runs/nano/data/test.jsonl --out SAILVL2-Suite.tsv  # our task suite as a TSV
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``eval``, ``eval-compare`` and ``eval-suite-export`` to an ``argparse`` subparsers object; each sets
    ``handler`` (a function of the parsed arguments returning the exit code)."""
    run = subparsers.add_parser("eval", help="evaluate a model on a VLMEvalKit-style benchmark TSV (resumable)")
    run.add_argument("--data", required=True, help="the benchmark TSV")
    run.add_argument("--model", default=None, help="checkpoint directory (default: sailvl2's default model)")
    run.add_argument("--benchmark", default=None, help="registry name (default: the file name without extension)")
    run.add_argument("--api-base", default=None, help="generate through this OpenAI-compatible server instead")
    run.add_argument("--api-model", default=None, help="the model name the server serves (with --api-base)")
    run.add_argument("--api-key", default=None)
    run.add_argument("--concurrency", type=int, default=4, help="requests in flight (with --api-base)")
    run.add_argument("--out", default=None, help="output folder (default: runs/eval/<model>/<benchmark>); "
                     "rerun with the same folder to resume")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--thinking", action="store_true", help="add the reasoning instruction (4096 new tokens)")
    run.add_argument("--limit", type=int, default=None, help="evaluate the first N items only")
    run.add_argument("--max-new-tokens", type=int, default=None, help="override the benchmark's answer budget")
    run.add_argument("--max-num", type=int, default=None, help="override the benchmark's tiles per image")
    run.add_argument("--judge-api-base", default=None, help="OpenAI-compatible judge for answers the rules miss")
    run.add_argument("--judge-model", default=None)
    run.add_argument("--judge-api-key", default=None)
    run.add_argument("--device", default=None)
    run.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(handler=_eval)

    compare = subparsers.add_parser("eval-compare", help="put several evaluation results side by side")
    compare.add_argument("results", nargs="+", help="result folders (or their metrics.json)")
    compare.add_argument("--paper", choices=("2B", "8B"), default=None,
                         help="add the published SAIL-VL2-2B/8B numbers (PAPER.md 9.2) as a reference column")
    compare.add_argument("--out", default=None, help="write comparison.md/.json/.png here")
    compare.set_defaults(handler=_compare)

    export = subparsers.add_parser("eval-suite-export", help="export a task-suite split JSONL as a benchmark TSV")
    export.add_argument("split", help="suite split JSONL (e.g. runs/nano/data/test.jsonl)")
    export.add_argument("--out", default="SAILVL2-Suite.tsv", help="the TSV to write (name it SAILVL2-Suite*)")
    export.add_argument("--limit", type=int, default=None, help="the first N records only")
    export.set_defaults(handler=_export)


def _eval(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .runner import EndpointGenerator, ModelGenerator, RunSettings, run_eval

    if args.judge_api_base is not None and not args.judge_model:
        raise ConfigError("--judge-api-base needs --judge-model")
    settings = RunSettings(benchmark=args.benchmark, batch_size=args.batch_size, thinking=args.thinking,
                           limit=args.limit, max_new_tokens=args.max_new_tokens, max_num=args.max_num)
    if args.api_base is not None:
        if args.model is not None:
            raise ConfigError("give either --model (a local checkpoint) or --api-base (a server), not both")
        if not args.api_model:
            raise ConfigError("--api-base needs --api-model (the model name the server serves)")
        from .endpoint import EndpointClient, EndpointSettings

        generator: Any = EndpointGenerator(EndpointClient(EndpointSettings(
            args.api_base, args.api_model, api_key=args.api_key, concurrency=args.concurrency)))
    else:
        from ..api import load
        from ..demo import default_model_dir

        directory = Path(args.model) if args.model is not None else default_model_dir()
        vlm = load(directory, device=args.device, dtype=args.dtype)
        generator = ModelGenerator(vlm, label=directory.resolve().name, identity=str(directory.resolve()))
    benchmark = args.benchmark or Path(args.data).stem
    out = Path(args.out) if args.out else Path("runs") / "eval" / _safe(generator.label) / _safe(benchmark)
    judge = None
    if args.judge_api_base is not None:
        from .judge import OpenAIJudge

        # The judge's replies are cached in the output folder, so a resumed run asks nothing twice.
        judge = OpenAIJudge(args.judge_api_base, args.judge_model, api_key=args.judge_api_key,
                            cache_path=out / "judge_cache.jsonl")
    result = run_eval(args.data, out, generator, settings, judge=judge, progress=not args.no_progress)
    metrics = result.metrics
    print((out / "results.md").read_text(encoding="utf-8"))
    rate = result.generated / result.seconds if result.seconds > 0 else 0.0
    print(f"{result.generated} items generated in {result.seconds:.1f} s ({rate:.2f} items/s); outputs in {out}")
    if not metrics["complete"]:
        print(f"{metrics['failed_requests']} requests failed; rerun the same command to retry them")
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .report import compare_results, write_comparison

    comparison = compare_results(args.results, paper=args.paper)
    print(comparison.markdown(), end="")
    if args.out:
        paths = write_comparison(comparison, args.out)
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .datasets import load_tsv
    from .suite import export_suite

    path = export_suite(args.split, args.out, limit=args.limit)
    print(f"wrote {len(load_tsv(path, validate_images=False))} suite items to {path}")
    return 0


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "model"
