"""Shared fixtures. The golden files live in `../shared/reference` beside the repo (CI has them too);
`SAILVL2_SHARED` may point elsewhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAILVL2_SHARED", REPO_ROOT.parent / "shared"))
REFERENCE = SHARED / "reference"
RELEASE_DIR = REFERENCE / "release"
GOLDEN_ROOT = REFERENCE / "golden"
GOLDEN_CKPT = GOLDEN_ROOT / "ckpt"
GOLDEN_IMAGES = GOLDEN_ROOT / "images"
GOLDEN_CASES = (
    "single_800x600", "single_300x1000", "single_1000x250", "single_448x448", "multi_800x600_300x1000", "text_only",
)

if not GOLDEN_CKPT.is_dir():
    raise FileNotFoundError(
        f"golden reference files not found at {GOLDEN_ROOT}; the parity tests need ../shared beside the repo "
        "(or set SAILVL2_SHARED)"
    )

torch.set_num_threads(min(2, os.cpu_count() or 1))


def load_case(name: str) -> tuple[dict, dict]:
    """A golden case: (the JSON record, the npz arrays)."""
    case = json.loads((GOLDEN_ROOT / "cases" / f"{name}.json").read_text(encoding="utf-8"))
    with np.load(GOLDEN_ROOT / "cases" / f"{name}.npz") as arrays:
        return case, dict(arrays)


@pytest.fixture(scope="session")
def golden_model():
    from sailvl2.modeling import SAILVLModel

    return SAILVLModel.from_pretrained(GOLDEN_CKPT, dtype=torch.float32)


@pytest.fixture(scope="session")
def sailvl_processor():
    """The golden checkpoint's processor, built once per session (loading the tokenizer takes ~1 s)."""
    from sailvl2.processing import SAILVLProcessor

    return SAILVLProcessor.from_pretrained(GOLDEN_CKPT)
