"""The curation report: what each stage did, score distributions, examples, throughput.

Written into the output folder by the runner after the curated data:

* ``report.json`` - counts per stage (in / kept / dropped / generated: new records a map stage made from
  its items, which reach the next stage besides the kept ones) and per reason category (the text before the
  first ``": "`` of a reason, as in :func:`sailvl2.data.records.reason_category`), a summary and histogram
  of every numeric score (split by the record's final fate: kept or dropped), throughput (records/s per
  stage = records in / seconds the stage spent on them, summed over workers; overall = records read / wall
  seconds of the run; map phase = records / seconds from the first shard start to the last shard end);
* ``report.md`` - the same as tables, linking the pictures below;
* ``report/score-<name>.png`` - one histogram per score (matplotlib, Agg backend);
* ``report/contact_sheet.png`` and ``report/contact_sheet.html`` - kept examples (spread evenly over the
  output) and dropped ones (round robin over (stage, reason) so every reason shows), labelled with the id
  and the scores / the reason; the HTML links the images by relative path.

Images are opened defensively (bomb guard, any decode error -> a labelled blank tile): a report never fails
on the bad images it is reporting about.
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps


__all__ = ["write_report"]

_TILE = 160  # contact-sheet thumbnail side, pixels
_LABEL_LINES = 3
_BINS = 20


def write_report(root: str | os.PathLike, stage_names: Sequence[str], decision_files: Sequence[Path],
                 data_files: Sequence[Path], info: dict[str, Any], examples: int = 16) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and the pictures under ``root``; returns the JSON content."""
    from ..data.records import reason_category  # here: sailvl2.data imports torch, workers import this module

    root = Path(root)
    pictures = root / "report"
    pictures.mkdir(parents=True, exist_ok=True)
    stages = {name: _counts() for name in stage_names}
    scores: dict[str, list[float]] = defaultdict(list)
    score_ids: dict[str, list[str]] = defaultdict(list)
    dropped: dict[str, dict[str, Any]] = {}
    for path in decision_files:
        for row in _rows(path):
            counts = stages.setdefault(row["stage"], _counts())
            counts["in"] += 1
            counts["kept" if row["kept"] else "dropped"] += 1
            counts["generated"] += len(row.get("generated") or ())
            if not row["kept"]:
                counts["reasons"][reason_category(row["reason"] or "unspecified")] += 1
                dropped[row["id"]] = row
            for name, value in (row.get("scores") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    scores[name].append(float(value))
                    score_ids[name].append(row["id"])
    kept_rows = [row for path in data_files for row in _rows(path)]
    read = stages.get("read")
    if read is not None:  # unreadable items only leave "read" decisions; everything else passed reading
        read["in"], read["kept"] = info["inputs"], info["inputs"] - read["dropped"]
    for name, counts in stages.items():
        stats = info.get("stage_stats", {}).get(name)
        counts["reasons"] = dict(sorted(counts["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
        if stats and stats.get("summary") is not None:  # a global stage's own summary (stats.json)
            counts["summary"] = stats["summary"]
        if stats and stats.get("seconds"):
            counts["seconds"] = stats["seconds"]
            counts["records_per_s"] = stats["in"] / stats["seconds"]
    score_report = {name: _score_summary(name, values, [i in dropped for i in score_ids[name]], pictures)
                    for name, values in sorted(scores.items())}
    wall, window = info.get("wall_seconds") or 0.0, info.get("map_window")
    report = {
        "inputs": info["inputs"], "generated": sum(counts["generated"] for counts in stages.values()),
        "kept": len(kept_rows), "dropped": len(dropped),
        "stages": [{"name": name, **counts} for name, counts in stages.items() if name != "read" or counts["dropped"]],
        "scores": score_report,
        "throughput": {"engine": info.get("engine"), "workers": info.get("workers"), "wall_seconds": wall,
                       "overall_records_per_s": info["inputs"] / wall if wall > 0 else None,
                       "map_phase_records_per_s": window["items"] / window["seconds"]
                       if window and window["seconds"] > 0 else None,
                       "resumed_shards": info.get("resumed_shards", 0), "shards": info.get("shards")},
        "images": info.get("images"),
        "data_files": [os.path.relpath(p, root) for p in data_files],
    }
    report["contact_sheet"] = _contact_sheet(root, pictures, _spread(kept_rows, examples),
                                             _round_robin(list(dropped.values()), examples))
    _write_text(root / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_text(root / "report.md", _markdown(report))
    return report


def _counts() -> dict[str, Any]:
    return {"in": 0, "kept": 0, "dropped": 0, "generated": 0, "reasons": Counter()}


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


# --------------------------------------------------------------------------------------------- scores


def _score_summary(name: str, values: list[float], dropped: list[bool], pictures: Path) -> dict[str, Any]:
    data, fate = np.asarray(values), np.asarray(dropped, dtype=bool)
    low, high = float(data.min()), float(data.max())
    if np.all(data == np.round(data)) and high - low <= 40:  # small integer scores: one bar per value
        edges = np.arange(low - 0.5, high + 1.5)
    else:
        edges = np.linspace(low, high if high > low else low + 1.0, _BINS + 1)
    kept_counts = np.histogram(data[~fate], edges)[0]
    dropped_counts = np.histogram(data[fate], edges)[0]
    png = pictures / f"score-{_safe(name)}.png"
    _histogram_png(png, name, edges, kept_counts, dropped_counts)
    return {"count": int(data.size), "min": low, "max": high, "mean": float(data.mean()),
            "histogram": {"edges": edges.tolist(), "kept": kept_counts.tolist(), "dropped": dropped_counts.tolist()},
            "png": os.path.relpath(png, pictures.parent)}


def _histogram_png(path: Path, name: str, edges: np.ndarray, kept: np.ndarray, dropped: np.ndarray) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    widths, lefts = np.diff(edges), edges[:-1]
    axes.bar(lefts, kept, widths, align="edge", color="#3a7d44", label="kept")
    axes.bar(lefts, dropped, widths, bottom=kept, align="edge", color="#c0392b", label="dropped")
    axes.set_xlabel(name)
    axes.set_ylabel("records")
    axes.set_title(f"score {name}")
    axes.legend()
    figure.tight_layout()
    temp = path.with_name(f"{path.name}.tmp{os.getpid()}.png")
    figure.savefig(temp)
    os.replace(temp, path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


# --------------------------------------------------------------------------------------------- examples


def _spread(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` kept examples evenly spaced over the output, each {id, image, label}."""
    if not rows or count <= 0:
        return []
    if len(rows) <= count:
        picks = list(range(len(rows)))
    else:
        picks = sorted({round(i * (len(rows) - 1) / max(count - 1, 1)) for i in range(count)})
    examples = []
    for row in (rows[i] for i in picks):
        image = row.get("image")
        image = image[0] if isinstance(image, list) and image else image
        scores = (row.get("curation") or {}).get("scores") or {}
        label = " ".join(f"{k}={_number(v)}" for k, v in scores.items()) or "kept"
        examples.append({"id": str(row["id"]), "image": image if isinstance(image, str) else None, "label": label})
    return examples


def _round_robin(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` dropped examples, taking one of each (stage, reason category) in turn."""
    from ..data.records import reason_category

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["stage"], reason_category(row["reason"] or ""))].append(row)
    picked, depth = [], 0
    while len(picked) < count and any(depth < len(g) for g in groups.values()):
        picked += [g[depth] for g in groups.values() if depth < len(g)][: count - len(picked)]
        depth += 1
    return [{"id": str(r["id"]), "image": r.get("image"), "label": f"{r['stage']}: {r['reason']}"} for r in picked]


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _thumbnail(path: str | None) -> Image.Image | None:
    if not path:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb is refused, not decoded
            with Image.open(path) as image:
                image.draft("RGB", (_TILE, _TILE))  # JPEG: decode at reduced size
                image = ImageOps.exif_transpose(image)
                image.thumbnail((_TILE, _TILE))
                return image.convert("RGB")
    except Exception:  # noqa: BLE001 - corrupt, truncated, empty, bomb: shown as a blank tile
        return None


def _contact_sheet(root: Path, pictures: Path, kept: list[dict[str, Any]],
                   dropped: list[dict[str, Any]]) -> dict[str, str]:
    columns, line_height = 6, 12
    cell_h = _TILE + line_height * _LABEL_LINES + 8
    sections = [("kept", kept), ("dropped", dropped)]
    rows_per = [max(1, math.ceil(len(items) / columns)) for _, items in sections]
    header = 22
    sheet = Image.new("RGB", (columns * (_TILE + 8) + 8, sum(header + r * cell_h for r in rows_per)), "white")
    draw = ImageDraw.Draw(sheet)
    top = 0
    for (title, items), rows in zip(sections, rows_per):
        draw.text((8, top + 5), f"{title} ({len(items)} examples)" if items else f"{title}: none", fill="black")
        top += header
        for index, example in enumerate(items):
            x, y = 8 + (index % columns) * (_TILE + 8), top + (index // columns) * cell_h
            thumb = _thumbnail(example["image"])
            if thumb is None:
                draw.rectangle((x, y, x + _TILE - 1, y + _TILE - 1), fill="#dddddd")
                draw.text((x + 6, y + _TILE // 2 - 6), "no image" if not example["image"] else "unreadable",
                          fill="#555555")
            else:
                sheet.paste(thumb, (x + (_TILE - thumb.width) // 2, y + (_TILE - thumb.height) // 2))
            label = f"{example['id']} | {example['label']}"
            for line in range(_LABEL_LINES):
                text = label[line * 26 : (line + 1) * 26]
                draw.text((x, y + _TILE + 2 + line * line_height), text, fill="black" if line == 0 else "#444444")
        top += rows * cell_h
    png = pictures / "contact_sheet.png"
    temp = pictures / f"contact_sheet.tmp{os.getpid()}.png"
    sheet.save(temp)
    os.replace(temp, png)
    page = pictures / "contact_sheet.html"
    _write_text(page, _html(pictures, sections))
    return {"png": os.path.relpath(png, root), "html": os.path.relpath(page, root)}


def _html(pictures: Path, sections: list[tuple[str, list[dict[str, Any]]]]) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>curation contact sheet</title>",
             "<style>figure{display:inline-block;width:180px;margin:4px;vertical-align:top;font:11px sans-serif}"
             "img{max-width:170px;max-height:170px}</style>"]
    for title, items in sections:
        parts.append(f"<h2>{html.escape(title)} ({len(items)})</h2>")
        for example in items:
            image = example["image"]
            src = html.escape(os.path.relpath(image, pictures)) if image else ""
            tag = f"<img src='{src}' alt='{html.escape(example['id'])}'>" if image else "<div>(no image)</div>"
            parts.append(f"<figure>{tag}<figcaption><b>{html.escape(example['id'])}</b><br>"
                         f"{html.escape(example['label'])}</figcaption></figure>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------- markdown


def _markdown(report: dict[str, Any]) -> str:
    throughput = report["throughput"]
    lines = ["# Curation report", "",
             f"{report['inputs']} records read, {report['generated']} generated, **{report['kept']} kept**, "
             f"{report['dropped']} dropped. "
             f"Curated shards: {', '.join(report['data_files']) or '(none)'} (image paths: {report['images']}).", "",
             "## Stages", "", "| stage | in | kept | dropped | generated | records/s | drop reasons |",
             "|---|---|---|---|---|---|---|"]
    for stage in report["stages"]:
        rate = f"{stage['records_per_s']:.1f}" if "records_per_s" in stage else "-"
        reasons = ", ".join(f"{k}: {v}" for k, v in stage["reasons"].items()) or "-"
        lines.append(f"| {stage['name']} | {stage['in']} | {stage['kept']} | {stage['dropped']} | "
                     f"{stage['generated']} | {rate} | {reasons} |")
    lines += ["", "## Scores", ""]
    if report["scores"]:
        lines += ["| score | records | min | mean | max | histogram |", "|---|---|---|---|---|---|"]
        for name, score in report["scores"].items():
            lines.append(f"| {name} | {score['count']} | {score['min']:.4g} | {score['mean']:.4g} | "
                         f"{score['max']:.4g} | ![{name}]({score['png']}) |")
    else:
        lines.append("No stage reported numeric scores.")
    overall, mapped = throughput["overall_records_per_s"], throughput["map_phase_records_per_s"]
    lines += ["", "## Throughput", "",
              f"- engine {throughput['engine']}, {throughput['workers']} worker(s), wall "
              f"{throughput['wall_seconds']:.2f} s",
              f"- overall: {overall:.1f} records/s" if overall else "- overall: -",
              f"- map phase (first shard start to last shard end): {mapped:.1f} records/s" if mapped
              else "- map phase: no shard computed in this run",
              f"- shards resumed from an earlier run: {throughput['resumed_shards']} of {throughput['shards']}",
              "", "## Examples", "",
              f"![contact sheet]({report['contact_sheet']['png']}) - "
              f"[HTML version with full-size links]({report['contact_sheet']['html']})", ""]
    return "\n".join(lines)
