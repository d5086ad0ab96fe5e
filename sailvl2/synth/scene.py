"""Scene descriptions (shapes on a grid, rendered text) and their PIL rendering.

A scene is a small frozen dataclass that fully determines its image: the writer stores ``to_dict()`` next
to every record so an independent checker can recompute every answer, and ``render()`` is a pure function
of the scene (no randomness), which is what makes the suite byte-identical for any number of workers.

Shapes sit on a coarse 3 x 3 grid, one per cell and entirely inside it, so "left of" / "above" questions
about shapes in different columns / rows are unambiguous, and no two shapes ever overlap.
"""

from __future__ import annotations

import functools
import math
import random
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BACKGROUNDS", "COL_NAMES", "COLOURS", "GRID", "KINDS", "ROW_NAMES", "SIZES", "TEXT_COLOURS", "Shape",
    "ShapeScene", "TextScene", "draw_slot_glyphs", "draw_text", "font_for", "largest_slot_font", "plural",
    "position_name", "sample_shape_scene", "sample_text_scene", "scene_from_dict", "text_size",
]

# Well separated at 224 px and after the ViT's resize; kept apart from the pale backgrounds below.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 135, 15), "yellow": (235, 205, 0), "green": (30, 155, 60),
    "blue": (30, 80, 225), "purple": (140, 55, 185), "black": (25, 25, 25),
}
# Pale, so every shape colour and the text colours contrast with all of them.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "light grey": (232, 232, 232), "cream": (250, 244, 225),
    "pale blue": (228, 238, 252),
}
TEXT_COLOURS = ("black", "blue", "red", "purple", "green")
# Five outlines that stay distinct even when small: round, axis-aligned, pointed up, spiky, rotated.
KINDS = ("circle", "square", "triangle", "star", "diamond")
# Half-extent as a fraction of the cell: large ~2.3x small, so size words are visually obvious.
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.26, "large": 0.36}
GRID = 3
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "centre", "right")
FONT_SIZES = (16, 20, 24, 32, 40, 48)
_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
            "diamond": "diamonds", "shape": "shapes"}


def plural(word: str, count: int) -> str:
    return word if count == 1 else _PLURALS.get(word, word + "s")


def position_name(row: int, col: int) -> str:
    """"top left", "middle right", "centre" (the middle cell), "bottom centre", ..."""
    if (row, col) == (1, 1):
        return "centre"
    if col == 1:
        return f"{ROW_NAMES[row]} centre"
    return f"{ROW_NAMES[row]} {COL_NAMES[col]}"


# ----------------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    row: int
    col: int
    cx: int  # pixel centre (cell centre plus a small jitter that keeps the shape inside its cell)
    cy: int
    half: int  # half-extent in pixels

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def outline(self) -> list[tuple[int, int]]:
        """Integer polygon vertices (circles use ``ellipse`` over the square of side 2*half instead)."""
        cx, cy, h = self.cx, self.cy, self.half
        if self.kind in ("circle", "square"):
            return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
        if self.kind == "triangle":
            return [(cx, cy - h), (cx + h, cy + round(0.8 * h)), (cx - h, cy + round(0.8 * h))]
        if self.kind == "diamond":  # narrower than tall, so it never reads as a rotated square of a square
            w = round(0.72 * h)
            return [(cx, cy - h), (cx + w, cy), (cx, cy + h), (cx - w, cy)]
        if self.kind == "star":
            points = []
            for k in range(10):
                radius = h if k % 2 == 0 else 0.45 * h
                angle = math.pi / 5 * k
                points.append((cx + round(radius * math.sin(angle)), cy - round(radius * math.cos(angle))))
            return points
        raise ValueError(f"unknown shape kind {self.kind!r}")

    def bbox(self) -> tuple[int, int, int, int]:
        """Pixel box (x1, y1, x2, y2), x2/y2 exclusive: PIL fills the vertex pixels themselves."""
        xs, ys = zip(*self.outline())
        return min(xs), min(ys), max(xs) + 1, max(ys) + 1


@dataclass(frozen=True)
class ShapeScene:
    width: int
    height: int
    background: str
    shapes: tuple[Shape, ...]
    type: str = "shapes"

    def signatures(self) -> list[tuple]:
        """What makes two scenes "the same" for split disjointness (jitter and background ignored)."""
        return [("shapes", tuple(sorted((s.kind, s.colour, s.size, s.row, s.col) for s in self.shapes)))]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["background_rgb"] = list(BACKGROUNDS[self.background])
        for shape, entry in zip(self.shapes, data["shapes"]):
            # Stored so the checker compares pixels without importing this module's tables.
            entry["rgb"] = list(COLOURS[shape.colour])
        return data

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), BACKGROUNDS[self.background])
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            fill = COLOURS[shape.colour]
            if shape.kind == "circle":
                h = shape.half
                draw.ellipse((shape.cx - h, shape.cy - h, shape.cx + h, shape.cy + h), fill=fill)
            elif shape.kind == "square":
                h = shape.half
                draw.rectangle((shape.cx - h, shape.cy - h, shape.cx + h, shape.cy + h), fill=fill)
            else:
                draw.polygon(shape.outline(), fill=fill)
        return image


def sample_shape_scene(rng: random.Random, width: int = 224, height: int = 224,
                       count: int | None = None) -> ShapeScene:
    """1-6 shapes in distinct cells; kinds, colours and sizes uniform; a small jitter inside the cell."""
    n = count if count is not None else rng.randint(1, 6)
    cells = rng.sample(range(GRID * GRID), n)
    cell_w, cell_h = width / GRID, height / GRID
    shapes = []
    for cell in sorted(cells):
        row, col = divmod(cell, GRID)
        size = rng.choice(tuple(SIZES))
        half = max(3, round(SIZES[size] * min(cell_w, cell_h)))
        slack = max(0, min(8, int(min(cell_w, cell_h) / 2 - half - 3)))
        cx = int((col + 0.5) * cell_w) + rng.randint(-slack, slack)
        cy = int((row + 0.5) * cell_h) + rng.randint(-slack, slack)
        shapes.append(Shape(rng.choice(KINDS), rng.choice(tuple(COLOURS)), size, row, col, cx, cy, half))
    return ShapeScene(width, height, rng.choice(tuple(BACKGROUNDS)), tuple(shapes))


def sample_focus_shape_scene(rng: random.Random, width: int = 224, height: int = 224) -> ShapeScene:
    """One shape, ~4x its usual extent, near the centre: the warm-up ("focus") scenes. A from-scratch model
    first learns to read the image where the answer fills most image tokens; with small objects the
    answer sits in one of many tokens and the language prior wins (docs/nano-sessions.md, "Why the first run
    ignored the image")."""
    size = rng.choice(tuple(SIZES))
    half = max(3, round(SIZES[size] * 1.3 * min(width, height)))  # 21-47% of the side
    slack_x, slack_y = (max(0, min(24, extent // 2 - half - 4)) for extent in (width, height))
    cx = width // 2 + rng.randint(-slack_x, slack_x)
    cy = height // 2 + rng.randint(-slack_y, slack_y)
    shape = Shape(rng.choice(KINDS), rng.choice(tuple(COLOURS)), size, 1, 1, cx, cy, half)
    return ShapeScene(width, height, rng.choice(tuple(BACKGROUNDS)), (shape,))


# ----------------------------------------------------------------------------------------------- text


@functools.lru_cache(maxsize=64)
def font_for(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's own scalable default font (Pillow >= 10.1 with FreeType), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError, AttributeError):  # old Pillow, or built without FreeType
        return ImageFont.load_default()


def _is_scalable(font: Any) -> bool:
    return isinstance(font, ImageFont.FreeTypeFont)


def text_size(text: str, size: int) -> tuple[int, int, int, int]:
    """Offsets (left, top, right, bottom) of the text's box when drawn at (0, 0), at ``size`` pixels."""
    font = font_for(size)
    box = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    if _is_scalable(font):
        return box
    scale = _bitmap_scale(size)  # the bitmap fallback is drawn small, then enlarged with NEAREST
    return box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale


def _bitmap_scale(size: int) -> int:
    return max(1, round(size / 11))


def draw_text(image: Image.Image, xy: tuple[int, int], text: str, size: int,
              fill: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Draw ``text`` with its box's top-left at ``xy``; returns the box (x1, y1, x2, y2) drawn into."""
    left, top, right, bottom = text_size(text, size)
    x, y = xy[0] - left, xy[1] - top
    font = font_for(size)
    if _is_scalable(font):
        ImageDraw.Draw(image).text((x, y), text, font=font, fill=fill)
    else:
        scale = _bitmap_scale(size)
        mask = Image.new("L", ((right - left) // scale + 1, (bottom - top) // scale + 1), 0)
        ImageDraw.Draw(mask).text((-left // scale, -top // scale), text, font=font, fill=255)
        mask = mask.resize((mask.width * scale, mask.height * scale), Image.NEAREST)
        image.paste(Image.new("RGB", mask.size, fill), (xy[0], xy[1]), mask)
    return xy[0], xy[1], xy[0] + right - left, xy[1] + bottom - top


@dataclass(frozen=True)
class TextScene:
    """One line of text (a word, a number, or two words) at a given place, size and colour.

    ``slot`` > 0 selects the slot layout: every character is centred in its own ``slot`` x ``slot`` px cell
    (monospaced), each word on its own row of cells, and ``x``/``y`` (the block's top-left) are multiples of
    ``slot``. With ``slot`` = the ViT patch size, every glyph sits at the same place inside one patch: the
    from-scratch nano ViT then learns to read 96 % of characters in 3000 steps, while at arbitrary offsets it
    did not learn even single digits in 1500 (docs/nano-sessions.md, session 9). ``slot`` = 0 is the free layout (one
    proportional line)."""

    width: int
    height: int
    background: str
    text: str
    colour: str
    font_size: int
    x: int  # top-left of the text box
    y: int
    category: str  # "word", "number" or "phrase": decides the question asked
    type: str = "text"
    slot: int = 0

    def signatures(self) -> list[tuple]:
        # Strict: one per word, case-folded, so a test word is never a training word (alone, in a phrase
        # or in capitals), whatever its rendering.
        return [("text", word) for word in self.text.lower().split()]

    def text_box(self) -> tuple[int, int, int, int]:
        if self.slot:
            lines = self.text.split(" ")
            return self.x, self.y, self.x + self.slot * max(map(len, lines)), self.y + self.slot * len(lines)
        left, top, right, bottom = text_size(self.text, self.font_size)
        return self.x, self.y, self.x + right - left, self.y + bottom - top

    def character_centres(self) -> list[tuple[str, float, float]]:
        """(character, x, y) centre of every drawn character (spaces excluded), from the layout that drew it."""
        if self.slot:
            return [(char, self.x + (k + 0.5) * self.slot, self.y + (line + 0.5) * self.slot)
                    for line, word in enumerate(self.text.split(" ")) for k, char in enumerate(word)]
        left = text_size(self.text, self.font_size)[0]
        _, top, _, bottom = self.text_box()
        centres = []
        for k, char in enumerate(self.text):
            start = text_size(self.text[:k], self.font_size)[2] - left if k else 0
            end = text_size(self.text[: k + 1], self.font_size)[2] - left
            if char != " ":
                centres.append((char, self.x + (start + end) / 2, (top + bottom) / 2))
        return centres

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.slot:
            del data["slot"]  # free-layout scenes serialise as before the slot layout existed
        data["background_rgb"] = list(BACKGROUNDS[self.background])
        data["rgb"] = list(COLOURS[self.colour])
        data["box"] = list(self.text_box())
        return data

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.width, self.height), BACKGROUNDS[self.background])
        if not self.slot:
            draw_text(image, (self.x, self.y), self.text, self.font_size, COLOURS[self.colour])
            return image
        draw_slot_glyphs(image, self.character_centres(), self.slot, self.font_size, COLOURS[self.colour])
        return image


def draw_slot_glyphs(image: Image.Image, centres: list[tuple[str, float, float]], slot: int, size: int,
                     fill: tuple[int, int, int]) -> None:
    """Draw each (character, x, y) with the glyph's own box centred in the ``slot``-px cell centred at (x, y)."""
    for char, cx, cy in centres:
        left, top, right, bottom = text_size(char, size)
        draw_text(image, (int(cx - slot / 2) + (slot - (right - left)) // 2,
                          int(cy - slot / 2) + (slot - (bottom - top)) // 2), char, size, fill)


def largest_slot_font(slot: int) -> int:
    """The largest font size whose glyphs fit a ``slot``-px cell (the smallest size when none does)."""
    return max([size for size in FONT_SIZES if _fits_slot(size, slot)] or [min(FONT_SIZES)])


# Common short words: the OCR vocabulary (split by hash, so val/test words are unseen in training).
WORDS = tuple(dict.fromkeys("""
apple river stone cloud green house table water light night paper music heart bread chair dream earth
field glass horse juice knife lemon money north ocean piano queen radio smile tiger uncle voice whale
young zebra amber bacon candy delta eagle flame grape honey igloo jelly koala llama mango nurse olive
panda quilt robin salad tulip urban vivid wagon yacht angle badge camel daisy ember fable gecko hazel
ivory jolly kayak lunar maple nylon orbit pearl quest raven sugar torch unity vapor wheat yeast zesty
book fish moon star rain snow wind fire tree leaf rose bird frog lion bear wolf duck goat lamb crab
milk rice corn salt soup cake tea cup box pen map key bag hat sun sky sea bus car van jet dog cat fox
owl bee ant pig cow hen egg pie jam nut fig kiwi pear plum lime city town road park farm shop bank
school garden market window bridge castle forest planet rocket silver orange yellow purple summer
winter spring autumn monday friday number letter circle square button pencil rabbit turtle monkey
dragon guitar violin camera ticket basket bottle candle carpet coffee cookie dinner flower hammer
island jacket kitten ladder mirror needle pocket puzzle ribbon saddle tomato velvet wallet zipper
able acid aged also area army away baby back ball band base bath beam bell belt best bike bill bird
blue boat body bold bone boot born boss bowl bulk burn busy cafe calm camp card care cart case cash
cave cell chef chip city clay club coal coat code coin cold cook cool copy core cost crew crop dark
data date dawn deal deep deer desk dial dice diet dish disk dock door dove down draw drum dust duty
east easy edge exit face fact fair fall farm fast fear film fine firm flag flat flow foam fold folk
food foot fork form fort free fuel full fund gain game gate gear gift girl glow glue gold golf good
grid grow gulf hair half hall hand hard harp head heat herb hero high hill hint hole home hook hope
horn host hour huge idea inch iron item jazz join joke jump june jury keen kind king kite knot lake
land lane lava lawn lazy lens life lift line link list loaf lock loft long loop lord luck lung mail
main mall mask meal meat menu mild mile mind mint mist mode mood most moss moth nail name navy neck
nest news nice node noon nose note oven pace pack page pain pair palm path peak pine pink pipe plan
poem pole pond pool port post pump quiz race rack rail ramp rank rest ring road rock roof room root
rope ruby rule safe sail sale sand seat seed ship shoe side sign silk sing size skin slow soap sock
soft soil song sort spot step stop suit surf swan tail tall tank tape task taxi team tent term test
text tide tile time tiny tone tool tour town toy trip tube tune twin unit user vase vast verb view
vine wall warm wave weak wear week well west wide wild wing wire wise wood wool word work yard year
zero zone
""".split()))  # dict.fromkeys: unique, in a fixed order


def sample_text_scene(rng: random.Random, width: int = 224, height: int = 224, min_font: int = 0,
                      slot: int = 0) -> TextScene:
    """A word, number or two-word phrase; ``min_font`` > 0 draws only from the font sizes >= it (the
    warm-up scenes: large single words and numbers). ``slot`` > 0: the slot layout (see TextScene), with
    the font sizes whose glyphs fit a slot and words that fit a row of slots (``min_font`` then only leaves
    out the two-word phrases)."""
    if slot:
        return _sample_slot_text_scene(rng, width, height, slot, min_font)
    category, text = _sample_text(rng, WORDS, min_font)
    return _free_text_scene(rng, width, height, min_font, category, text)


def sample_letter_scene(rng: random.Random, width: int = 224, height: int = 224, slot: int = 0) -> TextScene:
    """A random string of 2-6 letters (a quarter of them in capitals), drawn like a word: the extra
    letter-reading images (``generate_suite(letter_images=...)``). Held-out words are never training words
    (split by signature), so reading them needs spelling what is drawn, letter by letter, which the suite's
    few hundred word images do not teach (docs/nano-sessions.md, session 12)."""
    if slot and (width // slot < 2 or height // slot < 1):
        raise ValueError(f"a {width}x{height} image has too few {slot}-px text slots")
    longest = min(6, width // slot) if slot else 6
    text = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, longest)))
    text = text.upper() if rng.random() < 0.25 else text
    if slot:
        return _slot_text_scene(rng, width, height, slot, "word", text)
    return _free_text_scene(rng, width, height, 0, "word", text)


def _free_text_scene(rng: random.Random, width: int, height: int, min_font: int, category: str,
                     text: str) -> TextScene:
    target = rng.choice([size for size in FONT_SIZES if size >= min_font])
    for font_size in sorted((s for s in FONT_SIZES if s <= target), reverse=True):  # largest that fits
        left, top, right, bottom = text_size(text, font_size)
        if right - left <= width - 16 and bottom - top <= height - 16:
            break
    w, h = right - left, bottom - top
    x = rng.randint(8, max(8, width - 8 - w))
    y = rng.randint(8, max(8, height - 8 - h))
    return TextScene(width, height, rng.choice(tuple(BACKGROUNDS)), text, rng.choice(TEXT_COLOURS),
                     font_size, x, y, category)


def _sample_text(rng: random.Random, words: Sequence[str], min_font: int) -> tuple[str, str]:
    """(category, text): a word, a number or a two-word phrase (no phrases for the warm-up's ``min_font``)."""
    category = rng.choice(("word", "word", "number", "phrase") if not min_font else ("word", "number"))
    if category == "number":
        text = str(rng.choice((rng.randint(0, 99), rng.randint(100, 9999))))
    elif category == "phrase":
        text = f"{rng.choice(words)} {rng.choice(words)}"
    else:
        text = rng.choice(words)
    return category, text.upper() if category != "number" and rng.random() < 0.25 else text


def _fits_slot(size: int, slot: int) -> bool:
    """The widest glyph ("W") leaves a 4-px margin in the slot, and the tallest span ("Wg") a 2-px one."""
    left, _, right, _ = text_size("W", size)
    _, top, _, bottom = text_size("Wg", size)
    return right - left <= slot - 4 and bottom - top <= slot - 2


def _sample_slot_text_scene(rng: random.Random, width: int, height: int, slot: int, min_font: int) -> TextScene:
    columns, rows = width // slot, height // slot
    if columns < 4 or rows < 2:
        raise ValueError(f"a {width}x{height} image has too few {slot}-px text slots")
    category, text = _sample_text(rng, [word for word in WORDS if len(word) <= columns], min_font)
    return _slot_text_scene(rng, width, height, slot, category, text)


def _slot_text_scene(rng: random.Random, width: int, height: int, slot: int, category: str, text: str) -> TextScene:
    columns, rows = width // slot, height // slot
    fitting = [size for size in FONT_SIZES if _fits_slot(size, slot)] or [min(FONT_SIZES)]
    lines = text.split(" ")
    x = slot * rng.randint(0, columns - max(map(len, lines)))
    y = slot * rng.randint(0, rows - len(lines))
    return TextScene(width, height, rng.choice(tuple(BACKGROUNDS)), text, rng.choice(TEXT_COLOURS),
                     rng.choice(fitting), x, y, category, slot=slot)


def scene_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild a scene written by ``to_dict`` (extra derived keys such as ``rgb`` are ignored)."""
    kind = data["type"]
    if kind == "shapes":
        shapes = tuple(Shape(**{k: s[k] for k in Shape.__dataclass_fields__}) for s in data["shapes"])
        return ShapeScene(data["width"], data["height"], data["background"], shapes)
    if kind == "text":
        return TextScene(**{k: data[k] for k in TextScene.__dataclass_fields__ if k in data})
    from .charts import ChartScene, TableScene  # charts imports this module
    if kind == "chart":
        return ChartScene.from_dict(data)
    if kind == "table":
        return TableScene.from_dict(data)
    raise ValueError(f"unknown scene type {kind!r}")
