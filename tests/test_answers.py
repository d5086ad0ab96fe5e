"""Tests of sailvl2.answers: every expected value below is written out by hand."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from sailvl2.answers import (
    GroundedBox,
    ThinkingAnswer,
    ThinkingSplit,
    draw_boxes,
    extract_boxed,
    format_box,
    parse_grounding,
    parse_thinking_answer,
    split_thinking,
)
from sailvl2.errors import InputError

# ----------------------------------------------------------------------------------------------- thinking


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think>b", ThinkingSplit("a", "b", True)),
        (
            "  <think>\n step 1\n step 2 \n</think>\n\n The answer is 4.  ",
            ThinkingSplit("step 1\n step 2", "The answer is 4.", True),
        ),
        # No tags: a plain (non-thinking) answer.
        ("  just an answer \n", ThinkingSplit(None, "just an answer", True)),
        ("", ThinkingSplit(None, "", True)),
        # Missing opening tag (the template put <think> in the prompt): everything before </think> is thinking.
        ("reasoning here</think>final", ThinkingSplit("reasoning here", "final", True)),
        # Unterminated: no answer yet.
        ("<think>I am still thinking about", ThinkingSplit("I am still thinking about", "", False)),
        ("<think>", ThinkingSplit("", "", False)),
        # Empty thinking block (non-thinking mode of a thinking model) is "", not None.
        ("<think>\n\n</think>\n\nHello", ThinkingSplit("", "Hello", True)),
        # The LAST </think> ends the thinking; an inner one is part of the reasoning.
        (
            "<think>I wrote </think> by mistake</think>answer",
            ThinkingSplit("I wrote </think> by mistake", "answer", True),
        ),
        # Thinking spans from the FIRST <think>.
        ("<think>a<think>b</think>c", ThinkingSplit("a<think>b", "c", True)),
        # A block reopened after the last close is unterminated.
        ("<think>a</think>b<think>c", ThinkingSplit("a", "b", False)),
        # Text before the opening tag belongs to neither field.
        ("preamble <think>x</think> y", ThinkingSplit("x", "y", True)),
        # Chinese text.
        (
            "<think>先算面积：3乘4等于12。</think>答案是\\boxed{12}。",
            ThinkingSplit("先算面积：3乘4等于12。", "答案是\\boxed{12}。", True),
        ),
    ],
)
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_split_thinking_is_frozen_and_typed():
    split = split_thinking("<think>a</think>b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.answer = "c"  # type: ignore[misc]
    with pytest.raises(InputError):
        split_thinking(None)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        split_thinking(b"<think>a</think>")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- \boxed{}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("so \\boxed{\\sqrt{\\frac{a}{b^{2}}}} done", "\\sqrt{\\frac{a}{b^{2}}}"),
        # Several boxes: the last one wins.
        ("first \\boxed{A} then \\boxed{B}", "B"),
        ("\\boxed{1} \\boxed{\\frac{3}{4}} and text", "\\frac{3}{4}"),
        # Whitespace between \boxed and the brace, and inside the braces.
        ("\\boxed {x}", "x"),
        ("\\boxed\n{ 7 }", "7"),
        # Not boxed at all / unbalanced.
        ("no box here", None),
        ("\\boxed{\\frac{1}{2}", None),
        ("\\boxed{", None),
        # A truncated last box does not fall back to an earlier one.
        ("\\boxed{1} then \\boxed{2", None),
        # Nested boxes: the outer box is the answer.
        ("\\boxed{\\boxed{x}}", "\\boxed{x}"),
        # Escaped braces are literal characters, not grouping.
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{a\\}b}", "a\\}b"),
        # A command that merely starts with "boxed" is not \boxed.
        ("\\boxedtext{3}", None),
        # Empty box.
        ("\\boxed{}", ""),
        # Chinese content.
        ("答案：\\boxed{十二}", "十二"),
        ("\\boxed{B. 红色}", "B. 红色"),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_rejects_non_str():
    with pytest.raises(InputError):
        extract_boxed(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<think>Maybe \\boxed{3}? No, 4.</think>The answer is \\boxed{4}.",
            ThinkingAnswer("Maybe \\boxed{3}? No, 4.", "The answer is \\boxed{4}.", "4", True),
        ),
        # A box only inside the thinking does not count as the answer.
        (
            "<think>\\boxed{3}</think>I think it is 3.",
            ThinkingAnswer("\\boxed{3}", "I think it is 3.", None, True),
        ),
        # Truncated output: no answer, no box, bad format.
        (
            "<think>Let x = \\boxed{5",
            ThinkingAnswer("Let x = \\boxed{5", "", None, False),
        ),
        # Non-thinking output with a box.
        ("\\boxed{\\frac{1}{2}}", ThinkingAnswer(None, "\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True)),
        (
            "<think>面积是12</think>\\boxed{12}",
            ThinkingAnswer("面积是12", "\\boxed{12}", "12", True),
        ),
    ],
)
def test_parse_thinking_answer(text, expected):
    assert parse_thinking_answer(text) == expected


# ----------------------------------------------------------------------------------------------- grounding


def test_parse_grounding_single_box_scales_to_pixels():
    # 1000 x 500 image: x scales by 1.0, y by 0.5.
    boxes = parse_grounding("<ref>cat</ref><box>[[10, 20, 300, 400]]</box>", (1000, 500))
    assert boxes == [GroundedBox("cat", (10.0, 10.0, 300.0, 200.0), (10, 20, 300, 400))]


def test_parse_grounding_non_square_scaling():
    # 640 x 480: x * 0.64, y * 0.48.
    boxes = parse_grounding("<ref>dog</ref><box>[[250, 500, 750, 1000]]</box>", (640, 480))
    assert boxes[0].box == pytest.approx((160.0, 240.0, 480.0, 480.0))
    assert boxes[0].box_1000 == (250, 500, 750, 1000)


def test_parse_grounding_several_boxes_in_one_box_tag_share_the_label():
    text = "<ref>apple</ref><box>[[0, 0, 100, 100], [200, 200, 300, 300]]</box>"
    boxes = parse_grounding(text, (2000, 1000))
    assert [b.label for b in boxes] == ["apple", "apple"]
    assert boxes[0].box == (0.0, 0.0, 200.0, 100.0)
    assert boxes[1].box == (400.0, 200.0, 600.0, 300.0)


def test_parse_grounding_multiple_refs_in_a_sentence():
    text = (
        "There is a <ref>cat</ref><box>[[100, 100, 200, 200]]</box> and a "
        "<ref>dog</ref><box>[[500, 500, 900, 900]]</box> in the picture."
    )
    boxes = parse_grounding(text, (1000, 1000))
    assert [(b.label, b.box_1000) for b in boxes] == [
        ("cat", (100, 100, 200, 200)),
        ("dog", (500, 500, 900, 900)),
    ]


def test_parse_grounding_box_without_ref_has_no_label():
    boxes = parse_grounding("<box>[[1, 2, 3, 4]]</box>", (1000, 1000))
    assert boxes == [GroundedBox(None, (1.0, 2.0, 3.0, 4.0), (1, 2, 3, 4))]


def test_parse_grounding_label_does_not_leak_across_text():
    text = "<ref>cat</ref><box>[[0, 0, 10, 10]]</box>. The table is at <box>[[20, 20, 30, 30]]</box>"
    boxes = parse_grounding(text, (1000, 1000))
    assert [b.label for b in boxes] == ["cat", None]


def test_parse_grounding_label_covers_directly_following_boxes():
    text = (
        "<ref>person</ref>\n<box>[[0, 0, 10, 10]]</box>,\n"
        "<box>[[20, 20, 30, 30]]</box><box>[[40, 40, 50, 50]]</box>"
    )
    boxes = parse_grounding(text, (1000, 1000))
    assert [b.label for b in boxes] == ["person", "person", "person"]


def test_parse_grounding_tolerates_whitespace_and_newlines():
    text = "<ref> red car \n</ref>  <box>\n[[ 100 ,200,\n 300 , 400 ]]\n</box>"
    boxes = parse_grounding(text, (1000, 1000))
    assert boxes == [GroundedBox("red car", (100.0, 200.0, 300.0, 400.0), (100, 200, 300, 400))]


def test_parse_grounding_chinese_labels():
    text = "图中有<ref>一只猫</ref><box>[[0, 0, 500, 500]]</box>和<ref>狗</ref><box>[[500, 500, 1000, 1000]]</box>。"
    boxes = parse_grounding(text, (800, 600))
    assert [b.label for b in boxes] == ["一只猫", "狗"]
    assert boxes[0].box == (0.0, 0.0, 400.0, 300.0)
    assert boxes[1].box == (400.0, 300.0, 800.0, 600.0)


@pytest.mark.parametrize(
    "box_content",
    [
        "[[1, 2, 3]]",  # too few numbers
        "[[1, 2, 3, 4, 5]]",  # too many
        "[[a, b, c, d]]",  # not numbers
        "[[1, 2, 3, four]]",
        "[[]]",
        "",
        "nonsense",
        "[[1, 2, nan, 4]]",
        "[[1,, 2, 3]]",
    ],
)
def test_parse_grounding_skips_malformed_boxes(box_content):
    assert parse_grounding(f"<ref>x</ref><box>{box_content}</box>", (100, 100)) == []


def test_parse_grounding_keeps_good_boxes_next_to_bad_ones():
    text = "<ref>x</ref><box>[[1, 2, 3], [100, 100, 200, 200], [q, 1, 2, 3]]</box><box>[[oops</box>"
    boxes = parse_grounding(text, (1000, 1000))
    assert boxes == [GroundedBox("x", (100.0, 100.0, 200.0, 200.0), (100, 100, 200, 200))]


def test_parse_grounding_ignores_unterminated_tags_and_plain_text():
    assert parse_grounding("no boxes at all", (100, 100)) == []
    assert parse_grounding("<ref>cat</ref><box>[[1, 2, 3, 4]]", (100, 100)) == []


def test_parse_grounding_single_brackets_and_decimals():
    boxes = parse_grounding("<box>[100.4, 200.6, 300, 400]</box>", (1000, 1000))
    assert boxes[0].box == pytest.approx((100.4, 200.6, 300.0, 400.0))
    assert boxes[0].box_1000 == (100, 201, 300, 400)


def test_parse_grounding_clamps_to_image():
    boxes = parse_grounding("<box>[[-50, 100, 1200, 1500]]</box>", (200, 100))
    assert boxes[0].box == (0.0, 10.0, 200.0, 100.0)
    # The raw box is kept as written.
    assert boxes[0].box_1000 == (-50, 100, 1200, 1500)


def test_parse_grounding_swaps_reversed_corners():
    boxes = parse_grounding("<box>[[800, 600, 200, 100]]</box>", (1000, 1000))
    assert boxes[0].box == (200.0, 100.0, 800.0, 600.0)
    assert boxes[0].box_1000 == (800, 600, 200, 100)


@pytest.mark.parametrize("size", [(0, 100), (100, -1), (100,), "100x100", None, (True, 5), (float("inf"), 10)])
def test_parse_grounding_rejects_bad_image_size(size):
    with pytest.raises(InputError):
        parse_grounding("<box>[[1, 2, 3, 4]]</box>", size)  # type: ignore[arg-type]


def test_grounded_box_is_frozen():
    box = GroundedBox("a", (0.0, 0.0, 1.0, 1.0), (0, 0, 1, 1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.label = "b"  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------- format_box


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        ((10, 20, 300, 400), (1000, 1000), "<box>[[10, 20, 300, 400]]</box>"),
        ((160, 240, 480, 480), (640, 480), "<box>[[250, 500, 750, 1000]]</box>"),
        # 1 / 3 * 1000 = 333.3 -> 333; 2 / 3 * 1000 = 666.7 -> 667.
        ((1, 1, 2, 2), (3, 3), "<box>[[333, 333, 667, 667]]</box>"),
        # Exactly half rounds up (0.5 -> 1, 2.5 -> 3), not to even.
        ((1, 5, 0, 0), (2000, 2000), "<box>[[0, 0, 1, 3]]</box>"),
        # Reversed corners are ordered, out-of-image values clamped.
        ((300, 400, 10, 20), (1000, 1000), "<box>[[10, 20, 300, 400]]</box>"),
        ((-5, -5, 150, 120), (100, 100), "<box>[[0, 0, 1000, 1000]]</box>"),
    ],
)
def test_format_box(box, size, expected):
    assert format_box(box, size) == expected


@pytest.mark.parametrize("box", [(1, 2, 3), (1, 2, 3, "4"), "1234", None, (1, 2, 3, float("nan"))])
def test_format_box_rejects_bad_boxes(box):
    with pytest.raises(InputError):
        format_box(box, (100, 100))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((12.3, 45.6, 78.9, 101.1), (123, 456)),
        ((0, 0, 1919, 1079), (1920, 1080)),
        ((333.3, 17.0, 1500.2, 900.9), (1600, 1000)),
        ((5, 5, 6, 6), (7, 7)),
    ],
)
def test_format_box_round_trip_within_one_pixel(box, size):
    parsed = parse_grounding("<ref>thing</ref>" + format_box(box, size), size)
    assert len(parsed) == 1
    assert parsed[0].label == "thing"
    for got, want in zip(parsed[0].box, box, strict=True):
        assert abs(got - want) <= 1.0


# ----------------------------------------------------------------------------------------------- draw_boxes


def _gray_image(size=(100, 80)) -> Image.Image:
    return Image.new("RGB", size, (128, 128, 128))


def test_draw_boxes_draws_border_and_keeps_input():
    image = _gray_image()
    before = image.tobytes()
    box = GroundedBox(None, (20.0, 30.0, 60.0, 70.0), (200, 375, 600, 875))
    out = draw_boxes(image, [box], color=(255, 0, 0), width=2)
    assert out is not image
    assert out.mode == "RGB" and out.size == image.size
    assert image.tobytes() == before
    # All four sides of the border are red.
    for xy in [(20, 30), (40, 30), (60, 50), (40, 70), (20, 50), (21, 50), (60, 70)]:
        assert out.getpixel(xy) == (255, 0, 0), xy
    # Inside and outside the rectangle are untouched.
    assert out.getpixel((40, 50)) == (128, 128, 128)
    assert out.getpixel((5, 5)) == (128, 128, 128)
    assert out.getpixel((90, 75)) == (128, 128, 128)


def test_draw_boxes_box_at_image_edge_keeps_all_sides_visible():
    out = draw_boxes(_gray_image((50, 40)), [(0.0, 0.0, 50.0, 40.0)], color=(0, 255, 0), width=1)
    assert out.getpixel((49, 20)) == (0, 255, 0)
    assert out.getpixel((25, 39)) == (0, 255, 0)
    assert out.getpixel((0, 20)) == (0, 255, 0)
    assert out.getpixel((25, 0)) == (0, 255, 0)


def test_draw_boxes_writes_label_and_converts_mode():
    image = Image.new("L", (200, 200), 128)
    before = image.tobytes()
    box = GroundedBox("cat 猫", (50.0, 80.0, 150.0, 150.0), (250, 400, 750, 750))
    out = draw_boxes(image, [box], color="blue", width=3)
    assert image.mode == "L" and image.tobytes() == before
    assert out.mode == "RGB"
    # The label background is drawn in the box colour just above the box.
    label_strip = [out.getpixel((x, y)) for x in range(50, 70) for y in range(60, 80)]
    assert (0, 0, 255) in label_strip
    # Without a label nothing is drawn above the box.
    plain = draw_boxes(image, [dataclasses.replace(box, label=None)], color="blue", width=3)
    assert all(plain.getpixel((x, y)) == (128, 128, 128) for x in range(50, 70) for y in range(60, 76))


def test_draw_boxes_no_boxes_returns_equal_copy():
    image = _gray_image()
    out = draw_boxes(image, [])
    assert out is not image and out.tobytes() == image.tobytes()


def test_draw_boxes_rejects_bad_arguments():
    with pytest.raises(InputError):
        draw_boxes("not an image", [])  # type: ignore[arg-type]
    with pytest.raises(InputError):
        draw_boxes(_gray_image(), [], width=0)
    with pytest.raises(InputError):
        draw_boxes(_gray_image(), [(1, 2, 3)])  # type: ignore[list-item]


def test_draw_boxes_from_parsed_grounding():
    image = _gray_image((200, 100))
    boxes = parse_grounding("<ref>a</ref><box>[[100, 100, 500, 900]]</box>", image.size)
    # [[100, 100, 500, 900]] on 200 x 100 is x 20..100, y 10..90.
    assert boxes[0].box == (20.0, 10.0, 100.0, 90.0)
    out = draw_boxes(image, boxes, color=(255, 255, 0), width=1)
    assert out.getpixel((60, 90)) == (255, 255, 0)
    assert out.getpixel((100, 50)) == (255, 255, 0)
