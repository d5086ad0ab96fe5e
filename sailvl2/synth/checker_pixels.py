"""Pixel checks for the independent checker: the rendered PNG against the stored scene.

Shapes: the centre pixel has the shape's colour, each shape's ink lies inside its extent (centre plus or
minus its half-extent) and in its own grid cell (a lone shape: anywhere), and there is no ink anywhere
else; the measured boxes are what grounding answers are compared with. Text: all ink lies inside the stored text box.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["Mismatch", "box_ok", "expect", "extent", "match_question", "pixel_boxes"]


class Mismatch(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Mismatch(message)


def match_question(pattern: str, text: str) -> tuple[str, ...]:
    """The groups of a question parsed back with `pattern` (the whole text must match, else a Mismatch)."""
    m = re.fullmatch(pattern, text)
    expect(m is not None, f"question {text!r} does not match {pattern!r}")
    return m.groups()


def extent(s: dict[str, Any]) -> tuple[int, int, int, int]:
    """A box that surely contains the shape: its centre plus/minus its half-extent."""
    return s["cx"] - s["half"], s["cy"] - s["half"], s["cx"] + s["half"] + 1, s["cy"] + s["half"] + 1


def _ink(image: np.ndarray, background: list[int]) -> np.ndarray:
    """Pixels that differ from the background in any channel."""
    return (image[..., 0] != background[0]) | (image[..., 1] != background[1]) | (image[..., 2] != background[2])


def _measured_boxes(scene: dict[str, Any], image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Each shape's pixel box, measured in its own third of the image (shapes never leave their cell); a
    lone shape (the large warm-up shapes may overflow the centre cell) is measured over the whole image."""
    ink = _ink(image, scene["background_rgb"])
    h, w = ink.shape
    boxes = []
    alone = len(scene["shapes"]) == 1
    for s in scene["shapes"]:
        x0, x1 = (0, w) if alone else (s["col"] * w // 3, (s["col"] + 1) * w // 3 + 1)
        y0, y1 = (0, h) if alone else (s["row"] * h // 3, (s["row"] + 1) * h // 3 + 1)
        ys, xs = np.nonzero(ink[y0:y1, x0:x1])
        expect(len(xs) > 0, f"no pixels of the {s['colour']} {s['kind']} in its cell")
        boxes.append((x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
    return boxes


def _check_shape_pixels(scene: dict[str, Any], image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The measured boxes, after checking centre colours, extents and that nothing else is drawn."""
    for s in scene["shapes"]:
        expect(tuple(int(v) for v in image[s["cy"], s["cx"]]) == tuple(s["rgb"]),
               f"centre pixel of the {s['colour']} {s['kind']} is not {s['rgb']}")
    boxes = _measured_boxes(scene, image)
    ink = _ink(image, scene["background_rgb"])
    for shape, (x1, y1, x2, y2) in zip(scene["shapes"], boxes):
        expect(box_ok((x1, y1, x2, y2), extent(shape), False), "a shape is drawn beyond its extent")
        ink[y1:y2, x1:x2] = False
    expect(not ink.any(), "ink outside the shapes' boxes")
    return boxes


def box_ok(pixel: tuple[float, ...], truth: tuple[int, ...], measured: bool) -> bool:
    """A measured box must match within a pixel (plus under 0.25 px of 0-1000 rounding at 224 px);
    without pixels we only know the extent, so the box must lie inside it."""
    if measured:
        return all(abs(p - t) <= 1.25 for p, t in zip(pixel, truth))
    return (truth[0] - 0.5 <= pixel[0] and truth[1] - 0.5 <= pixel[1] and pixel[2] <= truth[2] + 0.5
            and pixel[3] <= truth[3] + 0.5)


def pixel_boxes(path: str, scene: dict[str, Any], cache: dict) -> list | None:
    """Check one image against its scene; the shapes' measured boxes (None for other scenes)."""
    key = (path, json.dumps(scene, sort_keys=True))
    if key not in cache:
        if len(cache) > 64:  # records of one image are adjacent; a small cache is enough
            cache.clear()
        arr = np.asarray(Image.open(path).convert("RGB"))
        try:
            expect(arr.shape[:2] == (scene["height"], scene["width"]), "image size differs from the scene")
            if scene["type"] == "shapes":
                cache[key] = _check_shape_pixels(scene, arr)
            else:
                if scene["type"] == "text":
                    _check_text_pixels(scene, arr)
                cache[key] = None
        except Mismatch as exc:
            cache[key] = exc
    if isinstance(cache[key], Mismatch):
        raise cache[key]
    return cache[key]


def _check_text_pixels(scene: dict[str, Any], image: np.ndarray) -> None:
    x1, y1, x2, y2 = scene["box"]
    ink = _ink(image, scene["background_rgb"])
    inside = ink[max(0, y1):y2, max(0, x1):x2].sum()
    expect(inside > 0 and inside == ink.sum(), "text ink missing or outside the text box")
    expect(0 <= x1 and 0 <= y1 and x2 <= scene["width"] and y2 <= scene["height"], "text leaves the image")
