"""Record sources for the trainer: a built-in synthetic one (the debug recipe) and dataset mixtures.

A source yields records as plain dicts in the training format (`id`, `image`: list of paths,
`conversations`, optional `system`, `kind`, `max_num`) and has `state_dict()` / `load_state_dict()` so a
resumed run continues from exactly the next record.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 80, 220), "yellow": (230, 200, 20)}
_SHAPES = ("square", "circle")


class SyntheticShapes:
    """Deterministic toy data: one coloured shape on white; questions about its colour and shape.

    Sample i depends only on (seed, i), so the source is resumable from its index alone. Images are drawn
    once into `image_dir` (small, 64 distinct images at most).
    """

    def __init__(self, image_dir: str | Path, num_samples: int = 32, seed: int = 0, image_size: int = 96,
                 epochs: int | None = None) -> None:
        self.image_dir = Path(image_dir)
        self.num_samples = num_samples
        self.seed = seed
        self.image_size = image_size
        self.epochs = epochs
        self.position = 0

    def _image(self, colour: str, shape: str, offset: int) -> str:
        path = self.image_dir / f"{shape}-{colour}-{offset}-{self.image_size}.png"
        if not path.exists():
            self.image_dir.mkdir(parents=True, exist_ok=True)
            image = Image.new("RGB", (self.image_size, self.image_size), "white")
            draw = ImageDraw.Draw(image)
            box = (8 + offset, 8 + offset, self.image_size - 24 + offset, self.image_size - 24 + offset)
            (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=_COLOURS[colour])
            tmp = path.with_name(f".{path.stem}-{os.getpid()}.png")  # ranks may draw the same file at once
            image.save(tmp)
            os.replace(tmp, path)
        return str(path)

    def record(self, index: int) -> dict[str, Any]:
        rng = random.Random(self.seed * 1_000_003 + index % self.num_samples)
        colour, shape, offset = rng.choice(list(_COLOURS)), rng.choice(_SHAPES), rng.randrange(0, 16, 4)
        question, answer = rng.choice([
            ("What colour is the shape?", f"It is {colour}."),
            ("What shape is this?", f"A {shape}."),
            ("Describe the image.", f"A {colour} {shape} on a white background."),
        ])
        return {
            "id": f"shapes-{index}",
            "image": [self._image(colour, shape, offset)],
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            "kind": "direct",
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.epochs is not None and self.position >= self.epochs * self.num_samples:
            raise StopIteration
        record = self.record(self.position)
        self.position += 1
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
