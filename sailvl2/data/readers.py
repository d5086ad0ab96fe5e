"""Readers: JSONL, Parquet, HF ``datasets`` saved to disk, and WebDataset tar shards -> records.

Every reader yields one item per sample in file order: a :class:`Record`, or a :class:`Skipped` when the
sample cannot be parsed (a bad JSON line, a malformed row, a tar sample without its ``.json``). Only
whole-file problems (missing, unreadable, not the claimed format) raise ``DataError``. Content checks
(placeholders, image files) are :func:`validate_record`'s, run by the mixture stream.

Items are numbered 0, 1, ... across all files of a source; ``iter_records(spec, start=n)`` begins at item n
and skips what it cheaply can without parsing (blank-line counting, Parquet row-group metadata, tar headers),
which is what makes resuming a stream affordable.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DataError
from .records import (
    KINDS, REASON_BAD_JSON, REASON_BAD_RECORD, ImageRef, Record, Skipped, parse_record,
)

__all__ = ["FORMATS", "SourceSpec", "count_items", "iter_records"]

FORMATS = ("jsonl", "parquet", "hf", "webdataset")
_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet", ".tar": "webdataset", ".tar.gz": "webdataset",
             ".tgz": "webdataset"}
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
_BATCH = 256  # rows per Arrow batch: bounds memory for rows that carry image bytes


@dataclass(frozen=True)
class SourceSpec:
    """Where one dataset's records live.

    ``path``: a ``.jsonl`` / ``.parquet`` / ``.tar`` file, a glob of such files, a list of them, or a
    directory written by ``datasets.Dataset.save_to_disk``. ``format`` (one of ``FORMATS``) overrides the
    inference from the path. Relative image paths resolve against ``image_root``, by default the folder
    holding the data file they appear in (for ``hf``, the folder holding the dataset directory). ``kind`` is
    the default record kind.
    """

    path: str | os.PathLike | Sequence[str | os.PathLike]
    format: str | None = None
    image_root: str | os.PathLike | None = None
    kind: str = "direct"

    def __post_init__(self) -> None:
        path = self.path
        if isinstance(path, (str, os.PathLike)):
            object.__setattr__(self, "path", os.fspath(path))
        elif isinstance(path, Sequence) and path:
            object.__setattr__(self, "path", tuple(os.fspath(p) for p in path))
        else:
            raise DataError(f"a data path must be a path or a non-empty list of paths, got {path!r}")
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"unknown data format {self.format!r}; expected one of {FORMATS}")
        if self.kind not in KINDS:
            raise DataError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.image_root is not None:
            object.__setattr__(self, "image_root", os.fspath(self.image_root))

    def files(self) -> list[str]:
        """The data files (or the one dataset directory), globs expanded in sorted order."""
        entries = [self.path] if isinstance(self.path, str) else list(self.path)
        files: list[str] = []
        for entry in entries:
            entry = os.path.expanduser(entry)
            if glob.has_magic(entry):
                matches = sorted(glob.glob(entry))
                if not matches:
                    raise DataError(f"no data files match {entry!r}")
                files += matches
            elif os.path.exists(entry):
                files.append(entry)
            else:
                raise DataError(f"data path {entry!r} not found")
        return files

    def resolved_format(self) -> str:
        """``format`` if given, else inferred: a directory -> ``hf``, else from the file suffixes."""
        if self.format is not None:
            return self.format
        files = self.files()
        if len(files) == 1 and os.path.isdir(files[0]):
            if any(os.path.isfile(os.path.join(files[0], m)) for m in _HF_MARKERS):
                return "hf"
            raise DataError(f"directory {files[0]!r} is not a saved `datasets` dataset (no {_HF_MARKERS[0]})")
        formats = {_suffix_format(f) for f in files}
        if len(formats) != 1 or None in formats:
            raise DataError(f"cannot infer one data format from {files[:4]}; use .jsonl, .parquet or .tar files "
                            f"of one kind, or give format= one of {FORMATS}")
        return formats.pop()  # type: ignore[return-value]


def _suffix_format(path: str) -> str | None:
    lower = path.lower()
    return next((fmt for suffix, fmt in _SUFFIXES.items() if lower.endswith(suffix)), None)


def _as_spec(spec: SourceSpec | str | os.PathLike) -> SourceSpec:
    return spec if isinstance(spec, SourceSpec) else SourceSpec(spec)


def iter_records(spec: SourceSpec | str | os.PathLike, start: int = 0) -> Iterator[Record | Skipped]:
    """Yield a source's items (records, or :class:`Skipped` for unparseable samples) from item ``start``."""
    spec = _as_spec(spec)
    fmt, files = spec.resolved_format(), spec.files()
    if fmt == "hf":
        if len(files) != 1 or not os.path.isdir(files[0]):
            raise DataError(f"format 'hf' needs one dataset directory, got {files[:4]}")
        yield from _iter_hf(files[0], spec, start)
        return
    reader, counter = _FILE_READERS[fmt]
    for path in files:
        if os.path.isdir(path):
            raise DataError(f"{path!r} is a directory; format {fmt!r} reads files")
        if start:
            count = counter(path)
            if start >= count:  # the whole file lies before the start item
                start -= count
                continue
        yield from reader(path, spec, start)
        start = 0


def count_items(spec: SourceSpec | str | os.PathLike) -> int:
    """How many items ``iter_records(spec)`` yields, without parsing them."""
    spec = _as_spec(spec)
    fmt, files = spec.resolved_format(), spec.files()
    if fmt == "hf":
        return len(_load_hf(files[0]))
    return sum(_FILE_READERS[fmt][1](path) for path in files)


def _root(spec: SourceSpec, path: str) -> str:
    if spec.image_root is not None:
        return str(spec.image_root)
    # A saved HF dataset directory counts as one data file: datasets owns its contents, images live beside it.
    return os.path.dirname(os.path.abspath(path.rstrip("/\\")))


def _parse(obj: Any, where: str, fallback_id: str, root: str, spec: SourceSpec,
           images: Sequence[ImageRef] | None = None) -> Record | Skipped:
    try:
        return parse_record(obj, source=where, fallback_id=fallback_id, image_root=root, kind=spec.kind,
                            images=images)
    except DataError as exc:
        return Skipped(f"{REASON_BAD_RECORD}: {exc}", where)


# --------------------------------------------------------------------------------------------- JSONL


def _iter_jsonl(path: str, spec: SourceSpec, start: int) -> Iterator[Record | Skipped]:
    root, name, index = _root(spec, path), os.path.basename(path), -1
    try:
        with open(path, "rb") as handle:  # bytes: a line of bad UTF-8 is one skipped line, not a crash
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                index += 1
                if index < start:
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    yield Skipped(f"{REASON_BAD_JSON}: line {lineno}: {exc}", where)
                    continue
                yield _parse(obj, where, f"{name}#{index}", root, spec)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc}") from exc


def _count_jsonl(path: str) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------- Parquet


def _parquet_file(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("reading Parquet needs pyarrow: pip install 'sailvl2[data]'") from exc
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError / its own types for non-Parquet files
        raise DataError(f"cannot read Parquet file {path!r}: {exc}") from exc


def _iter_parquet(path: str, spec: SourceSpec, start: int) -> Iterator[Record | Skipped]:
    parquet, root, name = _parquet_file(path), _root(spec, path), os.path.basename(path)
    index = 0
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if index + rows <= start:  # skip whole row groups by their metadata, never decoding them
            index += rows
            continue
        try:  # decode one row group whole, so read errors surface here and not half way through it
            batches = list(parquet.iter_batches(batch_size=_BATCH, row_groups=[group]))
        except Exception as exc:
            raise DataError(f"cannot read Parquet file {path!r} (row group {group}): {exc}") from exc
        for batch in batches:
            for row in batch.to_pylist():
                if index >= start:
                    yield _parse(row, f"{path}:row {index}", f"{name}#{index}", root, spec)
                index += 1


def _count_parquet(path: str) -> int:
    return int(_parquet_file(path).metadata.num_rows)


# --------------------------------------------------------------------------------------------- HF datasets


def _load_hf(path: str) -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("reading a saved `datasets` dataset needs datasets: pip install 'sailvl2[data]'") from exc
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as exc:  # datasets raises FileNotFoundError / ValueError / its own errors
        raise DataError(f"cannot load the `datasets` dataset at {path!r}: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if "train" not in loaded and len(splits) != 1:
            raise DataError(f"{path!r} holds splits {splits}; save one split or a 'train' split")
        loaded = loaded["train" if "train" in loaded else splits[0]]
    return loaded


def _iter_hf(path: str, spec: SourceSpec, start: int) -> Iterator[Record | Skipped]:
    # The Arrow format hands out rows as plain values: datasets.Image columns stay {"bytes", "path"} structs
    # instead of being decoded to PIL images we would only have to encode again.
    dataset = _load_hf(path)
    table_view, root, name = dataset.with_format("arrow"), _root(spec, path), os.path.basename(path.rstrip("/"))
    for begin in range(start, len(dataset), _BATCH):
        for offset, row in enumerate(table_view[begin : begin + _BATCH].to_pylist()):
            index = begin + offset
            yield _parse(row, f"{path}:row {index}", f"{name}#{index}", root, spec)


# --------------------------------------------------------------------------------------------- WebDataset


def _tar_groups(archive: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """(key, members) per sample: consecutive files sharing the name up to the first dot of the base name.

    As in WebDataset, a sample's files must be adjacent in the shard; members without a dot in their base
    name belong to no sample and are ignored. Only headers are read here.
    """
    key, members = "", []
    for member in archive:
        if not member.isfile():
            continue
        folder, base = posixpath.split(member.name)
        stem, dot, _ = base.partition(".")
        if not stem or not dot:
            continue
        member_key = posixpath.join(folder, stem)
        if members and member_key != key:
            yield key, members
            members = []
        key = member_key
        members.append(member)
    if members:
        yield key, members


def _open_tar(path: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot open tar shard {path!r}: {exc}") from exc


def _iter_tar(path: str, spec: SourceSpec, start: int) -> Iterator[Record | Skipped]:
    root = _root(spec, path)
    with _open_tar(path) as archive:
        try:
            for index, (key, members) in enumerate(_tar_groups(archive)):
                if index >= start:
                    yield _tar_item(archive, path, key, members, spec, root)
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"cannot read tar shard {path!r}: {exc}") from exc


def _count_tar(path: str) -> int:
    with _open_tar(path) as archive:
        try:
            return sum(1 for _ in _tar_groups(archive))
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"cannot read tar shard {path!r}: {exc}") from exc


def _tar_item(archive: tarfile.TarFile, path: str, key: str, members: list[tarfile.TarInfo], spec: SourceSpec,
              root: str) -> Record | Skipped:
    where = f"{path}:{key}"
    meta, single, indexed = None, [], {}
    for member in members:
        ext = posixpath.basename(member.name).partition(".")[2].lower()
        head, _, tail = ext.partition(".")
        if ext == "json":
            meta = member
        elif ext in _IMAGE_EXTS:
            single.append(member)
        elif head.isdigit() and tail in _IMAGE_EXTS:
            if int(head) in indexed:
                return Skipped(f"{REASON_BAD_RECORD}: sample {key} has two images numbered {head}", where)
            indexed[int(head)] = member
    if meta is None:
        return Skipped(f"{REASON_BAD_RECORD}: sample {key} has no {key}.json", where)
    if len(single) > 1 or (single and indexed):
        names = [posixpath.basename(m.name) for m in single + list(indexed.values())]
        return Skipped(f"{REASON_BAD_RECORD}: sample {key} has ambiguous images {names}; number them "
                       f"KEY.0.png, KEY.1.png, ...", where)
    if indexed and sorted(indexed) != list(range(len(indexed))):
        return Skipped(f"{REASON_BAD_RECORD}: sample {key} images are numbered {sorted(indexed)}, "
                       f"not 0..{len(indexed) - 1}", where)
    try:
        obj = json.loads(_read_member(archive, meta))
    except ValueError as exc:
        return Skipped(f"{REASON_BAD_JSON}: {meta.name}: {exc}", where)
    image_members = single or [indexed[i] for i in range(len(indexed))]
    refs = [ImageRef(f"{path}/{m.name}", _read_member(archive, m)) for m in image_members]
    # Without image members the JSON's own "image" paths (if any) are used, resolved next to the shard.
    return _parse(obj, where, key, root, spec, images=refs or None)


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise tarfile.TarError(f"member {member.name} has no data")
    with handle:
        return handle.read()


_FILE_READERS = {
    "jsonl": (_iter_jsonl, _count_jsonl),
    "parquet": (_iter_parquet, _count_parquet),
    "webdataset": (_iter_tar, _count_tar),
}
