"""SAIL-wrapper prompts and inputs: hand-written expected strings (PAPER.md 9.4, FACTS.md "Evaluation prompts")
for multiple choice (English, Chinese, hints), short answer, yes/no, open, grounding, several images, video
frames; tile budgets, MSAC, MMMU upscale, thinking."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from sailvl2.errors import TileBudgetError
from sailvl2.evaluation.datasets import BenchmarkItem
from sailvl2.evaluation.prompts import build_prompt
from sailvl2.evaluation.registry import get_spec
from sailvl2.processing.prompt import build_prompt as chat_prompt

from .conftest import GOLDEN_CKPT

MC = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."
THINK = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
)


def _item(question, images=1, **fields):
    colours = [(10 * k % 256, 50, 200) for k in range(images)]
    return BenchmarkItem.from_images("7", question, [Image.new("RGB", (40, 30), c) for c in colours], **fields)


def test_multiple_choice_english_with_hint():
    item = _item("What colour is the car?", hint="The photo was taken at night.",
                 options={"A": "red", "B": "blue", "C": "green"}, answer="B")
    prepared = build_prompt(item, get_spec("MMBench_DEV_EN"))
    assert prepared.text == (
        "<image>\nThe photo was taken at night.\nWhat colour is the car?\nA. red\nB. blue\nC. green\n" + MC
    )
    assert prepared.index == "7" and len(prepared.images) == 1
    assert prepared.max_num == 10 and prepared.use_msac is True
    assert prepared.max_new_tokens == 1024 and prepared.thinking is False


def test_multiple_choice_chinese():
    item = _item("图中的汽车是什么颜色？", options={"A": "红色", "B": "蓝色"}, answer="A")
    assert build_prompt(item, get_spec("MMBench_DEV_CN")).text == (
        "<image>\n图中的汽车是什么颜色？\nA. 红色\nB. 蓝色\n请直接回答选项字母。"
    )
    # Chinese only in an option is still a Chinese prompt (the whole prompt is checked).
    mixed = _item("Which?", options={"A": "猫", "B": "dog"})
    assert build_prompt(mixed, get_spec("CCBench")).text == "<image>\nWhich?\nA. 猫\nB. dog\n请直接回答选项字母。"


def test_multiple_choice_kind_without_options():
    item = _item("How many legs does it have?", answer="4")
    assert build_prompt(item, get_spec("MMMU_DEV_VAL")).text == (
        "<image>\nHow many legs does it have?\nAnswer the question directly."
    )


def test_short_answer_and_tile_budget():
    prepared = build_prompt(_item("What is the invoice number?"), get_spec("DocVQA_VAL"))
    assert prepared.text == "<image>\nWhat is the invoice number?\n" + SHORT
    assert prepared.max_num == 18 and prepared.use_msac is True
    assert build_prompt(_item("Q"), get_spec("InfoVQA_VAL")).max_num == 24


def test_yes_no_prompts():
    mme = build_prompt(_item("Is there a dog in the image? Please answer yes or no."), get_spec("MME"))
    assert mme.text == "<image>\nIs there a dog in the image? Please answer yes or no. " + SHORT
    hallusion = build_prompt(_item("Is the left line longer?"), get_spec("HallusionBench"))
    assert hallusion.text == "<image>\nIs the left line longer? Please answer yes or no. " + SHORT
    pope = build_prompt(_item("Is there a cat?"), get_spec("POPE"))
    assert pope.text == "<image>\nIs there a cat? Please answer yes or no. " + SHORT


def test_open_answer_detail_and_grounding():
    assert build_prompt(_item("Find x. Choices: A:1 B:2"), get_spec("MathVista_MINI")).text == (
        "<image>\nFind x. Choices: A:1 B:2"
    )
    assert build_prompt(_item("Describe the scene."), get_spec("LLaVABench")).text == (
        "<image>\nDescribe the scene.\nAnswer this question in detail."
    )
    assert build_prompt(_item("the dog on the left"), get_spec("RefCOCO_testA")).text == (
        "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: "
        "<ref>the dog on the left</ref>"
    )


def test_literal_image_placeholder_in_dataset_text_is_neutralised():
    item = _item("Compare <image> with the text.", options={"A": "<image>", "B": "none"})
    text = build_prompt(item, get_spec("MMStar")).text
    assert text == f"<image>\nCompare (image) with the text.\nA. (image)\nB. none\n{MC}"
    assert text.count("<image>") == 1


def test_several_images():
    item = _item("Which image shows a cat?", images=3, options={"A": "first", "B": "second", "C": "third"})
    prepared = build_prompt(item, get_spec("BLINK"))
    assert prepared.text == (
        "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\nWhich image shows a cat?\n"
        f"A. first\nB. second\nC. third\n{MC}"
    )
    assert len(prepared.images) == 3
    assert prepared.max_num == 10  # min(10, 64 // 3 = 21)
    assert prepared.use_msac is False  # MSAC only for single images


@pytest.mark.parametrize(("name", "count", "expected"), [
    ("DocVQA_VAL", 2, 18),  # min(18, 32)
    ("DocVQA_VAL", 4, 16),  # min(18, 16)
    ("InfoVQA_VAL", 3, 21),  # min(24, 21)
    ("MMStar", 8, 8),  # min(10, 8)
    ("MMStar", 40, 1),  # min(10, 1)
])
def test_total_tile_budget_across_images(name, count, expected):
    assert build_prompt(_item("q", images=count), get_spec(name)).max_num == expected


def test_more_images_than_the_total_budget_raises():
    with pytest.raises(TileBudgetError, match="65 images"):
        build_prompt(_item("q", images=65), get_spec("MMStar"))


def test_video_frames_are_numbered_and_sampled():
    frames = [Image.new("RGB", (16, 16), (k, 0, 0)) for k in range(20)]
    item = BenchmarkItem.from_images("v1", "What happens?", frames, options={"A": "run", "B": "sit"}, answer="A")
    prepared = build_prompt(item, get_spec("Video-MME"))
    expected_prefix = "".join(f"Frame-{k}: <image>\n" for k in range(1, 17))
    assert prepared.text == expected_prefix + f"What happens?\nA. run\nB. sit\n{MC}"
    # Centres of 16 equal segments of 20 frames: floor((k + 0.5) * 20 / 16), worked out by hand.
    assert [img.getpixel((0, 0))[0] for img in prepared.images] == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19]
    assert prepared.max_num == 1 and prepared.use_msac is False
    # A short clip keeps every frame; a single frame is still labelled as a frame.
    one = build_prompt(BenchmarkItem.from_images("v2", "Q?", frames[:1]), get_spec("ActivityNetQA"))
    assert one.text == "Frame-1: <image>\nQ?" and len(one.images) == 1
    fewer = build_prompt(BenchmarkItem.from_images("v3", "Q?", frames[:5]), dataclasses.replace(get_spec("MVBench"), num_frames=8))
    assert len(fewer.images) == 5


def test_mmmu_upscales_the_first_image_only():
    images = [Image.new("RGB", (30, 20), (9, 99, 199)), Image.new("RGB", (30, 20), (1, 2, 3))]
    item = BenchmarkItem.from_images("m", "Q", images, options={"A": "a", "B": "b"})
    prepared = build_prompt(item, get_spec("MMMU_DEV_VAL"))
    assert [img.size for img in prepared.images] == [(60, 40), (30, 20)]
    assert prepared.images[0].getpixel((59, 39)) == (9, 99, 199)  # a flat colour stays that colour
    assert prepared.max_num == 12 and prepared.use_msac is False
    assert build_prompt(_item("Q"), get_spec("MMStar")).images[0].size == (40, 30)


def test_thinking_prompt_and_budget():
    item = _item("Solve for x.", options={"A": "1", "B": "2"})
    prepared = build_prompt(item, get_spec("MMStar"), thinking=True)
    assert prepared.text == f"<image>\nSolve for x.\nA. 1\nB. 2\n{MC}{THINK}"
    assert prepared.thinking is True and prepared.max_new_tokens == 4096


def test_settings_override_published_defaults():
    spec = dataclasses.replace(get_spec("DocVQA_VAL"), max_num=6, use_msac=False, instruction="\nBe brief.",
                               max_new_tokens=64)
    prepared = build_prompt(_item("Q?"), spec)
    assert prepared.text == "<image>\nQ?\nBe brief."
    assert (prepared.max_num, prepared.use_msac, prepared.max_new_tokens) == (6, False, 64)


def test_prepared_inputs_are_accepted_by_the_processor():
    # Two paths must agree: the processor's placeholder check and tile count per image vs our settings.
    from sailvl2.processing import SAILVLProcessor

    processor = SAILVLProcessor.from_pretrained(GOLDEN_CKPT)
    for item, spec in [(_item("Which?", images=3, options={"A": "x", "B": "y"}), get_spec("BLINK")),
                       (_item("What?"), get_spec("DocVQA_VAL"))]:
        prepared = build_prompt(item, spec)
        text = chat_prompt([{"role": "user", "content": prepared.text}])
        batch = processor(images=[prepared.images], text=[text], max_num=prepared.max_num,
                          use_msac=prepared.use_msac)
        assert len(batch["image_num_tiles"]) == len(prepared.images)
        expected = [processor.num_tiles(img, prepared.max_num, prepared.use_msac) for img in prepared.images]
        assert batch["image_num_tiles"].tolist() == expected


def test_thinking_instruction_is_not_doubled():
    from sailvl2.evaluation.datasets import BenchmarkItem
    from sailvl2.evaluation.prompts import build_prompt
    from sailvl2.evaluation.registry import BenchmarkKind, BenchmarkSpec
    from sailvl2.processing.prompt import THINKING_SUFFIX

    spec = BenchmarkSpec(name="Plain", kind=BenchmarkKind.OPEN_ANSWER, instruction="")
    plain = build_prompt(BenchmarkItem(index="1", question="How many?", answer="3"), spec, thinking=True)
    assert plain.text.count(THINKING_SUFFIX) == 1 and plain.text.endswith(THINKING_SUFFIX)
    carried = BenchmarkItem(index="2", question="How many?" + THINKING_SUFFIX, answer="3")
    assert build_prompt(carried, spec, thinking=True).text.count(THINKING_SUFFIX) == 1
