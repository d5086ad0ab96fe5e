"""``sailvl2 curate PIPELINE.yaml [--engine local|ray] [--workers N] [--resume/--no-resume]``.

Registered into the ``sailvl2`` command by :func:`register`; prints one progress line per shard to stderr
and the report's summary (``report.md``) to stdout.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``curate`` command to the ``sailvl2`` sub-commands; its handler is ``args.handler``."""
    from .runner import ENGINES

    curate = subparsers.add_parser("curate", help="run a data-curation pipeline (validation, dedup, judges)")
    curate.add_argument("pipeline", help="the pipeline YAML (inputs, output, shard_size, stages)")
    curate.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: worker processes on this machine; ray: Ray Data (a local or remote cluster)")
    curate.add_argument("--workers", type=int, default=None,
                        help="worker processes for map stages (default min(2, CPUs); 0 = in this process)")
    curate.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the shards an earlier run of the same pipeline finished (default on)")
    curate.add_argument("--quiet", action="store_true", help="no per-shard progress lines")
    curate.set_defaults(handler=run)
    return curate


def run(args: argparse.Namespace) -> int:
    from .config import load_pipeline
    from .runner import run_pipeline

    config = load_pipeline(args.pipeline)
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    result = run_pipeline(config, workers=args.workers, resume=args.resume, engine=args.engine, progress=progress)
    print((result.output / "report.md").read_text(encoding="utf-8"))
    return 0
