"""Bar, line and pie charts and small tables, drawn with PIL from known integer values.

Every value is printed on the chart (above a bar or point, in the pie's legend, in the table cell), so a
read-out question has one right answer that is visible in the pixels, as in most chart-QA data; the model
still has to find the right label and tie it to its value.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw

from .scene import COLOURS, draw_text, text_size

__all__ = ["CHART_KINDS", "ChartScene", "TableScene", "sample_chart_scene", "sample_table_scene"]

CHART_KINDS = ("bar", "line", "pie")
_LABEL_SETS = (
    ("A", "B", "C", "D", "E"),
    ("Jan", "Feb", "Mar", "Apr", "May"),
    ("Ann", "Bob", "Cat", "Dan", "Eve"),
    ("Red", "Blue", "Gold", "Jade", "Rust"),
    ("Mon", "Tue", "Wed", "Thu", "Fri"),
)
_TITLES = ("Sales", "Votes", "Scores", "Visits", "Points")
_TABLE_COLUMNS = (("Price", "Qty", "Stock"), ("Mon", "Tue", "Wed"), ("Math", "Art", "Music"),
                  ("2021", "2022", "2023"), ("Won", "Lost", "Drawn"))
_TABLE_ROWS = (("Apple", "Pear", "Plum", "Kiwi"), ("Ann", "Bob", "Cat", "Dan"), ("North", "South", "East", "West"),
               ("Team A", "Team B", "Team C", "Team D"))
# The pie needs one distinct colour per wedge; black would hide the wedge borders.
_PIE_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple")
_INK = (20, 20, 20)
_LABEL_SIZE = 13


@dataclass(frozen=True)
class ChartScene:
    width: int
    height: int
    chart: str  # "bar", "line" or "pie"
    title: str
    labels: tuple[str, ...]
    values: tuple[int, ...]
    colours: tuple[str, ...]  # bar/line: one colour; pie: one per wedge
    type: str = "chart"

    def signatures(self) -> list[tuple]:
        return [("chart", self.chart, self.labels, self.values)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"], data["values"], data["colours"] = list(self.labels), list(self.values), list(self.colours)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChartScene":
        return cls(data["width"], data["height"], data["chart"], data["title"], tuple(data["labels"]),
                   tuple(data["values"]), tuple(data["colours"]))

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        _centred(image, self.width // 2, 6, self.title, 16)
        {"bar": self._bars, "line": self._line, "pie": self._pie}[self.chart](image)
        return image

    def _slots(self) -> tuple[list[int], float, int, int]:
        """Category centres, slot width, and the plot's top and baseline rows (bar and line charts)."""
        left, right, top, base = 14, self.width - 14, 48, self.height - 34
        slot = (right - left) / len(self.values)
        return [round(left + slot * (k + 0.5)) for k in range(len(self.values))], slot, top, base

    def _height(self, value: int, top: int, base: int) -> int:
        return round((base - top) * value / max(self.values))

    def _bars(self, image: Image.Image) -> None:
        draw = ImageDraw.Draw(image)
        centres, slot, top, base = self._slots()
        half = max(4, round(slot * 0.3))
        for x, value, label in zip(centres, self.values, self.labels):
            y = base - self._height(value, top, base)
            draw.rectangle((x - half, y, x + half, base), fill=COLOURS[self.colours[0]])
            _centred(image, x, y - 18, str(value), _LABEL_SIZE)
            _centred(image, x, base + 6, label, _LABEL_SIZE)
        draw.line((8, base, self.width - 8, base), fill=_INK, width=1)

    def _line(self, image: Image.Image) -> None:
        draw = ImageDraw.Draw(image)
        centres, _, top, base = self._slots()
        points = [(x, base - self._height(v, top, base)) for x, v in zip(centres, self.values)]
        draw.line(points, fill=COLOURS[self.colours[0]], width=2)
        for (x, y), value, label in zip(points, self.values, self.labels):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=COLOURS[self.colours[0]])
            _centred(image, x, y - 20, str(value), _LABEL_SIZE)
            _centred(image, x, base + 6, label, _LABEL_SIZE)
        draw.line((8, base, self.width - 8, base), fill=_INK, width=1)

    def _pie(self, image: Image.Image) -> None:
        draw = ImageDraw.Draw(image)
        # The legend ("Jade: 23") is laid out first, flush right, so it is never clipped at small tile sizes
        # (168 px for the nano model); the pie takes the room left of it.
        entries = [f"{label}: {value}" for label, value in zip(self.labels, self.values)]
        legend_w = 16 + max(text_size(text, _LABEL_SIZE)[2] - text_size(text, _LABEL_SIZE)[0] for text in entries)
        x0 = min(round(self.width * 0.66), self.width - 4 - legend_w)
        cy = round(self.height * 0.56)
        radius = max(8, min(round(self.width * 0.28), (x0 - 12) // 2, self.height - cy - 6, cy - 30))
        cx = max(radius + 4, (x0 - 4) // 2)
        total, start = sum(self.values), -90.0
        for value, colour in zip(self.values, self.colours):
            end = start + 360.0 * value / total
            draw.pieslice((cx - radius, cy - radius, cx + radius, cy + radius), start, end,
                          fill=COLOURS[colour], outline=(255, 255, 255))
            start = end
        y0 = cy - 11 * len(self.values)
        for k, (text, colour) in enumerate(zip(entries, self.colours)):
            y = y0 + 22 * k
            draw.rectangle((x0, y + 2, x0 + 11, y + 13), fill=COLOURS[colour])
            draw_text(image, (x0 + 16, y), text, _LABEL_SIZE, _INK)


def _centred(image: Image.Image, x: int, y: int, text: str, size: int) -> None:
    left, _, right, _ = text_size(text, size)
    draw_text(image, (x - (right - left) // 2, y), text, size, _INK)


def sample_chart_scene(rng: random.Random, width: int = 224, height: int = 224,
                       chart: str | None = None) -> ChartScene:
    """3-5 categories with integer values 1-30; pies get one distinct colour per wedge."""
    chart = chart or rng.choice(CHART_KINDS)
    n = rng.randint(3, 5)
    labels = rng.choice(_LABEL_SETS)[:n]
    values = tuple(rng.randint(1, 30) for _ in range(n))
    if chart == "pie":
        colours = tuple(rng.sample(_PIE_COLOURS, n))
    else:
        colours = (rng.choice(("red", "orange", "green", "blue", "purple")),)
    return ChartScene(width, height, chart, rng.choice(_TITLES), tuple(labels), values, colours)


@dataclass(frozen=True)
class TableScene:
    width: int
    height: int
    columns: tuple[str, ...]
    rows: tuple[str, ...]
    cells: tuple[tuple[int, ...], ...]  # cells[row][column]
    type: str = "table"

    def signatures(self) -> list[tuple]:
        return [("table", self.columns, self.rows, self.cells)]

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "columns": list(self.columns),
                "rows": list(self.rows), "cells": [list(r) for r in self.cells], "type": self.type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableScene":
        return cls(data["width"], data["height"], tuple(data["columns"]), tuple(data["rows"]),
                   tuple(tuple(r) for r in data["cells"]))

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        left, right = 8, self.width - 8
        label_w = round((right - left) * 0.36)
        col_w = (right - left - label_w) / len(self.columns)
        row_h = 30
        top = (self.height - row_h * (len(self.rows) + 1)) // 2
        draw.rectangle((left, top, right, top + row_h), fill=(225, 225, 225))
        edges = [left, left + label_w] + [round(left + label_w + col_w * (k + 1)) for k in range(len(self.columns))]
        header = ("",) + self.columns
        for r in range(len(self.rows) + 1):
            texts = header if r == 0 else (self.rows[r - 1],) + tuple(str(v) for v in self.cells[r - 1])
            for c, text in enumerate(texts):
                l, t, rr, b = text_size(text, 14)
                x = (edges[c] + edges[c + 1]) // 2 - (rr - l) // 2
                y = top + r * row_h + (row_h - (b - t)) // 2
                draw_text(image, (x, y), text, 14, _INK)
        for r in range(len(self.rows) + 2):
            draw.line((left, top + r * row_h, right, top + r * row_h), fill=_INK)
        for x in edges:
            draw.line((x, top, x, top + row_h * (len(self.rows) + 1)), fill=_INK)
        return image


def sample_table_scene(rng: random.Random, width: int = 224, height: int = 224) -> TableScene:
    """2-4 rows x 2-3 columns of integers 0-99, with named rows and columns."""
    n_rows, n_cols = rng.randint(2, 4), rng.randint(2, 3)
    columns = rng.choice(_TABLE_COLUMNS)[:n_cols]
    rows = rng.choice(_TABLE_ROWS)[:n_rows]
    cells = tuple(tuple(rng.randint(0, 99) for _ in range(n_cols)) for _ in range(n_rows))
    return TableScene(width, height, tuple(columns), tuple(rows), cells)
