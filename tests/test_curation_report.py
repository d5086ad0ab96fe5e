"""The curation report, built from hand-written decision and data files: counts, histograms, pictures,
throughput, and bad images (zero-byte, truncated, bomb, missing) that must never break it."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sailvl2.curation.report import write_report

_TILE, _COLUMNS, _HEADER, _CELL = 160, 6, 22, 160 + 3 * 12 + 8  # the contact sheet's geometry


def _bomb_png() -> bytes:
    """A valid 1x1 PNG whose header claims 40000 x 40000 pixels (1.6 G, over PIL's bomb limit)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", 40000, 40000)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture()
def run_folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (_TILE, _TILE), (255, 0, 0)).save(images / "red.png")
    Image.new("RGB", (_TILE, _TILE), (0, 0, 255)).save(images / "blue.png")
    (images / "zero.png").write_bytes(b"")
    (images / "cut.png").write_bytes((images / "red.png").read_bytes()[:60])
    (images / "bomb.png").write_bytes(_bomb_png())
    decisions = [
        _write_jsonl(tmp_path / "d0.jsonl", [
            {"id": "bad", "stage": "read", "kept": False, "reason": "bad JSON: line 3", "scores": {}},
            {"id": "a", "stage": "validate", "kept": True, "reason": None, "scores": {"vir": 1, "p": 0.0}},
            {"id": "z", "stage": "validate", "kept": False, "reason": "undecodable image: zero bytes",
             "scores": {"vir": 2}, "image": str(images / "zero.png")},
            {"id": "c", "stage": "validate", "kept": False, "reason": "undecodable image: truncated",
             "scores": {"vir": 2, "p": 0.25}, "image": str(images / "cut.png")},
            {"id": "b", "stage": "validate", "kept": False, "reason": "bomb: 1600000000 pixels",
             "scores": {"vir": 5, "flag": True}, "image": str(images / "bomb.png")},
            {"id": "m", "stage": "validate", "kept": False, "reason": "error: validate: OSError: gone",
             "scores": {"vir": float("nan")}, "image": str(images / "missing.png")},
            {"id": "d", "stage": "validate", "kept": True, "reason": None, "scores": {"vir": 3, "p": 1.0}},
        ]),
        _write_jsonl(tmp_path / "d1.jsonl", [
            {"id": "a", "stage": "dedup", "kept": True, "reason": None, "scores": {}},
            {"id": "d", "stage": "dedup", "kept": False, "reason": "duplicate: of a", "scores": {},
             "image": str(images / "blue.png")},
        ]),
    ]
    (tmp_path / "out").mkdir()
    data = [_write_jsonl(tmp_path / "out" / "curated-00000.jsonl", [
        {"id": "a", "image": str(images / "red.png"), "conversations": [],
         "curation": {"scores": {"vir": 1, "p": 0.0}}}])]
    info = {"inputs": 7, "wall_seconds": 2.0, "engine": "local", "workers": 2, "resumed_shards": 1, "shards": 3,
            "images": "reference", "map_window": {"items": 6, "seconds": 0.5},
            "stage_stats": {"validate": {"in": 6, "seconds": 3.0}, "dedup": {"in": 2, "seconds": 0.5}}}
    report = write_report(tmp_path / "out", ["read", "validate", "dedup"], decisions, data, info, examples=8)
    return tmp_path, report


def test_counts_per_stage_and_reason(run_folder):
    _, report = run_folder
    assert (report["inputs"], report["kept"], report["dropped"]) == (7, 1, 6)
    stages = {s["name"]: s for s in report["stages"]}
    assert {k: stages["read"][k] for k in ("in", "kept", "dropped")} == {"in": 7, "kept": 6, "dropped": 1}
    assert stages["validate"]["reasons"] == {"undecodable image": 2, "bomb": 1, "error": 1}
    assert (stages["validate"]["in"], stages["validate"]["kept"]) == (6, 2)
    assert stages["dedup"]["reasons"] == {"duplicate": 1}


def test_throughput_numbers(run_folder):
    _, report = run_folder
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["validate"]["records_per_s"] == pytest.approx(2.0)  # 6 records in 3 s
    assert stages["dedup"]["records_per_s"] == pytest.approx(4.0)
    assert report["throughput"]["overall_records_per_s"] == pytest.approx(3.5)  # 7 read in 2 s wall
    assert report["throughput"]["map_phase_records_per_s"] == pytest.approx(12.0)


def test_histograms_split_by_final_fate(run_folder):
    root, report = run_folder
    vir = report["scores"]["vir"]  # 1 (a, kept), 2 (z, c dropped), 5 (b dropped), 3 (d, dropped later); NaN skipped
    assert vir["count"] == 5 and vir["min"] == 1 and vir["max"] == 5 and vir["mean"] == pytest.approx(13 / 5)
    assert vir["histogram"]["edges"] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]  # one bar per integer value
    assert vir["histogram"]["kept"] == [1, 0, 0, 0, 0]
    assert vir["histogram"]["dropped"] == [0, 2, 1, 0, 1]
    p = report["scores"]["p"]  # 0.0 (kept), 0.25 and 1.0 (dropped): 20 equal bins over [0, 1]
    assert p["histogram"]["kept"][0] == 1 and sum(p["histogram"]["kept"]) == 1
    assert p["histogram"]["dropped"][5] == 1 and p["histogram"]["dropped"][19] == 1
    assert "flag" not in report["scores"]  # booleans are not scores
    for name in ("vir", "p"):
        with Image.open(root / "out" / report["scores"][name]["png"]) as image:
            assert image.format == "PNG" and image.width > 100


def test_contact_sheet_survives_bad_images_and_links_them(run_folder):
    root, report = run_folder
    out = root / "out"
    sheet = np.asarray(Image.open(out / report["contact_sheet"]["png"]).convert("RGB"))

    def tile_pixel(section_top: int, index: int) -> tuple[int, ...]:
        x = 8 + (index % _COLUMNS) * (_TILE + 8)
        y = section_top + _HEADER + (index // _COLUMNS) * _CELL
        return tuple(sheet[y + 10, x + 80])

    assert tile_pixel(0, 0) == (255, 0, 0)  # the one kept example, full-tile red
    # Dropped, round robin over (stage, reason): bad, z, b, m, d (one per group), then c.
    dropped_top = _HEADER + _CELL
    gray = (221, 221, 221)
    assert [tile_pixel(dropped_top, i) for i in range(6)] == [gray, gray, gray, gray, (0, 0, 255), gray]
    page = (out / report["contact_sheet"]["html"]).read_text()
    assert "src='../../imgs/red.png'" in page and "src='../../imgs/blue.png'" in page
    assert (out / "report" / "../../imgs/red.png").resolve() == (root / "imgs" / "red.png").resolve()


def test_json_and_markdown_are_written(run_folder):
    root, report = run_folder
    assert json.loads((root / "out" / "report.json").read_text()) == json.loads(json.dumps(report))
    markdown = (root / "out" / "report.md").read_text()
    assert "| validate | 6 | 2 | 4 | 0 | 2.0 | undecodable image: 2, bomb: 1, error: 1 |" in markdown
    assert "![vir](report/score-vir.png)" in markdown
