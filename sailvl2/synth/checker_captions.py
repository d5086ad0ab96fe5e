"""Caption checks for the independent checker: parse each caption back into facts, compare with the scene.

A caption passes only if it parses completely (no sentence left over) and the parsed facts (every shape
with its size, colour, kind and place; the per-kind counts; the text, its colour and third; every chart
value; every table cell) equal the scene's. No generator code is used.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["check_caption"]

_ROWS, _COLS = ("top", "middle", "bottom"), ("left", "centre", "right")
_NOUNS = {"word": "word", "number": "number", "words": "phrase"}


class CaptionMismatch(ValueError):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CaptionMismatch(message)


def _split_list(text: str) -> list[str]:
    """"a, b and c" -> [a, b, c]."""
    head, sep, last = text.rpartition(" and ")
    return (head.split(", ") + [last]) if sep else [text]


def _place(row: int, col: int) -> str:
    return "centre" if (row, col) == (1, 1) else f"{_ROWS[row]} {'centre' if col == 1 else _COLS[col]}"


def _shape_facts(scene: dict[str, Any]) -> Counter:
    return Counter((s["size"], s["colour"], s["kind"], _place(s["row"], s["col"])) for s in scene["shapes"])


def check_caption(task: str, scene: dict[str, Any], caption: str) -> None:
    kind = scene["type"]
    detailed = task == "captions/detailed"
    _expect(task in ("captions/detailed", "captions/brief"), f"unknown caption task {task!r}")
    if kind == "shapes":
        (_shapes_detailed if detailed else _shapes_brief)(scene, caption)
    elif kind == "text":
        _text(scene, caption, detailed)
    elif kind == "chart":
        _chart(scene, caption, detailed)
    elif kind == "table":
        _table(scene, caption, detailed)
    else:
        raise CaptionMismatch(f"no captions for scene type {kind!r}")


def _shapes_detailed(scene: dict[str, Any], caption: str) -> None:
    m = re.match(r"The image shows (\d+) shapes? on a ([a-z ]+) background: ([^.]+)\.", caption)
    _expect(m is not None, "detailed caption header")
    _expect(int(m[1]) == len(scene["shapes"]), "shape count")
    _expect(m[2] == scene["background"], "background")
    counts = {}
    for item in _split_list(m[3]):
        n, noun = item.split(" ")
        counts[noun[:-1] if int(n) != 1 else noun] = int(n)
    _expect(counts == dict(Counter(s["kind"] for s in scene["shapes"])), f"per-kind counts {counts}")
    rest = caption[m.end():]
    facts = re.findall(r" A (small|medium|large) (\w+) (\w+) is at the ([a-z ]+)\.", rest)
    _expect("".join(f" A {a} {b} {c} is at the {d}." for a, b, c, d in facts) == rest, "unparsed caption text")
    _expect(Counter(facts) == _shape_facts(scene), "shape facts differ")


def _shapes_brief(scene: dict[str, Any], caption: str) -> None:
    m = re.fullmatch(r"(\d+) shapes?: (.+)\.", caption)
    _expect(m is not None and int(m[1]) == len(scene["shapes"]), "brief caption count")
    items = [re.fullmatch(r"a (small|medium|large) (\w+) (\w+)", item) for item in _split_list(m[2])]
    _expect(all(items), "brief caption items")
    _expect(Counter(i.groups() for i in items) == Counter((s["size"], s["colour"], s["kind"]) for s in scene["shapes"]),
            "brief caption shapes differ")


def _text(scene: dict[str, Any], caption: str, detailed: bool) -> None:
    if not detailed:
        m = re.fullmatch(r'The (word|number|words) "(.+)"\.', caption)
        _expect(m is not None and _NOUNS[m[1]] == scene["category"] and m[2] == scene["text"], "brief text caption")
        return
    m = re.fullmatch(r'The image shows the (word|number|words) "(.+)" written in (\w+) on a ([a-z ]+) background, '
                     r"near the (top|middle|bottom) of the image\.", caption)
    _expect(m is not None, "detailed text caption")
    _, y1, _, y2 = scene["box"]
    centre = (y1 + y2) / 2
    third = "top" if centre < scene["height"] / 3 else "middle" if centre < 2 * scene["height"] / 3 else "bottom"
    _expect((_NOUNS[m[1]], m[2], m[3], m[4], m[5]) ==
            (scene["category"], scene["text"], scene["colour"], scene["background"], third), "text caption facts")


def _chart(scene: dict[str, Any], caption: str, detailed: bool) -> None:
    head = re.match(r'A (bar|line|pie) chart(?: titled "([^"]+)")?', caption)
    _expect(head is not None and head.groups() == (scene["chart"], scene["title"] or None), "chart caption head")
    if not detailed:
        _expect(caption == head[0] + ".", "brief chart caption")
        return
    m = re.fullmatch(r' with (\d+) categories: ([^.]+)\.(?: The largest is (\S+)\.)?(?: The smallest is (\S+)\.)?',
                     caption[head.end():])
    _expect(m is not None and int(m[1]) == len(scene["values"]), "chart caption body")
    pairs = [re.fullmatch(r"(\S+) is (\d+)", item) for item in _split_list(m[2])]
    _expect(all(pairs) and [(p[1], int(p[2])) for p in pairs] == list(zip(scene["labels"], scene["values"])),
            "chart caption values")
    values = scene["values"]
    for word, found, best in (("largest", m[3], max(values)), ("smallest", m[4], min(values))):
        winners = [l for l, v in zip(scene["labels"], values) if v == best]
        _expect(found == (winners[0] if len(winners) == 1 else None), f"chart caption {word}")


def _table(scene: dict[str, Any], caption: str, detailed: bool) -> None:
    rows, cols = scene["rows"], scene["columns"]
    m = re.match(r"A table with (\d+) rows and (\d+) columns", caption)
    _expect(m is not None and (int(m[1]), int(m[2])) == (len(rows), len(cols)), "table caption head")
    rest = caption[m.end():]
    if not detailed:
        _expect(rest == ".", "brief table caption")
        return
    c = re.match(r" \(([^)]+)\)\.", rest)
    _expect(c is not None and c[1].split(", ") == list(cols), "table caption columns")
    lines = re.findall(r" ([^:]+): ([^.]+)\.", rest[c.end():])
    _expect("".join(f" {a}: {b}." for a, b in lines) == rest[c.end():], "unparsed table caption")
    _expect([a for a, _ in lines] == list(rows), "table caption rows")
    for (_, body), cells in zip(lines, scene["cells"]):
        parsed = [item.rsplit(" ", 1) for item in body.split(", ")]
        _expect([(k, int(v)) for k, v in parsed] == list(zip(cols, cells)), "table caption cells")
