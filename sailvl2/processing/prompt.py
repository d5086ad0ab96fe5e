"""The "univl-chat" prompt, written exactly as the release's ``chat()`` builds it (FACTS.md, "Prompt format").

MPT separator style: every turn is ``<|im_start|>{role}\\n{text}<|im_end|>`` with NO newline after
``<|im_end|>``; the system turn comes first (a fixed Chinese default when none is given) and the generation
prompt is ``<|im_start|>assistant\\n``. Each image item in a message's content list becomes ``<image>\\n``
where it appears; the processor later expands each ``<image>`` into image tokens.

The release's ``chat_template.jinja`` gives the same text for a single user turn (all golden cases), but
writes later assistant turns as ``<|im_assistant|>...``; we follow ``chat()`` (and the training format),
which writes ``<|im_start|>assistant\\n...<|im_end|>``. The ``chat_template`` inside
``tokenizer_config.json`` is a different, unused template and is ignored.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import InputError

__all__ = [
    "DEFAULT_SYSTEM_MESSAGE",
    "IMAGE_PLACEHOLDER",
    "THINKING_SUFFIX",
    "build_prompt",
    "add_thinking_suffix",
]

DEFAULT_SYSTEM_MESSAGE = "你是由抖音内容理解组开发的多模态大模型，英文名叫UniVL, 是一个有用无害的人工智能助手。"
IMAGE_PLACEHOLDER = "<image>"
# Appended (directly, no separator) to the user text for the -Thinking checkpoints (HF card: text + cot_prompt).
THINKING_SUFFIX = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in "
    "\\boxed{}."
)

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_ROLES = ("system", "user", "assistant")


def _is_image_item(item: Mapping[str, Any]) -> bool:
    # Same test as the release template: type "image", or an "image" / "image_url" key; we also take type
    # "image_url" (OpenAI style) without the key.
    return item.get("type") in ("image", "image_url") or "image" in item or "image_url" in item


def _render_content(content: Any, index: int) -> str:
    """A message's content as prompt text: strings verbatim, list items in order."""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        raise InputError(f"message {index}: content must be a string or a list of items, got {type(content).__name__}")
    parts: list[str] = []
    for item in content:
        if isinstance(item, str):
            parts.append(item)
        elif not isinstance(item, Mapping):
            raise InputError(f"message {index}: content items must be dicts, got {type(item).__name__}")
        elif _is_image_item(item):
            parts.append(IMAGE_PLACEHOLDER + "\n")
        elif item.get("type", "text") == "text" and isinstance(item.get("text"), str):
            parts.append(item["text"])
        else:
            raise InputError(
                f"message {index}: unsupported content item {dict(item)!r}; use "
                "{'type': 'text', 'text': ...} or {'type': 'image', 'image': ...}"
            )
    return "".join(parts)


def build_prompt(
    messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, system: str | None = None
) -> str:
    """Prompt text (``<image>`` placeholders not yet expanded) for a conversation.

    ``messages``: dicts with ``role`` in system/user/assistant and ``content`` (a string, or a list of
    ``{"type": "text", "text": ...}`` / image items). A system message may only come first; ``system``
    sets it from the argument instead (giving both is an error). Without either, the release's default
    system message is used.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise InputError(f"message {index} must be a dict with 'role' and 'content', got {message!r}")
        role = message["role"]
        if role not in _ROLES:
            raise InputError(f"message {index}: role must be one of {_ROLES}, got {role!r}")
        if role == "system":
            if index != 0:
                raise InputError(f"message {index}: a system message may only be the first message")
            if system is not None:
                raise InputError("got both a system message and the system= argument; give only one")
        turns.append((role, _render_content(message["content"], index)))
    if turns[0][0] == "system":
        system = turns.pop(0)[1]
    elif system is None:
        system = DEFAULT_SYSTEM_MESSAGE
    parts = [f"{_IM_START}system\n{system}{_IM_END}"]
    parts += [f"{_IM_START}{role}\n{text}{_IM_END}" for role, text in turns]
    if add_generation_prompt:
        parts.append(f"{_IM_START}assistant\n")
    return "".join(parts)


def add_thinking_suffix(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy of ``messages`` with :data:`THINKING_SUFFIX` appended to the text of the last user turn.

    The suffix goes right after the last text item of that turn (the model card writes ``text + cot_prompt``);
    a user turn without text gets it as a new text item at its end. Idempotent.
    """
    out = [dict(message) for message in messages]
    for message in reversed(out):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            if not content.endswith(THINKING_SUFFIX):
                message["content"] = content + THINKING_SUFFIX
            return out
        if not isinstance(content, Sequence):
            raise InputError(f"user content must be a string or a list of items, got {type(content).__name__}")
        items = [dict(item) if isinstance(item, Mapping) else item for item in content]
        texts = [i for i, item in enumerate(items) if isinstance(item, dict) and not _is_image_item(item)
                 and isinstance(item.get("text"), str)]
        if texts and items[texts[-1]]["text"].endswith(THINKING_SUFFIX):
            return out
        if texts:
            items[texts[-1]]["text"] = items[texts[-1]]["text"] + THINKING_SUFFIX
        else:
            items.append({"type": "text", "text": THINKING_SUFFIX})
        message["content"] = items
        return out
    raise InputError("thinking mode needs a user message to append the reasoning instruction to")
