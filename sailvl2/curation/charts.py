"""Code-rendered chart captions and QA: random data -> matplotlib chart -> (image, caption, QA) records.

PAPER.md 4.1 ("Chart captions") renders chart code over eight chart types and stores (image, caption, QA)
triplets; here the data is drawn at random, the chart rendered from it (matplotlib's Agg canvas, no pyplot
state, fixed size and fonts, PNG without a version stamp: a seed always gives the same bytes), and caption and
answers computed from that data. Every number a question asks about is printed on the chart (bar and point
labels, pie shares, heatmap cells, box medians, histogram counts) or sits on a grid line (scatter points).

:class:`ChartSpec` holds the exact data. Question kinds (``ChartQA.qtype``) per chart type:

* bar: value, argmax, argmin, larger, difference, total, average (line / area: also largest_increase)
* pie (integer percentages summing to 100): value, argmax, argmin, larger, difference, share_sum
* scatter (named points on an integer grid): coordinates, argmax_y, argmin_y, argmax_x, count_above, correlation
* histogram (bins ``[lo, hi)``): bin_count, modal_bin, count, count_at_least
* heatmap: cell, argmax_cell, argmin_cell, top_row_total, row_average
* box (whiskers at min and max): median, argmax_median, argmin_median, larger_median, widest_range

A question whose answer would be a tie is not asked. Numbers are integers or have at most two decimals;
``ChartQA.args`` names what the question refers to, so the answer can be recomputed from the data.
"""

from __future__ import annotations

import io
import json
import os
import random
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["CHART_TYPES", "ChartQA", "ChartSample", "ChartSpec", "ChartSynthesis", "chart_caption",
           "chart_questions", "render_chart", "sample_spec", "synthesize_charts"]

CHART_TYPES = ("bar", "line", "pie", "scatter", "area", "histogram", "heatmap", "box")
_CATEGORY_KINDS = ("bar", "line", "area", "pie")
_SIZE_PX, _DPI = 448, 100  # one 448 x 448 tile (FACTS.md tiling), so the model sees the chart unresized
_RC = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 11, "axes.spines.top": False,
       "axes.spines.right": False}
# (title, x label, y label, noun for one category, labels); line / area charts take the ordered themes only.
_ORDERED = (("Monthly sales", "Month", "Units sold", "month", tuple("Jan Feb Mar Apr May Jun Jul".split())),
            ("Daily rainfall", "Day", "Rainfall (mm)", "day", tuple("Mon Tue Wed Thu Fri Sat Sun".split())),
            ("Yearly revenue", "Year", "Revenue ($M)", "year", tuple(str(y) for y in range(2017, 2024))))
_UNORDERED = (("Fruit harvest", "Fruit", "Tonnes", "fruit", tuple("Apple Pear Plum Cherry Peach Kiwi".split())),
              ("Visitors per city", "City", "Visitors (k)", "city", tuple("Oslo Lima Cairo Perth Quito Riga".split())),
              ("Goals per team", "Team", "Goals", "team", tuple("Lions Tigers Bears Wolves Eagles Hawks".split())))
_PIES = (("Market share", "company", tuple("Acme Globex Initech Umbrella Hooli Stark".split())),
         ("Household budget", "expense", tuple("Rent Food Travel Savings Leisure Other".split())),
         ("Energy mix", "source", tuple("Solar Wind Hydro Gas Coal Nuclear".split())))
_SCATTERS = (("Study time and test score", "Hours studied", "Score"), ("Price and demand", "Price", "Demand"),
             ("Age and height", "Age", "Height"))
_HISTOGRAMS = (("Exam marks", "Mark"), ("Commute times", "Minutes"), ("Daily orders", "Orders"))
_HEATMAPS = (("Sales by region and year", tuple("North South East West Central".split()),
              tuple(str(y) for y in range(2019, 2024))),
             ("Sign-ups by team and day", tuple("Red Blue Green Gold Grey".split()), tuple("Mon Tue Wed Thu Fri".split())))
_BOXES = (("Reaction times by group", "Group", "Time (ms)", tuple("Control Low Medium High Max".split())),
          ("Scores by class", "Class", "Score", tuple("ABCDE")))
_NAMES = {"bar": "A bar chart", "line": "A line chart", "area": "An area chart", "pie": "A pie chart",
          "scatter": "A scatter plot", "histogram": "A histogram", "heatmap": "A heatmap", "box": "A box plot"}
_CAPTION_PROMPTS = ("Describe this chart in detail.", "What does this chart show? Give a detailed description.",
                    "Write a detailed caption for this chart, including its values.")


@dataclass(frozen=True)
class ChartSpec:
    """The exact data a chart was drawn from. Which fields are used depends on ``kind``:
    ``labels`` + ``values`` (bar, line, area; pie percentages), ``labels`` + ``points`` (scatter, one named
    (x, y) per label), ``samples[0]`` + ``bin_edges`` (histogram), ``labels`` (rows) + ``columns`` + ``cells``
    (heatmap, ``cells[row][column]``), ``labels`` + ``samples`` (box, one tuple per group)."""

    kind: str
    title: str
    x_label: str = ""
    y_label: str = ""
    noun: str = "category"  # what one label is, for question wording
    labels: tuple[str, ...] = ()
    values: tuple[int, ...] = ()
    points: tuple[tuple[int, int], ...] = ()
    samples: tuple[tuple[int, ...], ...] = ()
    bin_edges: tuple[int, ...] = ()
    columns: tuple[str, ...] = ()
    cells: tuple[tuple[int, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChartSpec":
        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value
        return cls(**{key: tuples(value) for key, value in data.items()})


@dataclass(frozen=True)
class ChartQA:
    """One question about a chart; ``args`` are the labels (or threshold) it names, in question order."""

    qtype: str
    question: str
    answer: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChartSample:
    id: str
    image: Path
    spec: ChartSpec
    caption: str
    qa: tuple[ChartQA, ...]


@dataclass(frozen=True)
class ChartSynthesis:
    records_path: Path  # JSONL: per chart one caption record, then one record per QA pair
    samples: tuple[ChartSample, ...]


# --------------------------------------------------------------------------------------------- sampling


def _unique_extremes(values: Sequence[float]) -> bool:
    return values.count(max(values)) == 1 and values.count(min(values)) == 1  # type: ignore[attr-defined]


def _percentages(rng: random.Random, n: int) -> tuple[int, ...]:
    """n distinct integer percentages, each >= 3 (a visible wedge), summing to exactly 100."""
    while True:
        cuts = sorted(rng.sample(range(1, 100), n - 1))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, 100])]
        if len(set(parts)) == n and min(parts) >= 3:
            return tuple(parts)


def sample_spec(kind: str, rng: random.Random) -> ChartSpec:
    """Random data for one chart of ``kind`` (one of :data:`CHART_TYPES`)."""
    if kind in ("bar", "line", "area"):
        theme = rng.choice(_ORDERED if kind != "bar" else _ORDERED + _UNORDERED)
        title, x_label, y_label, noun, pool = theme
        n = rng.randint(4, min(7, len(pool)))
        values = tuple(rng.sample(range(5, 100), n))  # distinct: every comparison has one answer
        labels = pool[:n] if theme in _ORDERED else tuple(rng.sample(pool, n))
        return ChartSpec(kind, title, x_label, y_label, noun, labels, values)
    if kind == "pie":
        title, noun, pool = rng.choice(_PIES)
        n = rng.randint(3, 6)
        return ChartSpec(kind, title, noun=noun, labels=tuple(rng.sample(pool, n)), values=_percentages(rng, n))
    if kind == "scatter":
        title, x_label, y_label = rng.choice(_SCATTERS)
        n, slope = rng.randint(5, 8), rng.choice((0.8, -0.8, 0.0))
        xs = rng.sample(range(0, 11), n)
        while True:
            ys = [min(10, max(0, round(5 + slope * (x - 5) + rng.gauss(0, 1.5)))) for x in xs]
            if _unique_extremes(ys):
                break
        return ChartSpec(kind, title, x_label, y_label, "point", tuple("ABCDEFGH"[:n]), points=tuple(zip(xs, ys)))
    if kind == "histogram":
        title, x_label = rng.choice(_HISTOGRAMS)
        width, bins, low = rng.choice((5, 10)), rng.randint(5, 8), rng.choice((0, 10, 20))
        edges = tuple(low + width * k for k in range(bins + 1))
        mu, sigma = rng.uniform(edges[0] + 1.5 * width, edges[-1] - 1.5 * width), width * rng.uniform(1.0, 2.0)
        samples = tuple(min(edges[-1] - 1, max(edges[0], round(rng.gauss(mu, sigma))))
                        for _ in range(rng.randint(30, 80)))
        return ChartSpec(kind, title, x_label, "Count", "bin", samples=(samples,), bin_edges=edges)
    if kind == "heatmap":
        title, rows, columns = rng.choice(_HEATMAPS)
        r, c = rng.randint(3, 5), rng.randint(3, 5)
        flat = rng.sample(range(0, 100), r * c)
        cells = tuple(tuple(flat[i * c:(i + 1) * c]) for i in range(r))
        return ChartSpec(kind, title, noun="cell", labels=rows[:r], columns=columns[:c], cells=cells)
    if kind == "box":
        title, x_label, y_label, pool = rng.choice(_BOXES)
        groups = [(rng.randint(25, 75), rng.uniform(4, 14), rng.randint(12, 25)) for _ in range(rng.randint(3, 5))]
        samples = tuple(tuple(min(100, max(0, round(rng.gauss(centre, spread)))) for _ in range(size))
                        for centre, spread, size in groups)
        return ChartSpec(kind, title, x_label, y_label, "group", pool[:len(groups)], samples=samples)
    raise InputError(f"unknown chart type {kind!r}; expected one of {CHART_TYPES}")


# --------------------------------------------------------------------------------------------- rendering


def _num(value: float) -> str:
    """Integers without a decimal point, anything else rounded to two decimals, trailing zeros cut."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _bin_counts(spec: ChartSpec) -> list[int]:
    edges = spec.bin_edges
    return [sum(edges[k] <= s < edges[k + 1] for s in spec.samples[0]) for k in range(len(edges) - 1)]


def _draw(spec: ChartSpec, ax: Any) -> None:
    n = range(len(spec.labels))
    if spec.kind == "bar":
        ax.bar_label(ax.bar(n, spec.values, color="#4C72B0"), fontsize=8)
    elif spec.kind in ("line", "area"):
        if spec.kind == "area":
            ax.fill_between(n, spec.values, color="#55A868", alpha=0.45)
        ax.plot(n, spec.values, marker="o", color="#2F5D8A" if spec.kind == "line" else "#2E7D43")
        for i, v in zip(n, spec.values):
            ax.annotate(str(v), (i, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    if spec.kind in ("bar", "line", "area"):
        ax.set_xticks(list(n), spec.labels, fontsize=8)
        ax.set_ylim(0, max(spec.values) * 1.18)
    elif spec.kind == "pie":
        ax.pie(spec.values, labels=[f"{label}\n{v}%" for label, v in zip(spec.labels, spec.values)],
               startangle=90, counterclock=False, textprops={"fontsize": 8})
        ax.set_aspect("equal")
    elif spec.kind == "scatter":
        xs, ys = zip(*spec.points)
        ax.scatter(xs, ys, color="#C44E52", zorder=3)
        for name, (x, y) in zip(spec.labels, spec.points):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=9, weight="bold")
        ax.set_xlim(-0.5, 10.5), ax.set_ylim(-0.5, 10.5)
        ax.set_xticks(range(11)), ax.set_yticks(range(11))
        ax.grid(True, color="#DDDDDD", zorder=0)
    elif spec.kind == "histogram":
        edges = spec.bin_edges
        ax.bar_label(ax.bar(edges[:-1], _bin_counts(spec), width=edges[1] - edges[0], align="edge",
                            color="#8172B2", edgecolor="white"), fontsize=8)
        ax.set_xticks(list(edges))
        ax.set_ylim(0, max(_bin_counts(spec)) * 1.18)
    elif spec.kind == "heatmap":
        ax.imshow(spec.cells, cmap="viridis", vmin=0, vmax=99)
        for r, row in enumerate(spec.cells):
            for c, value in enumerate(row):
                ax.text(c, r, str(value), ha="center", va="center", fontsize=9,
                        color="black" if value > 60 else "white")
        ax.set_xticks(range(len(spec.columns)), spec.columns)
        ax.set_yticks(range(len(spec.labels)), spec.labels)
    elif spec.kind == "box":
        ax.boxplot(spec.samples, whis=(0, 100), showfliers=False, tick_labels=spec.labels)
        for i, group in enumerate(spec.samples, start=1):
            ax.text(i, max(group) + 2, f"m={_num(statistics.median(group))}", ha="center", fontsize=8)
        ax.set_ylim(min(map(min, spec.samples)) - 5, max(map(max, spec.samples)) + 9)
    ax.set_title(spec.title)
    ax.set_xlabel(spec.x_label)
    ax.set_ylabel(spec.y_label)


def render_chart(spec: ChartSpec) -> bytes:
    """The chart as PNG bytes (448 x 448 px); the same spec always gives the same bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(_SIZE_PX / _DPI, _SIZE_PX / _DPI), dpi=_DPI)
        FigureCanvasAgg(figure)
        _draw(spec, figure.add_subplot())
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: stable bytes
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------- captions


def _listing(labels: Sequence[str], values: Sequence[Any], unit: str = "") -> str:
    return ", ".join(f"{label} {_num(v)}{unit}" for label, v in zip(labels, values))


def chart_caption(spec: ChartSpec) -> str:
    """A detailed caption stating every value of the chart and its extremes, computed from the data."""
    head = f'{_NAMES[spec.kind]} titled "{spec.title}"'
    axes = f" with {spec.x_label} on the x-axis and {spec.y_label} on the y-axis" if spec.x_label else ""
    L, V = spec.labels, spec.values
    if spec.kind in ("bar", "line", "area"):
        top, low = L[V.index(max(V))], L[V.index(min(V))]
        return (f"{head}{axes}. It shows {len(V)} values: {_listing(L, V)}. The highest is {top} ({max(V)}) and "
                f"the lowest is {low} ({min(V)}); together they add up to {sum(V)}.")
    if spec.kind == "pie":
        top = L[V.index(max(V))]
        return (f"{head} splits the whole into {len(V)} {spec.noun} shares: {_listing(L, V, '%')}. "
                f"{top} has the largest share.")
    if spec.kind == "scatter":
        points = ", ".join(f"{name} at ({x}, {y})" for name, (x, y) in zip(L, spec.points))
        return f"{head}{axes} plots {len(L)} labelled points: {points}."
    if spec.kind == "histogram":
        edges, counts = spec.bin_edges, _bin_counts(spec)
        bins = ", ".join(f"{edges[k]}-{edges[k + 1]}: {c}" for k, c in enumerate(counts))
        return (f"{head} shows the distribution of {len(spec.samples[0])} values of {spec.x_label} in bins of "
                f"width {edges[1] - edges[0]}. Counts per bin: {bins}.")
    if spec.kind == "heatmap":
        rows = "; ".join(f"{row}: {_listing(spec.columns, cells)}" for row, cells in zip(L, spec.cells))
        return f"{head} has rows {', '.join(L)} and columns {', '.join(spec.columns)}. Cell values: {rows}."
    groups = "; ".join(f"{label}: median {_num(statistics.median(s))}, from {min(s)} to {max(s)}"
                       for label, s in zip(L, spec.samples))
    return f"{head}{axes} compares {len(L)} groups. {groups}."


# --------------------------------------------------------------------------------------------- questions


def _category_questions(spec: ChartSpec, rng: random.Random) -> list[ChartQA]:
    L, V, noun = spec.labels, spec.values, spec.noun
    pie = spec.kind == "pie"
    unit = "%" if pie else ""
    a, b = rng.sample(range(len(L)), 2)
    value_q = f"What share does {L[a]} have?" if pie else f"What is the value for {L[a]}?"
    qa = [ChartQA("value", value_q, f"{V[a]}{unit}", (L[a],)),
          ChartQA("argmax", f"Which {noun} has the {'largest share' if pie else 'highest value'}?", L[V.index(max(V))]),
          ChartQA("argmin", f"Which {noun} has the {'smallest share' if pie else 'lowest value'}?", L[V.index(min(V))]),
          ChartQA("larger", f"Which is larger, {L[a]} or {L[b]}?", L[a] if V[a] > V[b] else L[b], (L[a], L[b])),
          ChartQA("difference", f"What is the difference between {L[a]} and {L[b]}"
                  f"{' in percentage points' if pie else ''}?", str(abs(V[a] - V[b])), (L[a], L[b]))]
    if pie:
        qa.append(ChartQA("share_sum", f"What share do {L[a]} and {L[b]} have together?", f"{V[a] + V[b]}%",
                          (L[a], L[b])))
        return qa
    qa += [ChartQA("total", "What is the total of all values?", str(sum(V))),
           ChartQA("average", f"What is the average value across all {noun}s?", _num(round(sum(V) / len(V), 2)))]
    if spec.kind in ("line", "area"):
        steps = [V[i + 1] - V[i] for i in range(len(V) - 1)]
        if max(steps) > 0 and steps.count(max(steps)) == 1:
            i = steps.index(max(steps))
            qa.append(ChartQA("largest_increase", f"Between which two consecutive {noun}s is the largest increase?",
                              f"{L[i]} to {L[i + 1]}"))
    return qa


def chart_questions(spec: ChartSpec, rng: random.Random) -> list[ChartQA]:
    """Every question kind of the chart's type (module docstring) with its answer computed from ``spec``."""
    if spec.kind in _CATEGORY_KINDS:
        return _category_questions(spec, rng)
    L = spec.labels
    if spec.kind == "scatter":
        a, xs, ys = rng.randrange(len(L)), [p[0] for p in spec.points], [p[1] for p in spec.points]
        t = rng.randint(3, 7)
        qa = [ChartQA("coordinates", f"What are the coordinates of point {L[a]}?",
                      f"({spec.points[a][0]}, {spec.points[a][1]})", (L[a],)),
              ChartQA("argmax_y", f"Which point has the highest {spec.y_label} value?", L[ys.index(max(ys))]),
              ChartQA("argmin_y", f"Which point has the lowest {spec.y_label} value?", L[ys.index(min(ys))]),
              ChartQA("argmax_x", f"Which point has the highest {spec.x_label} value?", L[xs.index(max(xs))]),
              ChartQA("count_above", f"How many points have a {spec.y_label} value greater than {t}?",
                      str(sum(y > t for y in ys)), (str(t),))]
        r = statistics.correlation(xs, ys)  # Pearson; xs distinct and ys not constant (unique extremes)
        if abs(r) >= 0.5:  # only a clear trend has a right answer
            qa.append(ChartQA("correlation", f"Is the relationship between {spec.x_label} and {spec.y_label} "
                              f"positive or negative?", "positive" if r > 0 else "negative"))
        return qa
    if spec.kind == "histogram":
        edges, counts = spec.bin_edges, _bin_counts(spec)
        k, cut = rng.randrange(len(counts)), rng.randrange(1, len(counts))
        qa = [ChartQA("bin_count", f"How many values fall in the bin from {edges[k]} to {edges[k + 1]}?",
                      str(counts[k]), (str(edges[k]), str(edges[k + 1]))),
              ChartQA("count", "How many values does the histogram show in total?", str(sum(counts))),
              ChartQA("count_at_least", f"How many values are {edges[cut]} or more?", str(sum(counts[cut:])),
                      (str(edges[cut]),))]
        if counts.count(max(counts)) == 1:
            m = counts.index(max(counts))
            qa.append(ChartQA("modal_bin", "Which bin contains the most values?", f"{edges[m]}-{edges[m + 1]}"))
        return qa
    if spec.kind == "heatmap":
        flat = [(v, r, c) for r, row in enumerate(spec.cells) for c, v in enumerate(row)]
        (_, r0, c0), (_, r1, c1) = max(flat), min(flat)
        r, c = rng.randrange(len(L)), rng.randrange(len(spec.columns))
        qa = [ChartQA("cell", f"What is the value in row {L[r]}, column {spec.columns[c]}?", str(spec.cells[r][c]),
                      (L[r], spec.columns[c])),
              ChartQA("argmax_cell", "Which row and column hold the highest value?", f"{L[r0]}, {spec.columns[c0]}"),
              ChartQA("argmin_cell", "Which row and column hold the lowest value?", f"{L[r1]}, {spec.columns[c1]}"),
              ChartQA("row_average", f"What is the average value of row {L[r]}?",
                      _num(round(sum(spec.cells[r]) / len(spec.cells[r]), 2)), (L[r],))]
        totals = [sum(row) for row in spec.cells]
        if totals.count(max(totals)) == 1:
            qa.append(ChartQA("top_row_total", "Which row has the largest total?", L[totals.index(max(totals))]))
        return qa
    if spec.kind == "box":
        medians = [statistics.median(s) for s in spec.samples]
        ranges = [max(s) - min(s) for s in spec.samples]
        a, b = rng.sample(range(len(L)), 2)
        qa = [ChartQA("median", f"What is the median of {L[a]}?", _num(medians[a]), (L[a],))]
        if _unique_extremes(medians):
            qa += [ChartQA("argmax_median", "Which group has the highest median?", L[medians.index(max(medians))]),
                   ChartQA("argmin_median", "Which group has the lowest median?", L[medians.index(min(medians))])]
        if medians[a] != medians[b]:
            qa.append(ChartQA("larger_median", f"Which group has the higher median, {L[a]} or {L[b]}?",
                              L[a] if medians[a] > medians[b] else L[b], (L[a], L[b])))
        if ranges.count(max(ranges)) == 1:
            qa.append(ChartQA("widest_range", "Which group has the widest range from minimum to maximum?",
                              L[ranges.index(max(ranges))]))
        return qa
    raise InputError(f"unknown chart type {spec.kind!r}; expected one of {CHART_TYPES}")


# --------------------------------------------------------------------------------------------- records


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)


def _records(sample: ChartSample, image: str, prompt: str) -> list[dict[str, Any]]:
    def record(suffix: str, question: str, answer: str, **extra: Any) -> dict[str, Any]:
        return {"id": f"{sample.id}:{suffix}", "image": image, "kind": "direct",
                "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                  {"from": "gpt", "value": answer}], "source": "chart_synthesis", **extra}

    rows = [record("caption", prompt, sample.caption, task="caption", chart=sample.spec.to_dict())]
    rows += [record(f"qa{k}", qa.question, qa.answer, task="chart_qa", qtype=qa.qtype, args=list(qa.args))
             for k, qa in enumerate(sample.qa)]
    return rows


def synthesize_charts(out_dir: str | os.PathLike, count: int, seed: int = 0,
                      types: Sequence[str] = CHART_TYPES, qa_per_chart: int | None = None) -> ChartSynthesis:
    """Render ``count`` charts into ``out_dir/images/`` and write ``out_dir/charts.jsonl`` (training records:
    per chart a caption record, then its QA records, image paths relative to ``out_dir``).

    Chart k has type ``types[k % len(types)]`` and its own random stream (seeded by ``seed`` and k), so a chart
    does not change when ``count`` does. ``qa_per_chart`` keeps a random subset of the questions (None: all).
    """
    unknown = [kind for kind in types if kind not in CHART_TYPES]
    if not types or unknown:
        raise InputError(f"types must be a non-empty list of {CHART_TYPES}, got {list(types)!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InputError(f"count must be an integer >= 0, got {count!r}")
    if qa_per_chart is not None and qa_per_chart < 0:
        raise InputError(f"qa_per_chart must be >= 0 or None, got {qa_per_chart!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    samples, lines = [], []
    for index in range(count):
        rng = random.Random(f"sailvl2-chart:{seed}:{index}")
        spec = sample_spec(types[index % len(types)], rng)
        questions = chart_questions(spec, rng)
        if qa_per_chart is not None and qa_per_chart < len(questions):
            questions = rng.sample(questions, qa_per_chart)
        name = f"images/chart-{index:06d}-{spec.kind}.png"
        _write_atomic(out / name, render_chart(spec))
        sample = ChartSample(f"chart-{seed}-{index:06d}", out / name, spec, chart_caption(spec), tuple(questions))
        samples.append(sample)
        lines += [json.dumps(row, ensure_ascii=False) for row in _records(sample, name, rng.choice(_CAPTION_PROMPTS))]
    records_path = out / "charts.jsonl"
    _write_atomic(records_path, "".join(line + "\n" for line in lines).encode("utf-8"))
    return ChartSynthesis(records_path, tuple(samples))
