"""Code-rendered charts (sailvl2.curation.charts): every QA answer is recomputed here, in plain Python /
numpy, from the ChartSpec data stored in the caption record; the records pass the training engine's
reader and validator; rendering is deterministic per seed."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sailvl2.curation.charts import CHART_TYPES, ChartSpec, render_chart, synthesize_charts
from sailvl2.data.readers import iter_records
from sailvl2.data.records import Record, validate_record
from sailvl2.errors import InputError

COUNT = 48  # six charts per type


@pytest.fixture(scope="module")
def synthesis(tmp_path_factory: pytest.TempPathFactory):
    return synthesize_charts(tmp_path_factory.mktemp("charts") / "out", COUNT, seed=3)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _by_chart(rows: list[dict]) -> dict[str, list[dict]]:
    charts: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        charts[row["id"].rsplit(":", 1)[0]].append(row)
    return charts


def _number(text: str) -> float:
    return float(text.rstrip("%"))


def _argmax(labels, values) -> str:
    best = max(values)
    assert list(values).count(best) == 1, "a tie must not be asked"
    return labels[list(values).index(best)]


def _argmin(labels, values) -> str:
    return _argmax(labels, [-v for v in values])


def _check(spec: ChartSpec, qtype: str, args: list[str], answer: str) -> None:
    """Recompute the answer of one question from the data and compare."""
    labels = list(spec.labels)
    if spec.kind in ("bar", "line", "area", "pie"):
        value = dict(zip(labels, spec.values))
        unit = "%" if spec.kind == "pie" else ""
        expected = {
            "value": lambda: f"{value[args[0]]}{unit}",
            "argmax": lambda: _argmax(labels, spec.values),
            "argmin": lambda: _argmin(labels, spec.values),
            "larger": lambda: args[0] if value[args[0]] > value[args[1]] else args[1],
            "difference": lambda: str(abs(value[args[0]] - value[args[1]])),
            "total": lambda: str(sum(spec.values)),
            "share_sum": lambda: f"{value[args[0]] + value[args[1]]}%",
        }
        if qtype == "average":
            assert abs(_number(answer) - np.mean(spec.values)) <= 0.005
            return
        if qtype == "largest_increase":
            steps = {(labels[i], labels[i + 1]): spec.values[i + 1] - spec.values[i] for i in range(len(labels) - 1)}
            best = max(steps.values())
            assert best > 0 and list(steps.values()).count(best) == 1
            pair = next(p for p, d in steps.items() if d == best)
            assert answer == f"{pair[0]} to {pair[1]}"
            return
        assert answer == expected[qtype]()
    elif spec.kind == "scatter":
        point = dict(zip(labels, spec.points))
        xs, ys = [p[0] for p in spec.points], [p[1] for p in spec.points]
        if qtype == "coordinates":
            assert answer == f"({point[args[0]][0]}, {point[args[0]][1]})"
        elif qtype == "count_above":
            assert int(answer) == len([y for y in ys if y > int(args[0])])
        elif qtype == "correlation":
            r = np.corrcoef(xs, ys)[0, 1]
            assert abs(r) >= 0.5 and answer == ("positive" if r > 0 else "negative")
        else:
            assert answer == {"argmax_y": lambda: _argmax(labels, ys), "argmin_y": lambda: _argmin(labels, ys),
                              "argmax_x": lambda: _argmax(labels, xs)}[qtype]()
    elif spec.kind == "histogram":
        samples, edges = spec.samples[0], spec.bin_edges
        if qtype == "bin_count":
            lo, hi = int(args[0]), int(args[1])
            assert int(answer) == len([s for s in samples if lo <= s < hi])
        elif qtype == "count":
            assert int(answer) == len(samples)
        elif qtype == "count_at_least":
            assert int(answer) == len([s for s in samples if s >= int(args[0])])
        elif qtype == "modal_bin":
            counts, _ = np.histogram(samples, bins=edges)
            assert list(counts).count(counts.max()) == 1
            k = int(counts.argmax())
            assert answer == f"{edges[k]}-{edges[k + 1]}"
        else:
            raise AssertionError(qtype)
    elif spec.kind == "heatmap":
        cells = np.array(spec.cells)
        if qtype == "cell":
            assert int(answer) == cells[labels.index(args[0]), list(spec.columns).index(args[1])]
        elif qtype in ("argmax_cell", "argmin_cell"):
            r, c = np.unravel_index(cells.argmax() if qtype == "argmax_cell" else cells.argmin(), cells.shape)
            assert answer == f"{labels[r]}, {spec.columns[c]}"
        elif qtype == "row_average":
            assert abs(_number(answer) - cells[labels.index(args[0])].mean()) <= 0.005
        elif qtype == "top_row_total":
            assert answer == _argmax(labels, cells.sum(1).tolist())
        else:
            raise AssertionError(qtype)
    elif spec.kind == "box":
        medians = [float(np.median(s)) for s in spec.samples]
        median = dict(zip(labels, medians))
        if qtype == "median":
            assert _number(answer) == median[args[0]]
        elif qtype == "larger_median":
            assert median[args[0]] != median[args[1]]
            assert answer == (args[0] if median[args[0]] > median[args[1]] else args[1])
        else:
            assert answer == {"argmax_median": lambda: _argmax(labels, medians),
                              "argmin_median": lambda: _argmin(labels, medians),
                              "widest_range": lambda: _argmax(labels, [float(np.ptp(s)) for s in spec.samples])}[qtype]()
    else:
        raise AssertionError(spec.kind)


# Questions every chart of a type must get (the others depend on the data having no tie / a clear trend).
ALWAYS = {
    "bar": {"value", "argmax", "argmin", "larger", "difference", "total", "average"},
    "line": {"value", "argmax", "argmin", "larger", "difference", "total", "average"},
    "area": {"value", "argmax", "argmin", "larger", "difference", "total", "average"},
    "pie": {"value", "argmax", "argmin", "larger", "difference", "share_sum"},
    "scatter": {"coordinates", "argmax_y", "argmin_y", "argmax_x", "count_above"},
    "histogram": {"bin_count", "count", "count_at_least"},
    "heatmap": {"cell", "argmax_cell", "argmin_cell", "row_average"},
    "box": {"median"},
}


def test_every_answer_recomputes_from_the_chart_data(synthesis):
    charts = _by_chart(_rows(synthesis.records_path))
    assert len(charts) == COUNT
    seen: dict[str, Counter] = defaultdict(Counter)
    for sample in synthesis.samples:
        rows = charts[sample.id]
        caption, qa_rows = rows[0], rows[1:]
        assert caption["task"] == "caption" and caption["conversations"][1]["value"] == sample.caption
        spec = ChartSpec.from_dict(caption["chart"])
        assert spec == sample.spec
        assert len(qa_rows) == len(sample.qa) >= 3
        for row in qa_rows:
            question, answer = row["conversations"][0]["value"], row["conversations"][1]["value"]
            assert question.startswith("<image>\n") and row["image"] == caption["image"]
            _check(spec, row["qtype"], row["args"], answer)
            seen[spec.kind][row["qtype"]] += 1
        assert ALWAYS[spec.kind] <= {row["qtype"] for row in qa_rows}
    assert set(seen) == set(CHART_TYPES)
    # The data-dependent questions do get asked somewhere in 48 charts.
    for kind, qtype in [("line", "largest_increase"), ("scatter", "correlation"), ("histogram", "modal_bin"),
                        ("heatmap", "top_row_total"), ("box", "argmax_median"), ("box", "widest_range")]:
        assert seen[kind][qtype] > 0, (kind, qtype)


def test_caption_states_the_data(synthesis):
    for sample in synthesis.samples:
        spec, caption = sample.spec, sample.caption
        assert spec.title in caption
        if spec.kind in ("bar", "line", "area"):
            assert all(f"{label} {value}" in caption for label, value in zip(spec.labels, spec.values))
            assert f"add up to {sum(spec.values)}" in caption
        elif spec.kind == "pie":
            assert sum(spec.values) == 100
            assert all(f"{label} {value}%" in caption for label, value in zip(spec.labels, spec.values))
        elif spec.kind == "scatter":
            assert all(f"{name} at ({x}, {y})" in caption for name, (x, y) in zip(spec.labels, spec.points))
        elif spec.kind == "heatmap":
            assert all(f"{col} {v}" in caption for row in spec.cells for col, v in zip(spec.columns, row))
        elif spec.kind == "histogram":
            assert f"distribution of {len(spec.samples[0])} values" in caption


def test_records_are_valid_training_records(synthesis):
    records = list(iter_records(str(synthesis.records_path)))
    assert all(isinstance(r, Record) for r in records)
    assert len(records) == sum(1 + len(s.qa) for s in synthesis.samples)
    assert all(validate_record(r) is None for r in records)
    for sample in synthesis.samples[:8]:
        with Image.open(sample.image) as image:
            assert image.size == (448, 448) and image.format == "PNG"


def test_rendering_is_deterministic_and_seeded(synthesis, tmp_path):
    again = synthesize_charts(tmp_path / "again", 8, seed=3)
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    assert [digest(s.image) for s in again.samples] == [digest(s.image) for s in synthesis.samples[:8]]
    assert _rows(again.records_path) == _rows(synthesis.records_path)[:len(_rows(again.records_path))]
    other = synthesize_charts(tmp_path / "other", 4, seed=4)
    assert [s.spec for s in other.samples] != [s.spec for s in synthesis.samples[:4]]
    assert render_chart(synthesis.samples[0].spec) == Path(synthesis.samples[0].image).read_bytes()


def test_the_data_is_in_the_pixels(synthesis):
    """A bar chart of the same labels with one value doubled renders differently: the picture depends on
    the data, not only on the labels."""
    spec = next(s.spec for s in synthesis.samples if s.spec.kind == "bar")
    changed = dataclasses.replace(spec, values=(spec.values[0] * 2,) + spec.values[1:])
    a = np.asarray(Image.open(io.BytesIO(render_chart(spec))).convert("L"), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(render_chart(changed))).convert("L"), dtype=int)
    assert (a != b).mean() > 0.01


def test_types_subset_and_bad_arguments(tmp_path):
    result = synthesize_charts(tmp_path, 4, seed=0, types=("pie", "box"), qa_per_chart=2)
    assert [s.spec.kind for s in result.samples] == ["pie", "box", "pie", "box"]
    assert all(len(s.qa) <= 2 for s in result.samples)
    with pytest.raises(InputError, match="types"):
        synthesize_charts(tmp_path, 1, types=("radar",))
    with pytest.raises(InputError, match="count"):
        synthesize_charts(tmp_path, -1)
