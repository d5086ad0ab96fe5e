"""The training record: one sample (conversation turns, image references, kind) and its validation.

A record on disk is one JSON object (a JSONL line, a Parquet / HF ``datasets`` row, or a WebDataset
``KEY.json`` plus image members)::

    {"id": "cap-1", "image": "imgs/cat.png",           # a path, a list of paths, or absent (text only)
     "conversations": [{"from": "human", "value": "<image>\\nDescribe it."},
                       {"from": "gpt", "value": "A cat."}],
     "system": "optional system prompt", "kind": "direct"}  # kind: "direct" (default) or "cot"

Turns may also be spelled ``{"role": "user"|"assistant"|"system", "content": ...}``; roles are normalised
to the release data's ``human`` / ``gpt``. A leading system turn becomes ``Record.system`` so every record
has one canonical form. ``video`` (a list of frame paths) is kept as its own field; frames are images.

Every reason a sample is dropped reads ``"<category>: <detail>"`` with a fixed category (the ``REASON_*``
constants), so the stream can count reasons while logs keep the details.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..errors import ImageLoadError
from ..processing.images import load_image
from ..processing.prompt import IMAGE_PLACEHOLDER
from .errors import DataError

__all__ = [
    "KINDS", "REASON_BAD_JSON", "REASON_BAD_RECORD", "REASON_EMPTY_TURN", "REASON_LAST_NOT_GPT",
    "REASON_MISSING_IMAGE", "REASON_NO_CONVERSATIONS", "REASON_PLACEHOLDER_IN_REPLY",
    "REASON_PLACEHOLDER_MISMATCH", "REASON_UNDECODABLE_IMAGE", "ImageRef", "Record", "Skipped", "Turn",
    "parse_record", "reason_category", "validate_record",
]

KINDS = ("direct", "cot")
REASON_BAD_JSON = "bad JSON"
REASON_BAD_RECORD = "bad record"
REASON_NO_CONVERSATIONS = "no conversations"
REASON_EMPTY_TURN = "empty turn"
REASON_LAST_NOT_GPT = "last turn not from gpt"
REASON_PLACEHOLDER_IN_REPLY = "image placeholder in gpt turn"
REASON_PLACEHOLDER_MISMATCH = "image placeholder mismatch"
REASON_MISSING_IMAGE = "missing image file"
REASON_UNDECODABLE_IMAGE = "undecodable image"

_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


def reason_category(reason: str) -> str:
    """The fixed category of a skip reason (the text before the first ``": "``), used as the counting key."""
    return reason.partition(": ")[0]


@dataclass(frozen=True, repr=False)
class ImageRef:
    """One image of a record: a filesystem path (``data is None``) or encoded bytes held in memory.

    ``name`` is the resolved path, or for in-memory images a display name (e.g. ``shard.tar/key.0.png``)
    used in messages only.
    """

    name: str
    data: bytes | None = None

    @property
    def in_memory(self) -> bool:
        return self.data is not None

    @property
    def path(self) -> str | None:
        return None if self.data is not None else self.name

    @property
    def source(self) -> str | bytes:
        """What ``load_image`` / ``preprocess_images`` accept: the path, or the bytes."""
        return self.name if self.data is None else self.data

    def exists(self) -> bool:
        return self.data is not None or os.path.isfile(self.name)

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        with open(self.name, "rb") as handle:
            return handle.read()

    def load(self) -> Image.Image:
        """The decoded RGB image; raises ``ImageLoadError`` naming the file."""
        return load_image(self.source)

    def __repr__(self) -> str:  # never dump image bytes into logs
        return f"ImageRef({self.name!r}{'' if self.data is None else f', <{len(self.data)} bytes>'})"


@dataclass(frozen=True)
class Turn:
    """One conversation turn; ``role`` is ``"human"``, ``"gpt"`` or ``"system"``."""

    role: str
    value: str

    def as_dict(self) -> dict[str, str]:
        """The release data's spelling, as ``training.tokenize.ConversationEncoder`` takes it."""
        return {"from": self.role, "value": self.value}


@dataclass(frozen=True)
class Record:
    """One parsed training sample. ``source`` says where it came from (``file:line``, ``shard.tar:key``)."""

    id: str
    images: tuple[ImageRef, ...]
    conversations: tuple[Turn, ...]
    system: str | None = None
    kind: str = "direct"
    source: str = ""
    video: tuple[ImageRef, ...] = ()
    # Per gpt turn, the [image_index, x1, y1, x2, y2] boxes (0-1000) its answer depends on, each optionally
    # followed by a subject index, or [image_index] alone (a count's sink): optional, read only by focus supervision
    # (training/focus.py).
    focus: tuple[tuple[tuple[float, ...], ...], ...] | None = None

    def messages(self) -> list[dict[str, str]]:
        return [turn.as_dict() for turn in self.conversations]


@dataclass(frozen=True)
class Skipped:
    """An item a reader could not turn into a :class:`Record` (the stream counts and skips it)."""

    reason: str
    source: str

    @property
    def category(self) -> str:
        return reason_category(self.reason)


# --------------------------------------------------------------------------------------------- parsing


def parse_record(
    obj: Any,
    *,
    source: str,
    fallback_id: str,
    image_root: str | os.PathLike | None = None,
    kind: str = "direct",
    images: Sequence[ImageRef] | None = None,
) -> Record:
    """Build a :class:`Record` from one decoded JSON object / table row; raises ``DataError`` if malformed.

    ``image`` may be a path or a list of paths (relative ones resolve against ``image_root``), or, from
    tables, encoded bytes or ``{"bytes", "path"}`` structs (a ``datasets.Image`` column); a row may also carry
    the bytes in ``image_bytes`` (then ``image`` only names them). ``images`` (WebDataset members) overrides
    both. Content problems (empty turns, placeholder counts, files) are left to :func:`validate_record`.
    """
    if not isinstance(obj, Mapping):
        raise DataError(f"expected a JSON object, got {type(obj).__name__}")
    record_id = obj.get("id")
    if record_id is None or record_id == "":
        record_id = fallback_id
    elif isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        raise DataError(f"'id' must be a string or an integer, got {record_id!r}")
    record_id = str(record_id)
    root = os.fspath(image_root) if image_root is not None else None
    if images is None:
        images = _row_images(obj, root, record_id)
    video = tuple(_image_refs(obj.get("video"), root, "video", record_id))
    turns = _parse_turns(obj.get("conversations"))
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise DataError(f"'system' must be a string, got {type(system).__name__}")
    if turns and turns[0].role == "system":
        if system is not None:
            raise DataError("both a 'system' field and a leading system turn")
        system, turns = turns[0].value, turns[1:]
    if any(turn.role == "system" for turn in turns):
        raise DataError("a system turn is allowed only as the first turn")
    record_kind = obj.get("kind") or kind
    if record_kind not in KINDS:
        raise DataError(f"'kind' must be one of {KINDS}, got {record_kind!r}")
    return Record(record_id, tuple(images), tuple(turns), system, record_kind, source, video,
                  _parse_focus(obj.get("focus")))


def _parse_focus(value: Any) -> tuple[tuple[tuple[float, ...], ...], ...] | None:
    """`focus`: a list (one entry per gpt turn) of lists of [image_index, x1, y1, x2, y2] boxes, 0-1000, each
    optionally followed by its subject (an integer >= 0); `[image_index]` alone names that image's start token,
    which makes the turn a count (training/focus.py)."""
    if value is None:
        return None
    if isinstance(value, str):  # tables may store it as a JSON string, like the conversations
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise DataError(f"'focus' is a string but not JSON: {exc}") from exc
    turns = []
    for entry in value if isinstance(value, Sequence) else [None]:
        if not isinstance(entry, Sequence) or isinstance(entry, (str, bytes)):
            raise DataError(f"'focus' must be a list (per gpt turn) of lists of boxes, got {value!r:.80}")
        boxes = []
        for box in entry:
            if (isinstance(box, Sequence) and len(box) in (1, 2)
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in box)):
                # the image's start token: a count's sink, or with a subject that subject's target (training/focus.py)
                boxes.append(tuple(box))
                continue
            if (not isinstance(box, Sequence) or isinstance(box, (str, bytes)) or len(box) not in (5, 6)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
                    or not all(0 <= v <= 1000 for v in box[1:5]) or box[0] < 0 or box[1] > box[3] or box[2] > box[4]
                    or (len(box) == 6 and (box[5] < 0 or box[5] != int(box[5])))):
                raise DataError(f"a focus box must be [image_index, x1, y1, x2, y2] with 0 <= x1 <= x2 <= 1000 "
                                f"and 0 <= y1 <= y2 <= 1000, optionally followed by a subject (an integer >= 0), "
                                f"or [image_index] alone (a count's sink; training/focus.py) or [image_index, "
                                f"subject], got {box!r:.80}")
            boxes.append(tuple(box))
        turns.append(tuple(boxes))
    return tuple(turns)


def _parse_turns(value: Any) -> list[Turn]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):  # Parquet / HF tables often store the turns as a JSON string
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise DataError(f"'conversations' is a string but not JSON: {exc}") from exc
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise DataError(f"'conversations' must be a list of turns, got {type(value).__name__}")
    turns = []
    for index, turn in enumerate(value):
        if not isinstance(turn, Mapping):
            raise DataError(f"turn {index} must be an object, got {type(turn).__name__}")
        # Table rows have every struct field, so a missing spelling shows up as None, not as absent.
        role = turn.get("from") if turn.get("from") is not None else turn.get("role")
        text = turn.get("value") if turn.get("value") is not None else turn.get("content")
        if role not in _ROLES:
            raise DataError(f"turn {index} has role {role!r}; expected one of {sorted(_ROLES)}")
        if text is None:
            text = ""  # reported by validate_record as an empty turn, with the other content problems
        if not isinstance(text, str):
            raise DataError(f"turn {index} text must be a string, got {type(text).__name__}")
        turns.append(Turn(_ROLES[role], text))
    return turns


def _row_images(obj: Mapping[str, Any], root: str | None, record_id: str) -> list[ImageRef]:
    blobs = obj.get("image_bytes")
    if blobs is None:
        return _image_refs(obj.get("image"), root, "image", record_id)
    blobs = [blobs] if isinstance(blobs, (bytes, bytearray, memoryview)) else list(blobs)
    names = obj.get("image")
    names = [names] if isinstance(names, str) else list(names or [])
    if len(names) != len(blobs) or not all(isinstance(n, str) for n in names):
        names = [f"{record_id}#image{k}" for k in range(len(blobs))]
    refs = []
    for name, blob in zip(names, blobs):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise DataError(f"'image_bytes' entries must be binary, got {type(blob).__name__}")
        refs.append(ImageRef(name, bytes(blob)))
    return refs


def _image_refs(value: Any, root: str | None, field: str, record_id: str) -> list[ImageRef]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)) else [value]
    refs = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping):  # a datasets.Image struct: bytes (embedded) and/or the original path
            data, path = item.get("bytes"), item.get("path")
            if data is not None:
                refs.append(ImageRef(str(path or f"{record_id}#{field}{index}"), bytes(data)))
                continue
            item = path
        if isinstance(item, (bytes, bytearray, memoryview)):
            refs.append(ImageRef(f"{record_id}#{field}{index}", bytes(item)))
        elif isinstance(item, str) and item:
            path = os.path.expanduser(item)
            if root is not None and not os.path.isabs(path):
                path = os.path.join(root, path)
            refs.append(ImageRef(os.path.normpath(path)))
        else:
            raise DataError(f"'{field}' entries must be paths or image bytes, got {item!r:.80}")
    return refs


# --------------------------------------------------------------------------------------------- validation


def validate_record(record: Record, check_images: bool = False) -> str | None:
    """Why ``record`` cannot be trained on (``"<category>: <detail>"``), or None if it is fine.

    Checks, in order: at least one turn; no turn without text; the last turn is the model's (``gpt``);
    no ``<image>`` inside a ``gpt`` turn; the number of ``<image>`` placeholders in human turns equals the
    number of images. A record with images but **no** placeholder at all is valid: the tokenizer puts one
    ``<image>\\n`` per image before the first human text, as the release's ``chat()`` does. Image files
    (``images`` and ``video`` frames) must exist; this costs one ``stat`` each, so it always runs. With
    ``check_images`` every image (file or in-memory bytes) is also decoded with ``load_image``, which catches
    corrupt files before they reach a training step but costs a full decode. Video frames are not counted
    against ``<image>`` placeholders: how a video is spelled in the prompt is the tokenizer's business.
    """
    if not record.conversations:
        return REASON_NO_CONVERSATIONS
    for index, turn in enumerate(record.conversations):
        if not turn.value.strip():
            return f"{REASON_EMPTY_TURN}: turn {index} ({turn.role}) has no text"
    last = record.conversations[-1].role
    if last != "gpt":
        return f"{REASON_LAST_NOT_GPT}: the conversation ends with a {last} turn"
    placeholders = 0
    for index, turn in enumerate(record.conversations):
        count = turn.value.count(IMAGE_PLACEHOLDER)
        if count and turn.role == "gpt":
            return f"{REASON_PLACEHOLDER_IN_REPLY}: turn {index} holds {count} {IMAGE_PLACEHOLDER}"
        placeholders += count
    if placeholders != len(record.images) and not (placeholders == 0 and record.images):
        return (f"{REASON_PLACEHOLDER_MISMATCH}: {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) "
                f"for {len(record.images)} image(s)")
    refs = record.images + record.video
    for ref in refs:
        if not ref.exists():
            return f"{REASON_MISSING_IMAGE}: {ref.name}"
    if check_images:
        for ref in refs:
            try:
                ref.load()
            except ImageLoadError as exc:
                return f"{REASON_UNDECODABLE_IMAGE}: {exc}"
    return None
