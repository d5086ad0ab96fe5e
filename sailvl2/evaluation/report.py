"""Evaluation outputs: ``metrics.json``, a markdown table, a bar chart, and the side-by-side comparison of runs.

One run (``runner.py``) writes into its output folder: ``metrics.json`` (the numbers; byte-identical for the
same predictions, so a resumed run can be checked against an uninterrupted one), ``scores.jsonl`` (one line per
item: extracted answer, score), ``results.md`` and ``results.png`` (score per category). Every file is written
atomically (temporary file + ``os.replace``). Charts are drawn on matplotlib's Agg canvas without pyplot, so
no GUI backend is needed and the caller's pyplot state is untouched.

:func:`compare_results` puts several runs' ``metrics.json`` side by side (rows: benchmarks, columns: models),
optionally with the published SAIL-VL2-2B or -8B numbers (:data:`PAPER_RESULTS`) as a reference column, and
the OpenCompass average (PAPER.md 9.1) for every column that has all 8 of its benchmarks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configuration import atomic_write_text
from ..errors import InputError
from .metrics import opencompass_average

__all__ = [
    "PAPER_RESULTS", "Comparison", "compare_results", "load_metrics", "markdown_report", "plot_comparison",
    "plot_metrics", "write_comparison", "write_json", "write_report",
]

METRICS_FILE = "metrics.json"
_OPENCOMPASS_ROW = "OpenCompass avg"

# PAPER.md section 9.2 (the paper's Tables 8 and 9, base models): row -> (SAIL-VL2-2B, SAIL-VL2-8B), in percent;
# OCRBench is given x10 (895 -> 89.50), as in the paper. Each row lists the VLMEvalKit dataset names (lower case,
# letters and digits only) that are that benchmark; the paper does not name the DocVQA split, so any DocVQA
# split maps to its row. The OpenSource average and the per-split RefCOCO / TempCompass numbers are not given.
PAPER_RESULTS: dict[str, dict[str, Any]] = {
    _OPENCOMPASS_ROW: {"2B": 70.31, "8B": 75.07, "names": ()},
    "MMBench v1.1": {"2B": 86.77, "8B": 90.16, "names": ("mmbenchv11", "mmbenchdevenv11", "mmbenchtestenv11")},
    "MMStar": {"2B": 64.07, "8B": 70.73, "names": ("mmstar",)},
    "MMMU-val": {"2B": 47.67, "8B": 55.44, "names": ("mmmuval", "mmmudevval")},
    "MathVista-mini": {"2B": 71.10, "8B": 76.40, "names": ("mathvistamini", "mathvistatestmini")},
    "OCRBench": {"2B": 89.50, "8B": 91.30, "names": ("ocrbench",)},
    "DocVQA": {"2B": 93.10, "8B": 95.28, "names": ("docvqa", "docvqaval", "docvqatest")},
    "AI2D": {"2B": 83.00, "8B": 87.73, "names": ("ai2d", "ai2dtest")},
    "HallusionBench": {"2B": 51.74, "8B": 55.10, "names": ("hallusionbench",)},
    "MMVet": {"2B": 68.67, "8B": 73.72, "names": ("mmvet",)},
    "RealWorldQA": {"2B": 72.29, "8B": 76.34, "names": ("realworldqa",)},
    "MM-IFEval": {"2B": 52.21, "8B": 60.81, "names": ("mmifeval",)},
    "RefCOCO avg": {"2B": 53.28, "8B": 74.02, "names": ("refcocoavg",)},
    "MathVision": {"2B": 23.36, "8B": 27.63, "names": ("mathvision",)},
    "MathVerse-mini": {"2B": 31.19, "8B": 43.17, "names": ("mathversemini",)},
    "Video-MME (w/o subs)": {"2B": 57.10, "8B": 62.70, "names": ("videomme",)},
    "LongVideoBench-val": {"2B": 54.45, "8B": 58.34, "names": ("longvideobench", "longvideobenchval")},
    "TempCompass avg": {"2B": 61.86, "8B": 65.66, "names": ("tempcompass",)},
    "MMIU": {"2B": 42.61, "8B": 45.72, "names": ("mmiu",)},
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _paper_row(benchmark: str) -> str | None:
    key = _norm(benchmark)
    return next((row for row, entry in PAPER_RESULTS.items() if key in entry["names"]), None)


# ------------------------------------------------------------------------------------------------ one run


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """``data`` as indented JSON at ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown_report(metrics: Mapping[str, Any]) -> str:
    """A run's ``metrics.json`` as markdown: the score, the per-category table, skipped rows and errors."""
    lines = [
        f"# {metrics['benchmark']}: {metrics['model']}", "",
        "| benchmark | model | metric | n | score |", "|---|---|---|---:|---:|",
        f"| {metrics['benchmark']} | {metrics['model']} | {metrics['metric']} | {metrics['n']} | "
        f"{_pct(metrics['score'])} |",
    ]
    for name, value in metrics.get("extra", {}).items():
        lines.append(f"| | | {name} | | {value:.2f} |")
    if metrics.get("per_category"):
        lines += ["", "| category | n | score |", "|---|---:|---:|"]
        lines += [f"| {c} | {int(v['n'])} | {_pct(v['score'])} |" for c, v in metrics["per_category"].items()]
    skipped = metrics.get("skipped_rows") or {}
    lines += ["", "Skipped TSV rows: " + (
        f"{sum(skipped.values())} (" + ", ".join(f"{r}: {n}" for r, n in skipped.items()) + ")" if skipped else "none")]
    lines.append(f"Items that could not be prompted or generated: {metrics.get('prediction_errors', 0)}; "
                 f"failed requests (not yet predicted, scored 0): {metrics.get('failed_requests', 0)}.")
    if metrics.get("unscorable"):
        lines.append(f"Items left out of the score (gold answer unusable): {len(metrics['unscorable'])}.")
    settings = metrics.get("settings") or {}
    if settings:
        lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".")
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(temp, format="png")
    os.replace(temp, path)
    return path


def plot_metrics(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """A horizontal bar chart of the score per category and overall (PNG, atomic)."""
    rows = [(c, v["score"]) for c, v in (metrics.get("per_category") or {}).items()]
    rows.append(("overall", metrics["score"]))
    figure = _figure(7.0, 1.2 + 0.28 * len(rows))
    axes = figure.add_subplot()
    positions = list(range(len(rows)))[::-1]
    colours = ["#4c72b0"] * (len(rows) - 1) + ["#dd8452"]
    bars = axes.barh(positions, [score for _, score in rows], color=colours)
    axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    axes.set_yticks(positions, [name for name, _ in rows], fontsize=8)
    axes.set_xlim(0, 100)
    axes.set_xlabel(f"{metrics['metric']} (%)")
    axes.set_title(f"{metrics['benchmark']}: {metrics['model']} (n={metrics['n']})", fontsize=10)
    figure.tight_layout()
    return _save(figure, Path(path))


def write_report(out_dir: str | os.PathLike, metrics: Mapping[str, Any],
                 item_rows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Path]:
    """Write ``metrics.json``, ``scores.jsonl`` (``item_rows``), ``results.md`` and ``results.png`` into
    ``out_dir``; returns their paths by name."""
    out = Path(out_dir)
    paths = {"metrics": write_json(out / METRICS_FILE, metrics)}
    scores = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in item_rows)
    atomic_write_text(out / "scores.jsonl", scores)
    paths["scores"] = out / "scores.jsonl"
    atomic_write_text(out / "results.md", markdown_report(metrics))
    paths["markdown"] = out / "results.md"
    paths["chart"] = plot_metrics(metrics, out / "results.png")
    return paths


# ------------------------------------------------------------------------------------------------ comparison


def load_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A run's metrics: ``path`` is its output folder or its ``metrics.json``."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read results {str(file)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"results {str(file)!r} are not JSON: {exc}") from None
    if not isinstance(metrics, dict) or not {"benchmark", "model", "score"} <= metrics.keys():
        raise InputError(f"results {str(file)!r} are not a sailvl2 metrics.json (no benchmark/model/score)")
    return metrics


@dataclass
class Comparison:
    """Scores side by side: ``values[row][column]`` in percent (missing cells are absent). ``reference`` names
    the paper column (None without one)."""

    rows: list[str]
    columns: list[str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    reference: str | None = None

    def markdown(self) -> str:
        lines = ["| benchmark | " + " | ".join(self.columns) + " |", "|---|" + "---:|" * len(self.columns)]
        for row in self.rows:
            cells = [_pct(self.values.get(row, {}).get(column)) for column in self.columns]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if self.reference:
            lines += ["", f"{self.reference}: published numbers, PAPER.md 9.2 (OCRBench x10). The published scores "
                      "use the paper's judge and full benchmark files; rows scored here without a judge (MMVet, "
                      "MM-IFEval) or with another metric (HallusionBench, MME) are not directly comparable."]
        return "\n".join(lines) + "\n"


def _labels(results: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    """Column label per result: its model name, made unique by the run folder when a model has one benchmark
    twice."""
    labels = [str(m["model"]) for _, m in results]
    pairs = [(label, m["benchmark"]) for label, (_, m) in zip(labels, results)]
    clash = {label for label, bench in pairs if pairs.count((label, bench)) > 1}
    out = []
    for label, (path, _) in zip(labels, results):
        folder = path.parent.name if path.name == METRICS_FILE else path.name
        out.append(f"{label} [{folder}]" if label in clash else label)
    if len(set(zip(out, (m["benchmark"] for _, m in results)))) < len(results):
        raise InputError("several results have the same model, benchmark and run folder name; pass distinct runs")
    return out


def compare_results(paths: Sequence[str | os.PathLike], paper: str | None = None) -> Comparison:
    """The comparison of the runs at ``paths`` (folders or metrics files); ``paper`` = "2B" or "8B" adds the
    published SAIL-VL2 column. Rows: the benchmarks in order of first appearance, then the OpenCompass average
    when a column has all 8 of its benchmarks."""
    if not paths:
        raise InputError("give at least one result folder or metrics.json to compare")
    if paper is not None and paper not in ("2B", "8B"):
        raise InputError(f"paper must be '2B' or '8B', got {paper!r}")
    results = [(Path(p), load_metrics(p)) for p in paths]
    labels = _labels(results)
    columns = list(dict.fromkeys(labels))
    rows = list(dict.fromkeys(str(m["benchmark"]) for _, m in results))
    values: dict[str, dict[str, float]] = {}
    for label, (_, metrics) in zip(labels, results):
        values.setdefault(str(metrics["benchmark"]), {})[label] = float(metrics["score"])
    for column in columns:
        # OCRBench enters opencompass_average as its 0-1000 score; ours is in percent.
        scores = {r: v[column] * (10 if _paper_row(r) == "OCRBench" else 1) for r, v in values.items() if column in v}
        try:
            average = opencompass_average(scores)
        except InputError:  # the same benchmark under two names: no average
            average = None
        if average is not None:
            values.setdefault(_OPENCOMPASS_ROW, {})[column] = average
    reference = None
    if paper is not None:
        reference = f"SAIL-VL2-{paper} (paper)"
        columns.append(reference)
        for row in rows:
            paper_row = _paper_row(row)
            if paper_row is not None:
                values.setdefault(row, {})[reference] = PAPER_RESULTS[paper_row][paper]
        values.setdefault(_OPENCOMPASS_ROW, {})[reference] = PAPER_RESULTS[_OPENCOMPASS_ROW][paper]
    if _OPENCOMPASS_ROW in values and any(c != reference for c in values[_OPENCOMPASS_ROW]):
        rows.append(_OPENCOMPASS_ROW)
    return Comparison(rows, columns, values, reference)


def plot_comparison(comparison: Comparison, path: str | os.PathLike) -> Path:
    """Grouped bars: one group per benchmark, one bar per column (the paper column hatched). PNG, atomic."""
    rows, columns = comparison.rows, comparison.columns
    figure = _figure(max(6.0, 1.0 + 0.45 * len(rows) * max(1, len(columns))), 4.5)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(columns))
    for k, column in enumerate(columns):
        xs = [i + (k - (len(columns) - 1) / 2) * width for i in range(len(rows))]
        heights = [comparison.values.get(row, {}).get(column, 0.0) for row in rows]
        hatch = "//" if column == comparison.reference else None
        axes.bar(xs, heights, width, label=column, hatch=hatch, edgecolor="black", linewidth=0.4)
    axes.set_xticks(range(len(rows)), rows, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(0, 100)
    axes.set_ylabel("score (%)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def write_comparison(comparison: Comparison, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``comparison.md``, ``comparison.json`` and ``comparison.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", comparison.markdown())
    data = {"rows": comparison.rows, "columns": comparison.columns, "values": comparison.values,
            "reference": comparison.reference}
    return {"markdown": out / "comparison.md", "json": write_json(out / "comparison.json", data),
            "chart": plot_comparison(comparison, out / "comparison.png")}
