"""Bar, line and pie charts and small tables, drawn with PIL from known integer values.

Every value is printed on the chart (above a bar or point, in the pie's legend, in the table cell), so a
read-out question has one right answer that is visible in the pixels, as in most chart-QA data; the model
still has to find the right label and tie it to its value.

``slot`` > 0 selects the slot layout, the charts' version of the text scenes' (scene.TextScene): every
character sits centred in its own ``slot``-px cell, so with ``slot`` = the ViT patch size each glyph fills one
patch, the only way the from-scratch nano ViT learned to read (docs/nano-sessions.md, session 9). In the free
layout the nano model read no chart value or table cell at all (0 %, sessions 9-12): 13-px digits at
arbitrary offsets, three to a patch. Each category, legend entry or table cell takes a 2 x 2 block of slots
(one nano LLM token), values have two digits (10-99), and labels one or two characters; a category's value
is printed under its bar, just above its label, so both sit in the same token. There is no title.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw

from .scene import COLOURS, draw_slot_glyphs, draw_text, largest_slot_font, text_size

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
# Slot layout: one slot per character; pies use the one-character sets (a legend entry has one label slot).
_SLOT_LABEL_SETS = (("A", "B", "C", "D", "E"), ("X", "Y", "Z", "W", "V"), ("P", "Q", "R", "S", "T"),
                    ("Jo", "Al", "Bo", "Ed", "Cy"), ("Q1", "Q2", "Q3", "Q4", "Q5"))
_SLOT_TABLE_COLUMNS = (("X", "Y", "Z"), ("Q1", "Q2", "Q3"), ("Lo", "Hi", "Av"), ("M", "T", "W"))
_SLOT_TABLE_ROWS = (("A", "B", "C", "D"), ("N", "S", "E", "W"), ("Al", "Bo", "Cy", "Di"), ("T1", "T2", "T3", "T4"))
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
    slot: int = 0  # > 0: the slot layout (module docstring)

    def signatures(self) -> list[tuple]:
        return [("chart", self.chart, self.labels, self.values)]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"], data["values"], data["colours"] = list(self.labels), list(self.values), list(self.colours)
        if not self.slot:
            del data["slot"]  # free-layout scenes serialise as before the slot layout existed
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChartScene":
        return cls(data["width"], data["height"], data["chart"], data["title"], tuple(data["labels"]),
                   tuple(data["values"]), tuple(data["colours"]), slot=data.get("slot", 0))

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        if not self.slot:
            _centred(image, self.width // 2, 6, self.title, 16)
        {"bar": self._bars, "line": self._line, "pie": self._pie}[self.chart](image)
        if self.slot:
            draw_slot_glyphs(image, self.character_centres(), self.slot, largest_slot_font(self.slot), _INK)
        return image

    def character_centres(self) -> list[tuple[str, float, float]]:
        """(character, x, y) centre of every label and value character (slot layout only). Bar and line
        charts: category k's two value digits on the second-to-last slot row and its label on the last, in
        slot columns 2k and 2k + 1. Pies: legend entry k in the last two slot columns, slot rows 2k (a colour
        swatch, then the label) and 2k + 1 (the value)."""
        if not self.slot:
            raise ValueError("only slot-layout charts track their characters")
        centre = lambda column, row: (self.slot * (column + 0.5), self.slot * (row + 0.5))  # noqa: E731
        columns, rows = self.width // self.slot, self.height // self.slot
        centres = []
        for k, (label, value) in enumerate(zip(self.labels, self.values)):
            if self.chart == "pie":
                places = [(label, columns - 1, 2 * k),
                          *((d, columns - 2 + j, 2 * k + 1) for j, d in enumerate(str(value)))]
            else:
                places = [*((d, 2 * k + j, rows - 2) for j, d in enumerate(str(value))),
                          *((c, 2 * k + j, rows - 1) for j, c in enumerate(label))]
            centres += [(char, *centre(column, row)) for char, column, row in places]
        return centres

    def category_box(self, k: int) -> tuple[int, int, int, int]:
        """Pixel box (x1, y1, x2, y2) of category k's 2 x 2 block of slots, which holds its label and value
        (slot layout only): the one nano LLM token that names and gives the category (the focus box of a
        question about it, training/focus.py)."""
        if not self.slot:
            raise ValueError("only slot-layout charts have one block per category")
        columns, rows = self.width // self.slot, self.height // self.slot
        column, row = (columns - 2, 2 * k) if self.chart == "pie" else (2 * k, rows - 2)
        return (column * self.slot, row * self.slot, (column + 2) * self.slot, (row + 2) * self.slot)

    def _slots(self) -> tuple[list[int], float, int, int]:
        """Category centres, slot width, and the plot's top and baseline rows (bar and line charts)."""
        if self.slot:  # category k over slot columns 2k and 2k + 1, above the value and label rows
            return ([self.slot * (2 * k + 1) for k in range(len(self.values))], 2.0 * self.slot, 4,
                    self.slot * (self.height // self.slot - 2) - 3)
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
            if not self.slot:
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
            if not self.slot:
                _centred(image, x, y - 20, str(value), _LABEL_SIZE)
                _centred(image, x, base + 6, label, _LABEL_SIZE)
        draw.line((8, base, self.width - 8, base), fill=_INK, width=1)

    def _pie(self, image: Image.Image) -> None:
        draw = ImageDraw.Draw(image)
        if self.slot:  # the pie left of the legend's two slot columns; a swatch fills entry k's first slot
            x0 = self.slot * (self.width // self.slot - 2)
            radius = min(x0, self.height) // 2 - 4
            _wedges(draw, x0 // 2, self.height // 2, radius, self.values, self.colours)
            for k, colour in enumerate(self.colours):
                draw.rectangle((x0 + 5, 2 * k * self.slot + 5, x0 + self.slot - 6, (2 * k + 1) * self.slot - 6),
                               fill=COLOURS[colour])
            return
        # The legend ("Jade: 23") is laid out first, flush right, so it is never clipped at small tile sizes
        # (168 px for the nano model); the pie takes the room left of it.
        entries = [f"{label}: {value}" for label, value in zip(self.labels, self.values)]
        legend_w = 16 + max(text_size(text, _LABEL_SIZE)[2] - text_size(text, _LABEL_SIZE)[0] for text in entries)
        x0 = min(round(self.width * 0.66), self.width - 4 - legend_w)
        cy = round(self.height * 0.56)
        radius = max(8, min(round(self.width * 0.28), (x0 - 12) // 2, self.height - cy - 6, cy - 30))
        cx = max(radius + 4, (x0 - 4) // 2)
        _wedges(draw, cx, cy, radius, self.values, self.colours)
        y0 = cy - 11 * len(self.values)
        for k, (text, colour) in enumerate(zip(entries, self.colours)):
            y = y0 + 22 * k
            draw.rectangle((x0, y + 2, x0 + 11, y + 13), fill=COLOURS[colour])
            draw_text(image, (x0 + 16, y), text, _LABEL_SIZE, _INK)


def _wedges(draw: ImageDraw.ImageDraw, cx: int, cy: int, radius: int, values: tuple[int, ...],
            colours: tuple[str, ...]) -> None:
    total, start = sum(values), -90.0
    for value, colour in zip(values, colours):
        end = start + 360.0 * value / total
        draw.pieslice((cx - radius, cy - radius, cx + radius, cy + radius), start, end,
                      fill=COLOURS[colour], outline=(255, 255, 255))
        start = end


def _slot_grid(width: int, height: int, slot: int) -> tuple[int, int]:
    """Slot columns and rows of a slot-layout chart or table; at least 3 x 3 blocks of 2 x 2 slots."""
    columns, rows = width // slot, height // slot
    if columns < 6 or rows < 6:
        raise ValueError(f"a {width}x{height} chart has too few {slot}-px slots (needs 6 x 6)")
    return columns, rows


def _centred(image: Image.Image, x: int, y: int, text: str, size: int) -> None:
    left, _, right, _ = text_size(text, size)
    draw_text(image, (x - (right - left) // 2, y), text, size, _INK)


def sample_chart_scene(rng: random.Random, width: int = 224, height: int = 224,
                       chart: str | None = None, slot: int = 0) -> ChartScene:
    """3-5 categories with integer values 1-30; pies get one distinct colour per wedge. ``slot`` > 0: the
    slot layout (module docstring), with 2 to as many categories as fit (at most 5) and values 10-99."""
    chart = chart or rng.choice(CHART_KINDS)
    if slot:
        columns, rows = _slot_grid(width, height, slot)
        n = rng.randint(2, min(5, rows // 2 if chart == "pie" else columns // 2))
        sets = [labels for labels in _SLOT_LABEL_SETS if chart != "pie" or max(map(len, labels)) == 1]
        labels = rng.choice(sets)[:n]
        values = tuple(rng.randint(10, 99) for _ in range(n))
        colours = (tuple(rng.sample(_PIE_COLOURS, n)) if chart == "pie"
                   else (rng.choice(("red", "orange", "green", "blue", "purple")),))
        return ChartScene(width, height, chart, "", tuple(labels), values, colours, slot=slot)
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
    slot: int = 0  # > 0: the slot layout (module docstring)

    def signatures(self) -> list[tuple]:
        return [("table", self.columns, self.rows, self.cells)]

    def to_dict(self) -> dict[str, Any]:
        data = {"width": self.width, "height": self.height, "columns": list(self.columns),
                "rows": list(self.rows), "cells": [list(r) for r in self.cells], "type": self.type}
        if self.slot:  # left out at 0, so free-layout scenes serialise as before the slot layout existed
            data["slot"] = self.slot
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TableScene":
        return cls(data["width"], data["height"], tuple(data["columns"]), tuple(data["rows"]),
                   tuple(tuple(r) for r in data["cells"]), slot=data.get("slot", 0))

    def character_centres(self) -> list[tuple[str, float, float]]:
        """(character, x, y) centre of every name and value character (slot layout only): table cell (r, c)
        (row 0 = the column names, column 0 = the row names) is the 2 x 2 block of slots from slot (2c, 2r),
        its text on the block's upper slot row."""
        if not self.slot:
            raise ValueError("only slot-layout tables track their characters")
        texts = [("", *self.columns)] + [(name, *map(str, cells)) for name, cells in zip(self.rows, self.cells)]
        return [(char, self.slot * (2 * c + j + 0.5), self.slot * (2 * r + 0.5))
                for r, line in enumerate(texts) for c, text in enumerate(line) for j, char in enumerate(text)]

    def block_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """Pixel box of table block (row, column) in the slot layout, the names counted: row 0 holds the column
        names and column 0 the row names, so data cell (r, c) is block (r + 1, c + 1). One nano LLM token."""
        if not self.slot:
            raise ValueError("only slot-layout tables have one block per cell")
        side = 2 * self.slot
        return (column * side, row * side, (column + 1) * side, (row + 1) * side)

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        if self.slot:  # rules on the blocks' edges (the last one inside the image), text in the slots
            right = min(self.width - 1, 2 * self.slot * (len(self.columns) + 1))
            bottom = min(self.height - 1, 2 * self.slot * (len(self.rows) + 1))
            draw.rectangle((0, 0, right, 2 * self.slot), fill=(225, 225, 225))
            for r in range(len(self.rows) + 2):
                y = min(bottom, 2 * self.slot * r)
                draw.line((0, y, right, y), fill=_INK)
            for c in range(len(self.columns) + 2):
                x = min(right, 2 * self.slot * c)
                draw.line((x, 0, x, bottom), fill=_INK)
            draw_slot_glyphs(image, self.character_centres(), self.slot, largest_slot_font(self.slot), _INK)
            return image
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


def sample_table_scene(rng: random.Random, width: int = 224, height: int = 224, slot: int = 0) -> TableScene:
    """2-4 rows x 2-3 columns of integers 0-99, with named rows and columns. ``slot`` > 0: the slot layout
    (module docstring), as many of those rows and columns as fit, names of one or two characters, values 10-99."""
    if slot:
        columns, rows = _slot_grid(width, height, slot)
        n_rows, n_cols = rng.randint(2, min(4, rows // 2 - 1)), rng.randint(2, min(3, columns // 2 - 1))
        names = rng.choice(_SLOT_TABLE_COLUMNS)[:n_cols], rng.choice(_SLOT_TABLE_ROWS)[:n_rows]
        cells = tuple(tuple(rng.randint(10, 99) for _ in range(n_cols)) for _ in range(n_rows))
        return TableScene(width, height, tuple(names[0]), tuple(names[1]), cells, slot=slot)
    n_rows, n_cols = rng.randint(2, 4), rng.randint(2, 3)
    columns = rng.choice(_TABLE_COLUMNS)[:n_cols]
    rows = rng.choice(_TABLE_ROWS)[:n_rows]
    cells = tuple(tuple(rng.randint(0, 99) for _ in range(n_cols)) for _ in range(n_rows))
    return TableScene(width, height, tuple(columns), tuple(rows), cells)
