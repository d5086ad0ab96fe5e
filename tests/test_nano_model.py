"""The nano tokenizer and init (sailvl2.nano.model): special tokens and generated text round-trip, digits are
spelled one by one, and the release system message costs a few tokens, not ~124 bytes' worth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from sailvl2.nano.model import NANO_LLM, NANO_VISION, build_nano_init, nano_tokenizer_corpus
from sailvl2.processing.prompt import DEFAULT_SYSTEM_MESSAGE, build_prompt
from sailvl2.synth import generate_suite
from sailvl2.tiny import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("nano")
    generate_suite(root / "data", seed=1, sizes={"train": 300, "test": 40}, workers=1)
    texts = [turn["value"] for line in (root / "data" / "train.jsonl").read_text().splitlines()
             for turn in json.loads(line)["conversations"]]
    small_llm = {**NANO_LLM, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16}
    small_vit = {**NANO_VISION, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 2}
    return build_nano_init(root / "init", texts, vision=small_vit, llm=small_llm), texts


def _tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def test_special_tokens_are_single_ids_and_round_trip(nano) -> None:
    tokenizer = _tokenizer(nano[0])
    ids = [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS]
    assert len(set(ids)) == len(SPECIAL_TOKENS) and tokenizer.unk_token_id not in ids
    joined = "".join(SPECIAL_TOKENS)
    encoded = tokenizer.encode(joined, add_special_tokens=False)
    assert encoded == ids
    assert tokenizer.decode(encoded) == joined


def test_generated_text_and_prompts_round_trip(nano) -> None:
    tokenizer = _tokenizer(nano[0])
    texts = nano[1][:400] + ["Unseen words: zyxwvut QUUX 0042 ü ß 你好 \\boxed{-17}"]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    prompt = build_prompt([{"role": "user", "content": "<image>\nHow many shapes?"},
                           {"role": "assistant", "content": "<think>\n2 + 3 = 5\n</think>\n\\boxed{5}"}],
                          add_generation_prompt=False)
    assert tokenizer.decode(tokenizer.encode(prompt, add_special_tokens=False)) == prompt


def test_digits_are_single_tokens(nano) -> None:
    tokenizer = _tokenizer(nano[0])
    for number in ("7", "42", "2024", "1000", "98765"):
        pieces = tokenizer.tokenize(number)
        assert pieces == list(number), (number, pieces)


def test_system_message_is_merged(nano) -> None:
    tokenizer = _tokenizer(nano[0])
    raw_bytes = len(DEFAULT_SYSTEM_MESSAGE.encode("utf-8"))
    cost = len(tokenizer.encode(DEFAULT_SYSTEM_MESSAGE, add_special_tokens=False))
    assert raw_bytes > 100 and cost <= 12, cost  # merged by BPE instead of ~1 token per byte
    corpus = nano_tokenizer_corpus(["a"] * 50)
    assert corpus.count(DEFAULT_SYSTEM_MESSAGE) == 5 and corpus[:50] == ["a"] * 50


def test_nano_init_position_grid_is_sincos(tmp_path):
    import math

    from sailvl2.modeling import SAILVLModel
    from sailvl2.nano.model import NANO_VISION, build_nano_init

    directory = build_nano_init(tmp_path / "init", ["a red star", "the number 12"], seed=0)
    grid = SAILVLModel.from_pretrained(directory).vision_model.preprocessor.pos_embed[0]
    side = NANO_VISION["image_size"] // NANO_VISION["patch_size"]
    dim = NANO_VISION["hidden_size"]
    quarter = dim // 4
    assert grid.shape == (side * side, dim)
    # Hand-computed entries: patch (row 2, col 5); channel 0 = sin(row * 1), channel quarter = cos(row * 1),
    # channel dim/2 + 1 = sin(col * 10000^(-1/quarter)), last channel = cos(col * 10000^(-(quarter-1)/quarter)).
    patch = grid[2 * side + 5]
    assert math.isclose(patch[0].item(), math.sin(2.0), abs_tol=1e-6)
    assert math.isclose(patch[quarter].item(), math.cos(2.0), abs_tol=1e-6)
    assert math.isclose(patch[dim // 2 + 1].item(), math.sin(5 * 10000 ** (-1 / quarter)), abs_tol=1e-6)
    assert math.isclose(patch[-1].item(), math.cos(5 * 10000 ** (-(quarter - 1) / quarter)), abs_tol=1e-6)


def test_scene_grid_is_the_token_grid(nano) -> None:
    """At the nano tile size each cell of the scenes' shape grid is exactly one LLM image token (2x2 patches
    after the pixel shuffle), the alignment the dense vision stage and the shape questions rely on."""
    from sailvl2.nano.model import NANO_IMAGE_SIZE
    from sailvl2.processing import SAILVLProcessor
    from sailvl2.synth.scene import GRID

    processor = SAILVLProcessor.from_pretrained(nano[0])
    assert processor.image_config.image_size == NANO_IMAGE_SIZE
    assert processor.tokens_per_tile == GRID * GRID
    assert NANO_IMAGE_SIZE // GRID == 2 * NANO_VISION["patch_size"]
