"""Pipeline inputs -> :class:`Item` stream: JSONL, Parquet, WebDataset shards, folders of captioned images.

Files are found and their format inferred by :class:`sailvl2.data.readers.SourceSpec` (globs, lists,
suffixes); every object is normalised by :func:`sailvl2.data.records.parse_record`, so items carry the
training engine's record format whatever the input spelling (``role``/``content`` turns, a leading system
turn, JSON-string conversations of Parquet rows). Extra JSON fields are kept.

Images that arrive as bytes (WebDataset members, Parquet ``image``/``image_bytes`` columns) are written once
to ``<images_dir>/<file stem>-<path hash>/<index>-<k>.<ext>`` and referenced by absolute path, so every stage and the
curated output see plain files. A ``folder`` input yields caption records::

    {"id": "sub/cat", "image": "sub/cat.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nDescribe the image."},
                       {"from": "gpt", "value": "<the caption>"}]}

The caption is ``name.txt`` (stripped text) or ``name.json`` (a string, ``{"caption": ...}`` /
``{"text": ...}``, or a whole record with ``conversations``). An item that cannot be parsed becomes a
``Decision`` of stage ``"read"`` (dropped, with the reason) in its place, so counts stay exact. Ids are
unique over the whole run (records without one get ``<file stem>:<index>``, or their tar sample key): the
second ``x`` becomes ``x@2``, the third ``x@3``, and so on.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .config import InputSpec
from .types import CurationError, Decision, Item

# sailvl2.data is imported where it is used: its package imports torch (through sailvl2.processing), and only
# the driver reads inputs, not the worker processes that import this module with the runner.
if TYPE_CHECKING:
    from ..data.records import ImageRef

__all__ = ["CAPTION_PROMPT", "READ_STAGE", "iter_inputs", "iter_source"]

READ_STAGE = "read"
CAPTION_PROMPT = "<image>\nDescribe the image."
_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"})
_CONSUMED = frozenset({"id", "image", "image_bytes", "conversations", "system", "kind", "video"})
_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"BM", "bmp"))


def iter_inputs(inputs: Iterable[InputSpec], images_dir: str | os.PathLike) -> Iterator[Item | Decision]:
    """Every input's items in order (inputs in list order, files in sorted order), ids made unique."""
    seen: set[str] = set()
    for spec in inputs:
        for entry in iter_source(spec, images_dir):
            if entry.id in seen:
                entry = _renamed(entry, seen)
            seen.add(entry.id)
            yield entry


def iter_source(spec: InputSpec, images_dir: str | os.PathLike) -> Iterator[Item | Decision]:
    """One input's items (ids unique within a file, not across inputs: see :func:`iter_inputs`)."""
    from ..data.errors import DataError
    from ..data.readers import SourceSpec
    from ..data.records import REASON_BAD_JSON, REASON_BAD_RECORD

    images_dir = os.fspath(images_dir)
    paths = [spec.path] if isinstance(spec.path, str) else list(spec.path)
    if spec.format == "folder" or (spec.format is None and len(paths) == 1 and os.path.isdir(paths[0])):
        for folder in paths:
            if not os.path.isdir(folder):
                raise CurationError(f"folder input {folder!r} is not a directory")
            yield from _iter_folder(folder, spec)
        return
    try:
        source = SourceSpec(spec.path, spec.format, spec.image_root, spec.kind)
        fmt, files = source.resolved_format(), source.files()
    except DataError as exc:
        raise CurationError(f"input {spec.path!r}: {exc}") from exc
    if fmt not in ("jsonl", "parquet", "webdataset"):
        raise CurationError(f"input {spec.path!r}: format {fmt!r} is not supported by curation")
    for path in files:
        if os.path.isdir(path):
            raise CurationError(f"input {path!r} is a directory; use format: folder for images with captions")
        root = spec.image_root or os.path.dirname(os.path.abspath(path))
        stem = _stem(path)
        # The path hash keeps two inputs named alike (a/x.tar, b/x.tar) from sharing an image folder.
        save_dir = os.path.join(images_dir, f"{stem}-{hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:8]}")
        for index, (where, obj, blobs, key) in enumerate(_RAW_READERS[fmt](path)):
            fallback = key or f"{stem}:{index}"
            if isinstance(obj, Exception):
                category = REASON_BAD_RECORD if isinstance(obj, DataError) else REASON_BAD_JSON
                yield Decision(fallback, READ_STAGE, False, f"{category}: {where}: {obj}")
                continue
            yield _item(obj, where, fallback, root, spec.kind, blobs, save_dir, index)


# --------------------------------------------------------------------------------------------- raw readers

# (where, the decoded object or the exception that stopped it, image bytes, sample key of a tar sample)
_Raw = tuple[str, Any, "list[ImageRef] | None", "str | None"]


def _read_jsonl(path: str) -> Iterator[_Raw]:
    try:
        with open(path, "rb") as handle:  # bytes: one line of bad UTF-8 is one dropped item, not a crash
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, json.loads(line), None, None
                except ValueError as exc:
                    yield where, exc, None, None
    except OSError as exc:
        raise CurationError(f"cannot read {path!r}: {exc}") from exc


def _read_parquet(path: str) -> Iterator[_Raw]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        index = 0
        for batch in parquet.iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield f"{path}:row {index}", row, None, None
                index += 1
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError are these
        raise CurationError(f"cannot read Parquet file {path!r}: {exc}") from exc


def _read_tar(path: str) -> Iterator[_Raw]:
    from ..data.errors import DataError
    # The WebDataset grouping and member reading are the training readers' own, so both see the same samples.
    from ..data.readers import _read_member, _tar_groups
    from ..data.records import ImageRef

    try:
        with tarfile.open(path, "r:*") as archive:
            for key, members in _tar_groups(archive):
                where = f"{path}:{key}"
                meta = [m for m in members if m.name.endswith(".json")]
                images = sorted((m for m in members if _ext(m.name) in _IMAGE_EXTS), key=lambda m: m.name)
                if len(meta) != 1:
                    yield where, DataError(f"sample {key} has {len(meta)} .json members, expected 1"), None, key
                    continue
                try:
                    obj = json.loads(_read_member(archive, meta[0]))
                except ValueError as exc:
                    yield where, exc, None, key
                    continue
                refs = [ImageRef(f"{path}/{m.name}", _read_member(archive, m)) for m in images]
                yield where, obj, refs or None, key
    except (tarfile.TarError, OSError) as exc:
        raise CurationError(f"cannot read tar shard {path!r}: {exc}") from exc


_RAW_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "webdataset": _read_tar}


# --------------------------------------------------------------------------------------------- folders


def _iter_folder(folder: str, spec: InputSpec) -> Iterator[Item | Decision]:
    from ..data.records import REASON_BAD_RECORD

    root = os.path.abspath(spec.image_root or folder)
    for relpath in _walk(folder):
        stem = os.path.splitext(relpath)[0]
        record_id = stem.replace(os.sep, "/")
        obj, problem = _caption_record(os.path.join(folder, stem))
        if obj is None:
            yield Decision(record_id, READ_STAGE, False, f"{REASON_BAD_RECORD}: {relpath}: {problem}")
            continue
        image = os.path.relpath(os.path.join(folder, relpath), root)
        yield _item({"id": record_id, **obj, "image": image}, os.path.join(folder, relpath), record_id, root,
                    spec.kind, None, "", 0)


def _walk(folder: str) -> list[str]:
    found = []
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if _ext(name) in _IMAGE_EXTS:
                found.append(os.path.relpath(os.path.join(current, name), folder))
    return found


def _caption_record(stem_path: str) -> tuple[dict[str, Any] | None, str]:
    """The record fields of one image's caption file, or (None, why not)."""
    try:
        if os.path.isfile(stem_path + ".txt"):
            with open(stem_path + ".txt", encoding="utf-8") as handle:
                return _caption(handle.read().strip()), ""
        if not os.path.isfile(stem_path + ".json"):
            return None, "no caption file (.txt or .json) next to the image"
        with open(stem_path + ".json", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, f"unreadable caption: {exc}"
    if isinstance(data, str):
        return _caption(data.strip()), ""
    if isinstance(data, Mapping) and "conversations" in data:
        return {key: value for key, value in data.items() if key != "image"}, ""
    if isinstance(data, Mapping) and isinstance(data.get("caption", data.get("text")), str):
        return _caption(data.get("caption", data.get("text")).strip()), ""
    return None, "caption .json must be a string, {\"caption\": ...} or a record with 'conversations'"


def _caption(text: str) -> dict[str, Any]:
    return {"conversations": [{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": text}]}


# --------------------------------------------------------------------------------------------- records


def _item(obj: Any, where: str, fallback: str, root: str, kind: str, blobs: list[ImageRef] | None,
          save_dir: str, index: int) -> Item | Decision:
    from ..data.errors import DataError
    from ..data.records import REASON_BAD_RECORD, parse_record

    try:
        parsed = parse_record(obj, source=where, fallback_id=fallback, kind=kind, images=blobs)
    except DataError as exc:
        record_id = obj.get("id") if isinstance(obj, Mapping) and isinstance(obj.get("id"), str) else fallback
        return Decision(record_id or fallback, READ_STAGE, False, f"{REASON_BAD_RECORD}: {where}: {exc}")
    record: dict[str, Any] = {"id": parsed.id}
    images = [_materialise(ref, save_dir, f"{index:08d}-{k}") for k, ref in enumerate(parsed.images)]
    if images:
        single = len(images) == 1 and not isinstance(obj.get("image"), list)
        record["image"] = images[0] if single else images
    record["conversations"] = parsed.messages()
    if parsed.system is not None:
        record["system"] = parsed.system
    if "kind" in obj or parsed.kind != "direct":
        record["kind"] = parsed.kind
    if parsed.video:
        record["video"] = [_materialise(ref, save_dir, f"{index:08d}-v{k}") for k, ref in enumerate(parsed.video)]
    for key, value in obj.items():
        if key not in _CONSUMED and value is not None and _jsonable(value):
            record[str(key)] = value
    return Item(parsed.id, record, root)


def _materialise(ref: ImageRef, save_dir: str, name: str) -> str:
    """A path for ``ref``: its own, or, for in-memory bytes, a file written once (atomically) under
    ``save_dir``."""
    if ref.data is None:
        return ref.name
    ext = _ext(ref.name) if _ext(ref.name) in _IMAGE_EXTS else _sniff(ref.data)
    path = os.path.abspath(os.path.join(save_dir, f"{name}.{ext}"))
    if not os.path.isfile(path):
        os.makedirs(save_dir, exist_ok=True)
        temp = f"{path}.tmp{os.getpid()}"
        with open(temp, "wb") as handle:
            handle.write(ref.data)
        os.replace(temp, path)
    return path


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), "bin")


def _renamed(entry: Item | Decision, seen: set[str]) -> Item | Decision:
    base, counter = entry.id, 2
    new_id = f"{base}@{counter}"
    while new_id in seen:
        counter += 1
        new_id = f"{base}@{counter}"
    if isinstance(entry, Decision):
        return Decision(new_id, entry.stage, entry.kept, entry.reason, entry.scores)
    entry.record["id"] = new_id
    return Item(new_id, entry.record, entry.root, entry.scores, entry.features)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _ext(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in posixpath.basename(name) else ""


def _stem(path: str) -> str:
    base = os.path.basename(path.rstrip("/\\"))
    for suffix in (".tar.gz", ".jsonl", ".parquet", ".tar", ".tgz"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0]

