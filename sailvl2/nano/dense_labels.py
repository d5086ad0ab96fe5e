"""Per-token labels of the dense vision stage (nano/dense.py), read off the scene descriptions.

Each LLM image token of a 168-px nano tile covers one cell of the scenes' 3 x 3 grid. Its labels: the kind,
colour and size of the shape in its cell, the cell's row and column words, the characters centred in it
(per ViT patch in the slot layout), the shape's box in the cell, and the structure targets of session 15:
how many shapes the scene holds, and how many share this shape's colour or kind, and for slot-layout charts
and tables whether this token's value is the largest or smallest of its chart (table: of its column).
"""

from __future__ import annotations

from typing import Any

from ..answers import box_coordinates
from ..synth.scene import COL_NAMES, COLOURS, GRID, KINDS, ROW_NAMES, SIZES, scene_from_dict

# Attribute -> class names; the extra last class of each means "no shape in this cell".
SHAPE_ATTRIBUTES: dict[str, tuple[str, ...]] = {"kind": KINDS, "colour": tuple(COLOURS), "size": tuple(SIZES)}
# Where a token's cell is, in the words the questions use ("top left", "middle right"): labelled on every
# cell of every image. The LLM sees image tokens through RoPE's relative positions only, so without this it
# has to count from the <img> token to name a place; the first full run (run 7) could not, even for a single
# shape (position 25 %), while it read kind and count (docs/nano-sessions.md).
CELL_ATTRIBUTES: dict[str, tuple[str, ...]] = {"row": ROW_NAMES, "column": COL_NAMES}
ATTRIBUTES: dict[str, tuple[str, ...]] = {**SHAPE_ATTRIBUTES, **CELL_ATTRIBUTES}
# Characters the OCR scenes draw (words in either case, numbers).
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
IGNORE = -100  # label for cells of images without a shape scene (cross-entropy's ignore_index)
# Structure targets (DenseConfig.structure_weight), each a class index per token:
# - total: on every token of a shapes scene, how many shapes the scene holds;
# - same_colour / same_kind: on a token holding a shape, how many shapes share its colour / kind (0 on empty
#   cells). A head attending to the red shapes then reads "how many red shapes" off any one of them: the
#   run 27 (shipped until session 16) missed 17-27 % of count questions, nearly all off by one (session 15);
# - rank: on a slot-layout chart's category token, 1 = largest value of the chart, 2 = smallest, 3 = between
#   (table: within its column); 0 on the chart's other tokens. The model read every chart value, yet chose the
#   largest / smallest category at 25-41 % (session 15).
MAX_COUNT = GRID * GRID
RANK_CLASSES = ("other", "largest", "smallest", "between")
STRUCTURE_TARGETS: dict[str, int] = {"total": MAX_COUNT + 1, "same_colour": MAX_COUNT + 1,
                                     "same_kind": MAX_COUNT + 1, "rank": len(RANK_CLASSES)}
# Box digits (DenseConfig.box_digit_weight): on a token holding a shape, the hundreds, tens and units digit of
# each of the four 0-1000 coordinates a grounding answer writes (x1, y1, x2, y2; hundreds 0 below 100). With the
# units left out (hundreds and tens only) the multi-task stage wrote fewer boxes right (93 against 97 %) and
# lost more counts and existence questions (docs/nano-sessions.md, session 20).
BOX_DIGIT_POWERS = (2, 1, 0)
BOX_DIGITS = 4 * len(BOX_DIGIT_POWERS)


def cell_of(x: float, y: float, width: int, height: int, grid: int) -> int:
    """Index (row-major) of the LLM token whose cell holds the point (x, y) of a width x height image."""
    row = min(grid - 1, max(0, int(y * grid / height)))
    col = min(grid - 1, max(0, int(x * grid / width)))
    return row * grid + col


def dense_labels(scene: dict[str, Any], grid: int, patches: int = 0) -> dict[str, Any]:
    """Per-token labels of one image's scene (``to_dict`` form): class indices per shape attribute (the "none"
    class where a cell is empty, IGNORE everywhere for non-shape scenes), the shape's pixel box (x1, y1, x2, y2)
    in units of its cell, from the cell's top-left corner (None where there is no shape), the row and column of
    every cell, and per cell the multi-hot of the characters centred in it (all zeros where there are none; None
    for scenes whose text is not tracked: free-layout charts and tables). With ``patches`` (the ViT patch grid
    side, a multiple of ``grid``), ``char_slots`` holds per token the character index centred in each of its
    patches (row-major; ``len(CHARACTERS)`` = none). ``type`` is the scene's type."""
    cells = grid * grid
    labels: dict[str, list[Any]] = {name: [IGNORE] * cells for name in SHAPE_ATTRIBUTES}
    # The scene grid row / column under each token cell's centre (the same cell when grid == GRID).
    labels["row"] = [min(GRID - 1, int((cell // grid + 0.5) * GRID / grid)) for cell in range(cells)]
    labels["column"] = [min(GRID - 1, int((cell % grid + 0.5) * GRID / grid)) for cell in range(cells)]
    labels["chars"] = [None] * cells
    labels["box"] = [None] * cells  # no shape: left out of the box loss
    labels["box_digits"] = [[IGNORE] * BOX_DIGITS] * cells
    labels["type"] = scene.get("type")  # for `text_share`
    labels.update(structure_labels(scene, grid))
    if patches:
        labels["char_slots"] = _char_slots(scene, grid, patches)
    kind = scene.get("type")
    if kind == "shapes":
        for name, classes in SHAPE_ATTRIBUTES.items():
            labels[name] = [len(classes)] * cells
        cell_w, cell_h = scene["width"] / grid, scene["height"] / grid
        for shape, drawn in zip(scene["shapes"], scene_from_dict(scene).shapes):
            cell = cell_of(shape["cx"], shape["cy"], scene["width"], scene["height"], grid)
            for name, classes in SHAPE_ATTRIBUTES.items():
                labels[name][cell] = classes.index(shape[name])
            x1, y1, x2, y2 = drawn.bbox()  # the box grounding answers give, relative to the cell's corner
            left, top = cell % grid * cell_w, cell // grid * cell_h
            labels["box"][cell] = [(x1 - left) / cell_w, (y1 - top) / cell_h,
                                   (x2 - left) / cell_w, (y2 - top) / cell_h]
            coordinates = box_coordinates(drawn.bbox(), (scene["width"], scene["height"]))
            labels["box_digits"][cell] = [value // 10 ** power % 10 for value in coordinates
                                          for power in BOX_DIGIT_POWERS]
        labels["chars"] = [[0.0] * len(CHARACTERS) for _ in range(cells)]
    elif _tracks_characters(scene):
        labels["chars"] = [[0.0] * len(CHARACTERS) for _ in range(cells)]
        for char, x, y in scene_from_dict(scene).character_centres():
            if char in CHARACTERS:
                labels["chars"][cell_of(x, y, scene["width"], scene["height"], grid)][CHARACTERS.index(char)] = 1.0
    return labels


def _tracks_characters(scene: dict[str, Any]) -> bool:
    """Text scenes, and charts and tables in the slot layout (synth/charts.py), know where each character is."""
    return scene.get("type") == "text" or (scene.get("type") in ("chart", "table") and bool(scene.get("slot")))


def _char_slots(scene: dict[str, Any], grid: int, patches: int) -> list[list[int]]:
    # Free-layout charts and tables get "none" everywhere too; their `chars_mask` leaves them out of the loss.
    ratio = patches // grid
    slots = [[len(CHARACTERS)] * ratio * ratio for _ in range(grid * grid)]
    if _tracks_characters(scene):
        for char, x, y in scene_from_dict(scene).character_centres():
            if char in CHARACTERS:  # two centres in one patch (free layout, small fonts): the later one stays
                row = min(patches - 1, int(y * patches / scene["height"]))
                col = min(patches - 1, int(x * patches / scene["width"]))
                token, slot = (row // ratio) * grid + col // ratio, (row % ratio) * ratio + col % ratio
                slots[token][slot] = CHARACTERS.index(char)
    return slots




def structure_labels(scene: dict[str, Any], grid: int) -> dict[str, list[int]]:
    """The structure targets (see STRUCTURE_TARGETS) of one scene's grid x grid tokens; IGNORE where a target
    does not apply (other scene types, free-layout charts, tied values, two ranked items in one token)."""
    cells = grid * grid
    labels = {name: [IGNORE] * cells for name in STRUCTURE_TARGETS}
    kind = scene.get("type")
    if kind == "shapes":
        shapes = scene["shapes"]
        labels["total"] = [len(shapes)] * cells
        labels["same_colour"], labels["same_kind"] = [0] * cells, [0] * cells
        for shape in shapes:
            cell = cell_of(shape["cx"], shape["cy"], scene["width"], scene["height"], grid)
            labels["same_colour"][cell] = sum(other["colour"] == shape["colour"] for other in shapes)
            labels["same_kind"][cell] = sum(other["kind"] == shape["kind"] for other in shapes)
    elif kind in ("chart", "table") and scene.get("slot"):
        labels["rank"] = _rank_labels(scene, grid)
    return labels


def _ranks(values: list[int]) -> list[int] | None:
    """Rank classes of a list of values, or None when the largest or the smallest is tied."""
    top, bottom = max(values), min(values)
    if values.count(top) > 1 or values.count(bottom) > 1:
        return None
    return [1 if v == top else 2 if v == bottom else 3 for v in values]


def _rank_labels(scene: dict[str, Any], grid: int) -> list[int]:
    slot, width, height = scene["slot"], scene["width"], scene["height"]
    cell_at = lambda column, row: cell_of(slot * (column + 0.5), slot * (row + 0.5), width, height, grid)  # noqa: E731
    ranked: list[tuple[int, int | None]] = []  # (token, rank class or None for a tie)
    if scene["type"] == "chart":  # the slots of category k (synth/charts.py, ChartScene.character_centres)
        columns, rows = width // slot, height // slot
        ranks = _ranks(list(scene["values"]))
        for k in range(len(scene["values"])):
            place = (columns - 1, 2 * k) if scene["chart"] == "pie" else (2 * k, rows - 2)
            ranked.append((cell_at(*place), None if ranks is None else ranks[k]))
    else:  # table cell (r, c) from slot (2c, 2r); data rows from r = 1, data columns from c = 1
        for column in range(len(scene["columns"])):
            ranks = _ranks([row[column] for row in scene["cells"]])
            for row in range(len(scene["rows"])):
                ranked.append((cell_at(2 * (column + 1), 2 * (row + 1)), None if ranks is None else ranks[row]))
    labels = [0] * (grid * grid)
    tokens = [token for token, _ in ranked]
    for token, rank in ranked:
        labels[token] = IGNORE if rank is None or tokens.count(token) > 1 else rank
    return labels
