"""Benchmark datasets in VLMEvalKit's TSV format, read from (and written to) local files; nothing is downloaded.

Format (one row per question, tab-separated, first line the header, fields quoted CSV-style when needed):
``index``, ``question`` (required); ``image``: a base64-encoded image file, or several as a JSON / Python list
of base64 strings, or a short string equal to another row's ``index`` (VLMEvalKit stores repeated images once
and refers to them that way); ``image_path``: file name(s), read relative to the TSV's folder when ``image`` is
empty; option columns ``A``, ``B``, ... (empty cells = no such option); ``answer``, ``category``, ``hint``;
every other column goes to :attr:`BenchmarkItem.extra`.

Bad rows are never fatal: a row with a wrong field count, a duplicate index, no question, no answer, options
with a gap (``A``, ``C`` without ``B``), a letter answer that is not one of its options, an image that does not
decode or an image file that is missing is skipped and counted by reason in :class:`LoadedBenchmark` (and
logged). Only file-level problems (file missing, no header, no ``index``/``question`` column) raise
:class:`DatasetError`.

Images are kept encoded (:attr:`BenchmarkItem.image_data`, the file bytes) and decoded on each access of
:attr:`BenchmarkItem.images`, so a loaded benchmark costs about its file size in memory. With
``validate_images=True`` (default) every image is fully decoded once while loading, so undecodable images are
caught there and not mid-run.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DatasetError, ImageLoadError
from ..processing.images import load_image
from .registry import BenchmarkKind, BenchmarkSpec, get_spec

__all__ = ["BenchmarkItem", "DatasetError", "LoadedBenchmark", "SkippedRow", "load_tsv", "write_tsv"]

_log = logging.getLogger(__name__)

# Cells pandas writes for a missing value (VLMEvalKit reads these TSVs with pandas, where they become NaN).
_MISSING = frozenset({"", "nan", "NaN"})
_KNOWN_COLUMNS = frozenset({"index", "question", "answer", "hint", "category", "image", "image_path"})
# VLMEvalKit's image references are other rows' indices, which are short; real base64 images are not.
_MAX_REFERENCE_LENGTH = 64


@dataclass
class BenchmarkItem:
    """One benchmark question. ``options`` keeps letter order (A, B, ...); ``image_data`` holds encoded image
    files (PNG, JPEG, ...) in order; ``images`` decodes them (RGB) on every access."""

    index: str
    question: str
    answer: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    category: str | None = None
    hint: str | None = None
    image_data: list[bytes] = field(default_factory=list)
    image_paths: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def images(self) -> list[Image.Image]:
        return [load_image(data) for data in self.image_data]

    @classmethod
    def from_images(
        cls, index: str | int, question: str, images: Sequence[Image.Image] = (), **fields: Any
    ) -> "BenchmarkItem":
        """An item whose images are given as PIL images (stored as PNG, lossless), e.g. to export a task suite."""
        return cls(index=str(index), question=question, image_data=[_png_bytes(img) for img in images], **fields)


@dataclass(frozen=True)
class SkippedRow:
    """A TSV row that was not loaded: the 1-based line where its record ends, its index if known, why, details."""

    line: int
    index: str | None
    reason: str
    detail: str


@dataclass
class LoadedBenchmark:
    """The usable rows of one benchmark file and a record of the rows that were skipped."""

    name: str
    path: Path
    spec: BenchmarkSpec
    items: list[BenchmarkItem]
    skipped_rows: list[SkippedRow] = field(default_factory=list)

    @property
    def skipped(self) -> dict[str, int]:
        """Number of skipped rows per reason."""
        return dict(Counter(row.reason for row in self.skipped_rows))

    @property
    def skipped_indices(self) -> dict[str, list[str | None]]:
        """Indices of the skipped rows per reason (None where the row had no readable index)."""
        out: dict[str, list[str | None]] = {}
        for row in self.skipped_rows:
            out.setdefault(row.reason, []).append(row.index)
        return out

    def summary(self) -> str:
        text = f"{self.name}: {len(self.items)} items loaded from {self.path}"
        if self.skipped_rows:
            text += ", skipped " + ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return text

    def __len__(self) -> int:
        return len(self.items)


class _RowError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_tsv(
    path: str | os.PathLike,
    benchmark: str | None = None,
    *,
    require_answer: bool = True,
    validate_images: bool = True,
    image_root: str | os.PathLike | None = None,
) -> LoadedBenchmark:
    """Read a VLMEvalKit TSV. ``benchmark`` names it for the registry (default: the file name without
    extension). ``require_answer=False`` loads test splits without answers. ``image_root``: folder for
    relative ``image_path`` entries (default: the TSV's folder)."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "not found"
        raise DatasetError(f"benchmark file {str(path)!r} {problem}")
    name = benchmark or path.stem
    root = Path(image_root) if image_root is not None else path.parent
    _raise_csv_field_limit()
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if not header:
            raise DatasetError(f"benchmark file {str(path)!r} is empty (no header line)")
        missing = [column for column in ("index", "question") if column not in header]
        if missing:
            raise DatasetError(f"benchmark file {str(path)!r} has no {' / '.join(missing)} column; header is {header}")
        if require_answer and "answer" not in header:
            raise DatasetError(
                f"benchmark file {str(path)!r} has no 'answer' column; "
                "pass require_answer=False for a split without answers"
            )
        records = [(reader.line_num, row) for row in reader]
    spec = get_spec(name, header)
    letters = sorted(column for column in header if len(column) == 1 and "A" <= column <= "Z")

    # First pass: raw cells per index, so image references can point at any row (also later ones).
    images_by_index: dict[str, str] = {}
    for _, row in records:
        if len(row) == len(header):
            cells = dict(zip(header, row))
            if cells["index"].strip() and not _missing(cells.get("image", "")):
                images_by_index.setdefault(cells["index"].strip(), cells["image"])

    items: list[BenchmarkItem] = []
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    index_column = header.index("index")
    for line, row in records:
        if not row:  # a blank line
            continue
        index = row[index_column].strip() if len(row) > index_column else None
        try:
            if len(row) != len(header):
                raise _RowError("malformed_row", f"{len(row)} fields, header has {len(header)}")
            cells = dict(zip(header, row))
            index = cells["index"].strip()
            item = _parse_row(cells, letters, spec, require_answer, validate_images, images_by_index, root, seen)
        except _RowError as exc:
            skipped.append(SkippedRow(line, index, exc.reason, exc.detail))
            continue
        seen.add(item.index)
        items.append(item)
    loaded = LoadedBenchmark(name, path, spec, items, skipped)
    if skipped:
        _log.warning("%s", loaded.summary())
    return loaded


def _parse_row(
    cells: dict[str, str], letters: list[str], spec: BenchmarkSpec, require_answer: bool, validate_images: bool,
    images_by_index: dict[str, str], root: Path, seen: set[str],
) -> BenchmarkItem:
    index = cells["index"].strip()
    if not index:
        raise _RowError("malformed_row", "empty index")
    if index in seen:
        raise _RowError("duplicate_index", f"index {index!r} appears more than once")
    question = cells["question"]
    if _missing(question):
        raise _RowError("missing_question", "empty question")
    answer = None if _missing(cells.get("answer", "")) else cells["answer"].strip()
    if answer is None and require_answer:
        raise _RowError("missing_answer", "empty answer")
    options = {letter: cells[letter] for letter in letters if not _missing(cells[letter])}
    expected = [chr(ord("A") + i) for i in range(len(options))]
    if list(options) != expected:
        raise _RowError("bad_options", f"options {list(options)} are not consecutive from A")
    if options and answer is not None and spec.kind in (BenchmarkKind.MULTIPLE_CHOICE, BenchmarkKind.VIDEO):
        if answer not in options:
            raise _RowError("answer_not_in_options", f"answer {answer!r} is not one of the options {list(options)}")
    image_paths = _as_list(cells.get("image_path", ""), "image_path")
    image_data = _row_images(cells.get("image", ""), image_paths, images_by_index, root, validate_images)
    extra = {key: value for key, value in cells.items()
             if key and key not in _KNOWN_COLUMNS and key not in letters and not _missing(value)}
    return BenchmarkItem(
        index=index, question=question, answer=answer, options=options,
        category=None if _missing(cells.get("category", "")) else cells["category"],
        hint=None if _missing(cells.get("hint", "")) else cells["hint"],
        image_data=image_data, image_paths=image_paths, extra=extra,
    )


def _row_images(
    cell: str, image_paths: list[str], images_by_index: dict[str, str], root: Path, validate: bool
) -> list[bytes]:
    if _missing(cell):
        out = []
        for name in image_paths:
            file = Path(name) if Path(name).is_absolute() else root / name
            try:
                out.append(file.read_bytes())
            except OSError as exc:
                detail = f"cannot read image file {str(file)!r}: {exc.strerror or exc}"
                raise _RowError("missing_image_file", detail) from None
    else:
        out = []
        for entry in _as_list(cell, "image"):
            if len(entry) <= _MAX_REFERENCE_LENGTH and entry.strip() in images_by_index:
                referenced = images_by_index[entry.strip()]
                # A reference resolves one level, to a row holding the image itself (or a list of them).
                out += [_decode_base64(value) for value in _as_list(referenced, "image")]
            else:
                out.append(_decode_base64(entry))
    if validate:
        for number, data in enumerate(out, 1):
            try:
                load_image(data)
            except ImageLoadError as exc:
                raise _RowError("undecodable_image", f"image {number}: {exc}") from None
    return out


def _as_list(cell: str, column: str) -> list[str]:
    """A cell holding one value or a JSON / Python list of strings (VLMEvalKit writes ``str(list)``)."""
    text = cell.strip()
    if _missing(text):
        return []
    if not (text.startswith("[") and text.endswith("]")):
        return [text]
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise _RowError("undecodable_image", f"{column} looks like a list but does not parse") from None
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise _RowError("undecodable_image", f"{column} must be a list of strings")
    return value


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _RowError("undecodable_image", f"image is not valid base64 (starts {text[:20]!r})") from None


def _missing(value: str | None) -> bool:
    return value is None or value.strip() in _MISSING


def _raise_csv_field_limit() -> None:
    # Base64 images are far longer than csv's default 128 KiB field limit; sys.maxsize overflows a C long on
    # some platforms, so step down until it is accepted.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_tsv(items: Iterable[BenchmarkItem], path: str | os.PathLike) -> Path:
    """Write ``items`` as a VLMEvalKit TSV that :func:`load_tsv` reads back to equal items (atomic: temp file
    + ``os.replace``). Images are written as the base64 of their stored bytes (PNG for items made with
    :meth:`BenchmarkItem.from_images`); several images as a JSON list. Returns the path."""
    items = list(items)
    path = Path(path)
    letters = sorted({letter for item in items for letter in item.options})
    extra_keys = list(dict.fromkeys(key for item in items for key in item.extra))
    clash = [key for key in extra_keys if key in _KNOWN_COLUMNS or (len(key) == 1 and "A" <= key <= "Z")]
    if clash:
        raise DatasetError(f"extra fields {clash} clash with TSV columns of the same name")
    header = ["index", "image", "image_path", "question", "hint", *letters, "answer", "category", *extra_keys]
    rows = []
    for item in items:
        encoded = [base64.b64encode(data).decode("ascii") for data in item.image_data]
        image_cell = encoded[0] if len(encoded) == 1 else json.dumps(encoded) if encoded else ""
        paths = item.image_paths
        path_cell = paths[0] if len(paths) == 1 else json.dumps(paths) if paths else ""
        rows.append([
            item.index, image_cell, path_cell, item.question, item.hint or "",
            *(item.options.get(letter, "") for letter in letters),
            item.answer or "", item.category or "", *(item.extra.get(key, "") for key in extra_keys),
        ])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, delimiter="\t", lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path
