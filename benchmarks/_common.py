"""Helpers shared by the benchmark scripts (run as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def cpu_snapshot() -> tuple[float, float] | None:
    """(CPU seconds used by all processes, by this one) so far; None where /proc/stat is missing."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return None
    own = resource.getrusage(resource.RUSAGE_SELF)
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def other_cpu_share(before: tuple[float, float] | None, wall: float) -> float | None:
    """Fraction of the machine's CPU time that other processes used during the run (a contention check)."""
    after = cpu_snapshot()
    if before is None or after is None:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others) / (wall * (os.cpu_count() or 1))


def finish(results: dict[str, Any], started: float, cpu_before: tuple[float, float] | None,
           print_table: Callable[[dict[str, Any]], None], json_path: Path | None) -> dict[str, Any]:
    """Add peak RSS, wall time and the contention check, print the table, write the JSON."""
    results["peak_rss_mb"] = peak_rss_mb()
    results["wall_s"] = time.perf_counter() - started
    results["machine"]["other_processes_cpu_share"] = other_cpu_share(cpu_before, results["wall_s"])
    print_table(results)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {json_path}")
    return results


def print_rows(title: str, rows: list[tuple[str, str]], results: dict[str, Any]) -> None:
    """The aligned results table, plus a warning when other processes loaded the machine."""
    width = max(len(name) for name, _ in rows)
    print(title)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    share = results["machine"]["other_processes_cpu_share"]
    if share is not None and share > 0.05:
        print(f"  note: other processes used {share:.0%} of the CPUs during the run; timings are inflated")


def base_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: --json, --threads (default 2), --quick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser
