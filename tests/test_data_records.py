"""Records and readers: the same samples read from JSONL, Parquet, HF datasets on disk and WebDataset tars
give the same records; bad items become counted `Skipped` reasons, never crashes."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sailvl2.data import (
    DataError, ImageRef, Record, Skipped, SourceSpec, Turn, count_items, iter_records, parse_record,
    validate_record,
)

# ------------------------------------------------------------------------------------------- fixtures (shared)


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_jsonl(path: Path, objs: list[Any]) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def text_sample(index: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"s{index}", "conversations": [{"from": "human", "value": f"question {index}"},
                                                  {"from": "gpt", "value": f"answer {index}"}], **extra}


# Logical samples: (record fields, image names); the images are PNGs of distinct colours.
SAMPLES: list[dict[str, Any]] = [
    {"id": "one", "images": ["red.png"], "kind": "direct", "system": None,
     "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]},
    {"id": "two", "images": ["green.png", "blue.png"], "kind": "cot", "system": "Think first.",
     "conversations": [{"from": "human", "value": "<image><image>Compare."}, {"from": "gpt", "value": "<think>hm</think>Same size."},
                       {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
    {"id": "text", "images": [], "kind": "direct", "system": None,
     "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
    {"id": "noplace", "images": ["red.png"], "kind": "direct", "system": None,
     "conversations": [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "A red square."}]},
]
COLOURS = {"red.png": (255, 0, 0), "green.png": (0, 255, 0), "blue.png": (0, 0, 255)}


def write_images(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {name: png_bytes(colour) for name, colour in COLOURS.items()}
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    return blobs


def _json_obj(sample: dict[str, Any], with_images: bool = True) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": sample["id"], "conversations": sample["conversations"], "kind": sample["kind"]}
    if sample["system"] is not None:
        obj["system"] = sample["system"]
    if with_images and sample["images"]:
        obj["image"] = ["imgs/" + n for n in sample["images"]]
    return obj


def write_all_formats(root: Path) -> dict[str, Path]:
    """The SAMPLES in every format: jsonl / parquet (paths, struct turns) / parquet (bytes, JSON turns) /
    hf (datasets.Image) / hf (path strings) / webdataset tar."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    blobs = write_images(root / "imgs")
    out = {"jsonl": write_jsonl(root / "data.jsonl", [_json_obj(s) for s in SAMPLES])}
    rows = [_json_obj(s) for s in SAMPLES]
    for row in rows:
        row.setdefault("image", None)
        row.setdefault("system", None)
    pq.write_table(pa.Table.from_pylist(rows), root / "paths.parquet", row_group_size=2)
    out["parquet"] = root / "paths.parquet"
    byte_rows = [{"id": s["id"], "conversations": json.dumps(s["conversations"]), "kind": s["kind"],
                  "system": s["system"], "image_bytes": [blobs[n] for n in s["images"]]} for s in SAMPLES]
    pq.write_table(pa.Table.from_pylist(byte_rows), root / "bytes.parquet")
    out["parquet_bytes"] = root / "bytes.parquet"

    list_type = getattr(datasets, "List", None) or datasets.Sequence
    features = datasets.Features({"id": datasets.Value("string"), "conversations": datasets.Value("string"),
                                  "kind": datasets.Value("string"), "system": datasets.Value("string"),
                                  "image": list_type(datasets.Image())})
    hf_rows = {"id": [s["id"] for s in SAMPLES], "conversations": [json.dumps(s["conversations"]) for s in SAMPLES],
               "kind": [s["kind"] for s in SAMPLES], "system": [s["system"] for s in SAMPLES],
               "image": [[{"bytes": blobs[n], "path": n} for n in s["images"]] for s in SAMPLES]}
    datasets.Dataset.from_dict(hf_rows, features=features).save_to_disk(str(root / "hf_images"))
    out["hf"] = root / "hf_images"
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "hf_paths"))
    out["hf_paths"] = root / "hf_paths"

    members: list[tuple[str, bytes]] = []
    for s in SAMPLES:
        members.append((f"{s['id']}.json", json.dumps(_json_obj(s, with_images=False)).encode()))
        if len(s["images"]) == 1:
            members.append((f"{s['id']}.png", blobs[s["images"][0]]))
        else:  # numbered members, written out of order on purpose: their number decides the order
            members += [(f"{s['id']}.{k}.png", blobs[n]) for k, n in reversed(list(enumerate(s["images"])))]
    out["webdataset"] = write_tar(root / "shard-000.tar", members)
    return out


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def canonical(record: Record) -> tuple:
    """What must agree across formats (not where the bytes live, nor the source string)."""
    return (record.id, tuple(ref.read_bytes() for ref in record.images), record.conversations, record.system,
            record.kind)


# ------------------------------------------------------------------------------------------- readers


def test_every_format_yields_the_same_records(tmp_path: Path) -> None:
    paths = write_all_formats(tmp_path)
    expected = None
    for fmt, path in paths.items():
        items = list(iter_records(path))
        assert all(isinstance(item, Record) for item in items), (fmt, items)
        got = [canonical(item) for item in items]
        assert count_items(path) == len(items) == len(SAMPLES)
        if expected is None:
            expected = got
        assert got == expected, fmt
        assert all(validate_record(item, check_images=True) is None for item in items), fmt
    first = next(iter(iter_records(paths["jsonl"])))
    assert first.images == (ImageRef(str(tmp_path / "imgs" / "red.png")),)
    assert first.source == f"{paths['jsonl']}:1"
    tar_two = list(iter_records(paths["webdataset"]))[1]
    assert tar_two.images[0].in_memory and tar_two.images[0].name.endswith("two.0.png")
    assert expected[1][3] == "Think first." and expected[1][4] == "cot"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf", "webdataset"])
def test_start_skips_items(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path)[fmt]
    every = [canonical(r) for r in iter_records(path)]
    for start in range(len(every) + 1):
        assert [canonical(r) for r in iter_records(path, start=start)] == every[start:]


def test_many_files_glob_and_list(tmp_path: Path) -> None:
    for shard in range(3):
        write_jsonl(tmp_path / f"part-{shard}.jsonl", [text_sample(shard * 10 + k) for k in range(shard + 1)])
    spec = SourceSpec(str(tmp_path / "part-*.jsonl"))
    ids = [r.id for r in iter_records(spec)]
    assert ids == ["s0", "s10", "s11", "s20", "s21", "s22"] and count_items(spec) == 6
    assert [r.id for r in iter_records(spec, start=2)] == ids[2:]
    listed = SourceSpec([tmp_path / "part-2.jsonl", tmp_path / "part-0.jsonl"])
    assert [r.id for r in iter_records(listed)] == ["s20", "s21", "s22", "s0"]


def test_image_root_and_spellings(tmp_path: Path) -> None:
    write_images(tmp_path / "pictures")
    rows = [{"id": 7, "image": "red.png", "system": "Be brief.", "kind": "cot",
             "conversations": [{"role": "user", "content": "<image> hi"}, {"role": "assistant", "content": "hello"}]},
            {"conversations": [{"role": "system", "content": "sys"}, {"from": "user", "value": "q"},
                               {"from": "assistant", "value": "a"}], "video": ["red.png", "blue.png"]}]
    (tmp_path / "data").mkdir()
    path = write_jsonl(tmp_path / "data" / "d.jsonl", rows)
    first, second = iter_records(SourceSpec(path, image_root=tmp_path / "pictures", kind="direct"))
    assert first.id == "7" and first.kind == "cot" and first.system == "Be brief."
    assert first.images == (ImageRef(str(tmp_path / "pictures" / "red.png")),)
    assert first.conversations == (Turn("human", "<image> hi"), Turn("gpt", "hello"))
    assert second.id == "d.jsonl#1" and second.system == "sys" and second.kind == "direct"
    assert [t.role for t in second.conversations] == ["human", "gpt"] and len(second.video) == 2
    assert second.messages()[0] == {"from": "human", "value": "q"}
    assert validate_record(first) is None and validate_record(second) is None


def test_bad_json_lines_and_bad_records_are_skipped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [text_sample(0), "{not json", "", "[1, 2]", b"\xff\xfe".decode("latin-1"),
                                              {"conversations": [{"from": "robot", "value": "x"}]}, text_sample(1)])
    items = list(iter_records(path))
    assert [type(i).__name__ for i in items] == ["Record", "Skipped", "Skipped", "Skipped", "Skipped", "Record"]
    assert items[1].reason.startswith("bad JSON: line 2: ") and items[1].source == f"{path}:2"
    assert items[1].category == "bad JSON"
    assert items[2].category == "bad record" and "JSON object" in items[2].reason
    assert items[3].category == "bad JSON"
    assert items[4].category == "bad record" and "robot" in items[4].reason
    assert count_items(path) == 6


def test_tar_edge_cases(tmp_path: Path) -> None:
    good = json.dumps(text_sample(0)).encode()
    red = png_bytes((255, 0, 0))
    path = write_tar(tmp_path / "s.tar", [
        ("a.png", red),  # no a.json
        ("b.json", good), ("b.png", red), ("b.jpg", red),  # two unnumbered images
        ("c.json", good), ("c.0.png", red), ("c.2.png", red),  # a gap in the numbers
        ("d.json", b"{oops"),
        ("README", b"not a sample"),
        ("sub/e.json", json.dumps({**text_sample(5), "id": None, "image": "imgs/red.png"}).encode()),
    ])
    items = list(iter_records(path))
    reasons = [i.reason if isinstance(i, Skipped) else None for i in items]
    assert "has no a.json" in reasons[0] and "ambiguous" in reasons[1] and "numbered [0, 2]" in reasons[2]
    assert reasons[3].startswith("bad JSON: d.json")
    last = items[4]
    assert isinstance(last, Record) and last.id == "sub/e"
    assert last.images == (ImageRef(str(tmp_path / "imgs" / "red.png")),)  # JSON paths resolve by the shard
    assert count_items(path) == 5


def test_format_inference_errors(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="cannot infer"):
        list(iter_records(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="not found"):
        list(iter_records(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no data files match"):
        list(iter_records(str(tmp_path / "none-*.tar")))
    with pytest.raises(DataError, match="not a saved `datasets` dataset"):
        list(iter_records(tmp_path / "plain"))
    with pytest.raises(DataError, match="unknown data format"):
        SourceSpec(tmp_path / "x.csv", format="csv")
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet"):
        list(iter_records(tmp_path / "fake.parquet"))
    assert [r.id for r in iter_records(SourceSpec(write_jsonl(tmp_path / "x.csv", [text_sample(3)]), "jsonl"))] == ["s3"]


# ------------------------------------------------------------------------------------------- validation


def _record(turns: list[tuple[str, str]], images: tuple[ImageRef, ...] = ()) -> Record:
    return Record("r", images, tuple(Turn(role, text) for role, text in turns))


def test_validate_reasons(tmp_path: Path) -> None:
    blobs = write_images(tmp_path)
    red = ImageRef(str(tmp_path / "red.png"))
    qa = [("human", "<image> q"), ("gpt", "a")]
    assert validate_record(_record(qa, (red,))) is None
    assert validate_record(_record([("human", "q"), ("gpt", "a")], (red, red))) is None  # no placeholder: prepended
    assert validate_record(_record([])) == "no conversations"
    assert validate_record(_record([("human", "q"), ("gpt", "  ")])).startswith("empty turn: turn 1 (gpt)")
    assert validate_record(_record([("human", "q")])).startswith("last turn not from gpt")
    assert validate_record(_record([("human", "q"), ("gpt", "<image>")], (red,))).startswith(
        "image placeholder in gpt turn")
    assert validate_record(_record(qa)) == "image placeholder mismatch: 1 <image> placeholder(s) for 0 image(s)"
    assert validate_record(_record(qa, (red, red))).startswith("image placeholder mismatch: 1 ")
    missing = ImageRef(str(tmp_path / "gone.png"))
    assert validate_record(_record(qa, (missing,))) == f"missing image file: {missing.name}"
    video = Record("v", (), (Turn("human", "q"), Turn("gpt", "a")), video=(missing,))
    assert validate_record(video) == f"missing image file: {missing.name}"  # frames are not placeholders
    corrupt_file = tmp_path / "corrupt.png"
    corrupt_file.write_bytes(blobs["red.png"][:20])
    for bad in (ImageRef(str(corrupt_file)), ImageRef("mem.png", b"not an image")):
        assert validate_record(_record(qa, (bad,))) is None  # decoding only with check_images
        assert validate_record(_record(qa, (bad,)), check_images=True).startswith("undecodable image: ")
    assert "bytes>" in repr(ImageRef("mem.png", b"xyz")) and "xyz" not in repr(ImageRef("mem.png", b"xyz"))


def test_parse_record_errors() -> None:
    ok = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert parse_record(ok, source="s", fallback_id="f").id == "f"
    for bad, message in [
        ({**ok, "id": [1]}, "'id' must be"), ({**ok, "kind": "fast"}, "'kind' must be"),
        ({"conversations": "{"}, "not JSON"), ({"conversations": {"from": "human"}}, "list of turns"),
        ({**ok, "system": "s", "conversations": [{"from": "system", "value": "t"}, *ok["conversations"]]}, "both"),
        ({"conversations": [*ok["conversations"], {"from": "system", "value": "t"}]}, "first turn"),
        ({**ok, "image": [3]}, "paths or image bytes"), ({**ok, "image_bytes": ["x"]}, "must be binary"),
    ]:
        with pytest.raises(DataError, match=message):
            parse_record(bad, source="s", fallback_id="f")
    assert parse_record({"conversations": [{"from": "gpt", "value": None}]}, source="s",
                        fallback_id="f").conversations == (Turn("gpt", ""),)
    assert os.path.isabs(parse_record({**ok, "image": "a.png"}, source="s", fallback_id="f",
                                      image_root="/data").images[0].name)
