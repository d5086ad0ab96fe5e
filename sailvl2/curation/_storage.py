"""Files of a curation run: the output folder's layout, atomic JSONL writes, and how items, decisions and
curated records are written (internal to :mod:`sailvl2.curation.runner`).

Every write goes to a temporary name beside the target and is renamed into place (``os.replace``), so a
reader, or a resumed run, sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from .types import CurationError, Decision, Item


def write_atomic(path: Path, lines: Iterable[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp, count = path.with_name(f"{path.name}.tmp{os.getpid()}"), 0
    with open(temp, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    os.replace(temp, path)
    return count


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def item_line(item: Item) -> str:
    features = {}
    for key, value in item.features.items():  # non-JSON features are recomputed by the stage that needs them
        try:
            features[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return json.dumps({"id": item.id, "record": item.record, "root": item.root, "scores": item.scores,
                       "features": features}, ensure_ascii=False)


def read_items(path: Path) -> Iterator[Item]:
    for row in read_jsonl(path):
        yield Item(row["id"], row["record"], row["root"], row["scores"], row["features"])


def image_paths(record: dict[str, Any], root: str) -> list[str]:
    value = record.get("image")
    paths = [value] if isinstance(value, str) else [p for p in value or [] if isinstance(p, str)]
    return [p if os.path.isabs(p) else os.path.abspath(os.path.join(root, p)) for p in paths]


def decision_line(decision: Decision, item: Item | None, generated: list[str] | None = None) -> str:
    """One decision as a JSON line; ``generated`` lists the ids of the records the stage made from the item
    (the ``generated`` key is written only when there are some)."""
    row: dict[str, Any] = {"id": decision.id, "stage": decision.stage, "kept": decision.kept,
                           "reason": decision.reason, "scores": decision.scores}
    if not decision.kept and item is not None:  # for the report's contact sheet of dropped examples
        row["image"] = next(iter(image_paths(item.record, item.root)), None)
    if generated:
        row["generated"] = generated
    return json.dumps(row, ensure_ascii=False)


class Layout:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.decisions, self.work = self.root / "decisions", self.root / "work"

    def shard(self, phase: int, shard: int, kind: str) -> Path:
        name = f"phase{phase}-shard{shard:05d}"
        return self.decisions / f"{name}.jsonl" if kind == "decisions" else self.work / f"{name}.{kind}"

    def stage(self, phase: int, name: str, kind: str) -> Path:
        return self.decisions / f"phase{phase}-{name}.jsonl" if kind == "decisions" else \
            self.work / f"phase{phase}-{name}.{kind}"

    def phase(self, phase: int) -> Path:
        """A map phase's done marker (its shard count)."""
        return self.work / f"phase{phase}.done.json"

    def survivors(self, phase: int) -> Path:
        """A global phase's kept items, written when all its stages are done."""
        return self.work / f"phase{phase}.items.jsonl"



def write_curated(items: Iterable[Item], root: Path, shard_size: int, images: str) -> list[Path]:
    """The curated shards ``root/data/curated-NNNNN.jsonl`` of ``shard_size`` records each, built in
    ``root/.data.tmp`` and renamed into place as a whole; returns the shard paths. Raises on a repeated id
    (an input id shaped like a generated one, ``<id>:<stage>.<k>``, can collide with one)."""
    temp, final = root / ".data.tmp", root / "data"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    files, iterator, index = [], _unique(items), 0
    while chunk := list(islice(iterator, shard_size)):
        lines = (json.dumps(output_record(item, images, temp), ensure_ascii=False) for item in chunk)
        write_atomic(temp / f"curated-{index:05d}.jsonl", lines)
        files.append(final / f"curated-{index:05d}.jsonl")
        index += 1
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temp, final)
    return files


def _unique(items: Iterable[Item]) -> Iterator[Item]:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise CurationError(f"two curated records share the id {item.id!r}: an input record's id equals "
                                f"the id of a record a stage generated (<parent id>:<stage>.<k>); rename it")
        seen.add(item.id)
        yield item


def output_record(item: Item, images: str, data_dir: Path) -> dict[str, Any]:
    record = dict(item.record, id=item.id)
    for field in ("image", "video"):
        value = record.get(field)
        if value is None:
            continue
        paths = [_place(p, item.root, images, data_dir) for p in ([value] if isinstance(value, str) else value)]
        record[field] = paths[0] if isinstance(value, str) else paths
    if item.scores:
        record["curation"] = {"scores": item.scores}
    return record


def _place(path: str, root: str, images: str, data_dir: Path) -> str:
    source = path if os.path.isabs(path) else os.path.abspath(os.path.join(root, path))
    if images == "reference" or not os.path.isfile(source):
        return source
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    relative = f"images/{digest[:2]}/{digest}{os.path.splitext(source)[1].lower()}"
    target = data_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return relative
