"""The univl-chat prompt: golden chat_template_text, the release's first-turn template, multi-turn, thinking."""

from __future__ import annotations

import jinja2
import pytest

from sailvl2.errors import InputError
from sailvl2.processing.prompt import (
    DEFAULT_SYSTEM_MESSAGE,
    THINKING_SUFFIX,
    add_thinking_suffix,
    build_prompt,
)

from .conftest import GOLDEN_CASES, GOLDEN_CKPT, load_case

SYS = f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>"


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_chat_template_text(name):
    case, _ = load_case(name)
    assert build_prompt(case["messages"]) == case["chat_template_text"]


def test_constants_are_the_release_strings():
    assert DEFAULT_SYSTEM_MESSAGE == "你是由抖音内容理解组开发的多模态大模型，英文名叫UniVL, 是一个有用无害的人工智能助手。"
    assert THINKING_SUFFIX == (
        "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
        "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \\boxed{}."
    )


def test_first_turn_matches_release_jinja_template():
    # The release's chat_template.jinja is right for conversations with one user turn (FACTS.md).
    template = jinja2.Environment().from_string((GOLDEN_CKPT / "chat_template.jinja").read_text(encoding="utf-8"))
    conversations = [
        [{"role": "user", "content": "plain string"}],
        [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image", "image": "x"},
                                      {"type": "text", "text": "b"}, {"image_url": {"url": "y"}}]}],
        [{"role": "user", "content": [{"type": "image", "image": "x"}, {"type": "image", "image": "y"},
                                      {"type": "text", "text": "Image-1 and 2?\n"}]}],
    ]
    for messages in conversations:
        for add in (True, False):
            assert build_prompt(messages, add_generation_prompt=add) == template.render(
                messages=messages, add_generation_prompt=add
            )


def test_multi_turn_uses_chat_history_format():
    messages = [
        {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "And its color?"},
    ]
    assert build_prompt(messages) == (
        SYS + "<|im_start|>user\n<image>\nWhat is it?<|im_end|><|im_start|>assistant\nA cat.<|im_end|>"
        "<|im_start|>user\nAnd its color?<|im_end|><|im_start|>assistant\n"
    )
    assert build_prompt(messages, add_generation_prompt=False).endswith("And its color?<|im_end|>")


def test_system_message_and_argument():
    user = {"role": "user", "content": "hi"}
    expected = "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\nhi<|im_end|><|im_start|>assistant\n"
    assert build_prompt([{"role": "system", "content": "Be brief."}, user]) == expected
    assert build_prompt([user], system="Be brief.") == expected
    assert build_prompt([{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, user]) == expected
    assert build_prompt([user], system="").startswith("<|im_start|>system\n<|im_end|>")


def test_image_items_in_all_spellings():
    content = [{"type": "image"}, {"type": "image_url", "image_url": {"url": "u"}}, {"image": "p"},
               {"image_url": "v"}, {"type": "text", "text": "q"}, "raw "]
    assert build_prompt([{"role": "user", "content": content}], add_generation_prompt=False) == (
        SYS + "<|im_start|>user\n" + "<image>\n" * 4 + "qraw <|im_end|>"
    )


def test_thinking_suffix_goes_on_last_user_text():
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "image", "image": "x"}, {"type": "text", "text": "solve"}]},
    ]
    out = add_thinking_suffix(messages)
    assert out[2]["content"][1]["text"] == "solve" + THINKING_SUFFIX
    assert out[0]["content"] == "first" and messages[2]["content"][1]["text"] == "solve"  # input not mutated
    assert add_thinking_suffix(out) == out  # idempotent
    assert add_thinking_suffix([{"role": "user", "content": "q"}])[0]["content"] == "q" + THINKING_SUFFIX
    image_only = add_thinking_suffix([{"role": "user", "content": [{"type": "image", "image": "x"}]}])
    assert build_prompt(image_only).endswith("<image>\n" + THINKING_SUFFIX + "<|im_end|><|im_start|>assistant\n")
    with pytest.raises(InputError, match="user message"):
        add_thinking_suffix([{"role": "assistant", "content": "x"}])


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "non-empty"),
        ("hello", "non-empty"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": "x"}, {"role": "system", "content": "y"}], "only be the first"),
        ([{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]}], "unsupported content item"),
        ([{"role": "user", "content": [{"type": "text"}]}], "unsupported content item"),
        ([{"role": "user", "content": 5}], "content must be"),
        ([{"role": "user", "content": [5]}], "must be dicts"),
    ],
)
def test_prompt_errors(messages, match):
    with pytest.raises(InputError, match=match):
        build_prompt(messages)


def test_system_given_twice_is_an_error():
    with pytest.raises(InputError, match="both a system message"):
        build_prompt([{"role": "system", "content": "a"}, {"role": "user", "content": "b"}], system="c")
