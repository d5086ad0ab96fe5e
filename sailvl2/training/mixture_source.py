"""The trainer's view of a data mixture: `sailvl2.data.MixtureStream` records as plain training dicts.

Records are turned into the dicts the trainer encodes (`id`, `image`, `conversations`, `system`, `kind`,
`max_num`, and `focus` when the record has focus boxes). In-memory images (Parquet, WebDataset) stay bytes;
`to_json` / `from_json` wrap them in base64 so the packer's buffer can be written into a checkpoint and
re-encoded on resume.
"""

from __future__ import annotations

import base64
from typing import Any

from ..data.mixture import MixtureConfig
from ..data.stream import MixtureStream


class MixtureSource:
    def __init__(self, mixture: str, seed: int = 0, check_images: bool = False, error_budget: float = 0.01) -> None:
        self.stream = MixtureStream(MixtureConfig.from_yaml(mixture), seed=seed, check_images=check_images,
                                    error_budget=error_budget)

    def __iter__(self) -> "MixtureSource":
        return self

    def __next__(self) -> dict[str, Any]:
        record, dataset, max_num = next(self.stream)
        out = {
            "id": f"{dataset}/{record.id}",
            "image": [ref.source for ref in record.images],
            "conversations": record.messages(),
            "system": record.system,
            "kind": record.kind,
            "max_num": max_num,
        }
        if record.focus is not None:  # focus supervision boxes (training/focus.py)
            out["focus"] = [[list(box) for box in boxes] for boxes in record.focus]
        return out

    @property
    def stats(self) -> Any:
        return self.stream.stats

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def to_json(record: dict[str, Any]) -> dict[str, Any]:
    images = [{"b64": base64.b64encode(image).decode("ascii")} if isinstance(image, (bytes, bytearray)) else str(image)
              for image in record.get("image") or []]
    return {**record, "image": images}


def from_json(record: dict[str, Any]) -> dict[str, Any]:
    images = [base64.b64decode(image["b64"]) if isinstance(image, dict) else image for image in record.get("image") or []]
    return {**record, "image": images}
