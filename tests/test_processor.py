"""SAILVLProcessor: golden parity (prompt, ids, tiles, pixels), batching, budgets, errors, save/load."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sailvl2.errors import ContextLengthError, ImagePlaceholderError, InputError, TileBudgetError
from sailvl2.processing import THINKING_SUFFIX, SAILVLProcessor

from .conftest import GOLDEN_CASES, GOLDEN_CKPT, GOLDEN_IMAGES, GOLDEN_ROOT, load_case

IMG_800, IMG_300 = GOLDEN_IMAGES / "img_800x600.png", GOLDEN_IMAGES / "img_300x1000.png"


def _run_case(processor: SAILVLProcessor, name: str):
    case, arrays = load_case(name)
    prompt = processor.apply_chat_template(case["messages"])
    images = [GOLDEN_IMAGES / file for file in case["images"]]
    return case, arrays, prompt, processor(images=images or None, text=prompt)


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_prompt_ids_and_tiles(sailvl_processor, name):
    case, _, prompt, out = _run_case(sailvl_processor, name)
    assert prompt == case["chat_template_text"]
    assert sailvl_processor.expand_prompt(prompt, case["num_patches_list"]) == case["prompt"]
    assert out["input_ids"].tolist() == [case["input_ids"]]
    assert out["attention_mask"].tolist() == [[1] * case["num_input_tokens"]]
    assert out["image_num_tiles"].tolist() == case["num_patches_list"]
    assert int((out["input_ids"] == sailvl_processor.image_token_id).sum()) == case["num_img_context_tokens"]
    assert out["input_ids"].dtype == torch.long and out["image_num_tiles"].dtype == torch.long


@pytest.mark.parametrize("name", [n for n in GOLDEN_CASES if n != "text_only"])
def test_golden_pixels(sailvl_processor, name):
    case, arrays, _, out = _run_case(sailvl_processor, name)
    ref = case["pixel_values"]
    pixels = out["pixel_values"]
    assert list(pixels.shape) == ref["shape"] and pixels.dtype == torch.float32
    values = pixels.double()
    for ours, theirs in [(values.sum(), ref["sum"]), (values.abs().sum(), ref["abs_sum"])]:
        assert abs(float(ours) - theirs) <= 1e-3 * abs(theirs)
    for ours, theirs in zip(values.sum(dim=(1, 2, 3)).tolist(), ref["tile_sums"]):
        assert abs(ours - theirs) <= 1e-3 * abs(theirs)
    sample = pixels.reshape(-1)[:: ref["strided_sample_step"]].numpy()
    assert np.abs(sample - np.asarray(ref["strided_sample"], np.float32)).max() <= 1e-6
    if "pixel_values" in arrays:
        assert np.abs(pixels.numpy() - arrays["pixel_values"]).max() <= 1e-6
    # Stricter than the documented tolerances: our tiling is bit-identical to the release's.
    assert hashlib.sha256(pixels.contiguous().numpy().tobytes()).hexdigest() == ref["sha256_f32"]


def test_text_only_has_no_pixel_values(sailvl_processor):
    _, _, _, out = _run_case(sailvl_processor, "text_only")
    assert "pixel_values" not in out and out["image_num_tiles"].tolist() == []


def test_special_token_ids(sailvl_processor):
    p = sailvl_processor
    assert (p.image_token_id, p.eos_token_id, p.pad_token_id, p.tokens_per_tile) == (151671, 151645, 151643, 256)
    assert p.decode([151669, 151670]) == "<img></img>"
    assert p.batch_decode([[151645], [151667]]) == ["<|im_end|>", "<think>"]


def test_left_padded_mixed_batch_equals_unbatched_rows(sailvl_processor):
    p = sailvl_processor
    texts = [
        p.apply_chat_template([{"role": "user", "content": "Just text, no image."}]),
        p.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "One."}]}]),
        p.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                            {"type": "text", "text": "Two."}]}]),
    ]
    images = [None, IMG_300, [IMG_800, IMG_300]]
    batch = p(images=images, text=texts)
    singles = [p(images=img, text=t) for img, t in zip(images, texts)]
    width = batch["input_ids"].shape[1]
    assert width == max(s["input_ids"].shape[1] for s in singles)
    for row, single in enumerate(singles):
        ids, mask = batch["input_ids"][row], batch["attention_mask"][row]
        pad = width - single["input_ids"].shape[1]
        assert ids[:pad].eq(p.pad_token_id).all() and mask[:pad].eq(0).all() and mask[pad:].eq(1).all()
        assert torch.equal(ids[pad:], single["input_ids"][0])
    assert batch["image_num_tiles"].tolist() == [4, 7, 4]
    assert torch.equal(batch["pixel_values"], torch.cat([s["pixel_values"] for s in singles[1:]]))
    # A list of per-prompt lists for a single prompt is the same as the flat list.
    assert torch.equal(p(images=[[IMG_800, IMG_300]], text=texts[2])["input_ids"], singles[2]["input_ids"])


def test_to_bfloat16_casts_only_pixels(sailvl_processor):
    out = sailvl_processor(images=IMG_800, text="<image>\nhi").to(torch.bfloat16)
    assert out["pixel_values"].dtype == torch.bfloat16
    assert out["input_ids"].dtype == out["attention_mask"].dtype == out["image_num_tiles"].dtype == torch.long
    direct = sailvl_processor(images=IMG_800, text="<image>\nhi", pixel_dtype=torch.bfloat16)
    assert torch.equal(direct["pixel_values"], out["pixel_values"])


def test_tile_budget_per_image_and_total(sailvl_processor):
    p = sailvl_processor
    text = "<image>\n" * 3 + "q"
    # Evaluation rule: max_num = min(max_num, total_max_num // num_images) -> min(10, 12 // 3) = 4 per image;
    # 800x600 with <= 4 tiles: (1,1) and (2,2) tie at diff 1/3 and the image is big enough -> 2x2 + thumbnail.
    out = p(images=[IMG_800] * 3, text=text, total_max_num=12)
    assert out["image_num_tiles"].tolist() == [p.num_tiles(IMG_800, max_num=4)] * 3 == [5, 5, 5]
    # With <= 2 tiles, 4:3 is closest to 1:1 -> a single tile, no thumbnail.
    assert p(images=[IMG_800] * 3, text=text, max_num=2, total_max_num=None)["image_num_tiles"].tolist() == [1, 1, 1]
    small = Image.new("RGB", (8, 8))
    with pytest.raises(TileBudgetError, match="65 images"):
        p(images=[small] * 65, text="<image>" * 65)


def test_placeholder_mismatch_both_ways(sailvl_processor):
    with pytest.raises(ImagePlaceholderError, match=r"1 '<image>' placeholder\(s\) but 2 image\(s\)"):
        sailvl_processor(images=[IMG_800, IMG_300], text="<image>\nCompare.")
    with pytest.raises(ImagePlaceholderError, match=r"2 '<image>' placeholder\(s\) but 0 image\(s\)"):
        sailvl_processor(text="<image>\n<image>\nCompare.")
    with pytest.raises(ImagePlaceholderError, match="prompt 1 has 0"):
        sailvl_processor(images=[None, IMG_800], text=["a", "b"])
    with pytest.raises(ImagePlaceholderError, match="IMG_CONTEXT"):
        sailvl_processor(text="already <IMG_CONTEXT> expanded")


def test_max_length_never_cuts(sailvl_processor):
    p = sailvl_processor
    out = p(images=IMG_800, text="<image>\nhi", max_length=4000, padding="max_length")
    assert out["input_ids"].shape == (1, 4000) and int(out["attention_mask"].sum()) == 7 * 256 + 4
    with pytest.raises(ContextLengthError, match=r"1792 image tokens for 7 tiles.*max_length=1000"):
        p(images=IMG_800, text="<image>\nhi", max_length=1000, truncation=True)


def test_input_errors(sailvl_processor):
    p = sailvl_processor
    with pytest.raises(InputError, match="text is required"):
        p(images=IMG_800)
    with pytest.raises(InputError, match="one entry per prompt"):
        p(images=[IMG_800], text=["<image>", "<image>"])
    with pytest.raises(InputError, match="return_tensors"):
        p(text="x", return_tensors="np")
    with pytest.raises(InputError, match="padding=True"):
        p(text=["short", "a much longer prompt than the other"], padding=False)
    lists = p(text=["a", "bb cc"], return_tensors=None)
    assert isinstance(lists["input_ids"], list) and len(lists["input_ids"][0]) == len(lists["input_ids"][1])


def test_token_cost_helpers_match_call(sailvl_processor):
    p = sailvl_processor
    for image, max_num, msac in [(IMG_800, None, None), (IMG_300, 4, True), ((1000, 250), None, False)]:
        assert p.num_tiles(image, max_num=max_num, use_msac=msac) == (
            p(images=Image.new("RGB", image) if isinstance(image, tuple) else image, text="<image>",
              max_num=max_num, use_msac=msac)["image_num_tiles"].item()
        )
    assert p.num_image_tokens(IMG_800) == 7 * 256 + 2
    with Image.open(IMG_800) as img:
        assert p.num_tiles(img) == 7 and p.num_tiles(np.zeros((600, 800, 3), np.uint8)) == 7


def test_apply_chat_template_tokenize_and_thinking(sailvl_processor):
    p = sailvl_processor
    case, _ = load_case("multi_800x600_300x1000")
    messages = [{"role": "user", "content": [
        {"type": "image", "image": str(GOLDEN_ROOT / item["image"])} if item["type"] == "image" else item
        for item in case["messages"][0]["content"]]}]
    out = p.apply_chat_template(messages, tokenize=True)
    assert out["input_ids"].tolist() == [case["input_ids"]] and out["image_num_tiles"].tolist() == [7, 4]
    thinking = p.apply_chat_template(messages, thinking=True)
    assert thinking == case["chat_template_text"].replace("images.<|im_end|>", "images." + THINKING_SUFFIX + "<|im_end|>")


def test_save_and_reload_round_trip(sailvl_processor, tmp_path):
    written = sailvl_processor.save_pretrained(tmp_path)
    names = {n.rsplit("/", 1)[-1] for n in written}
    assert {"preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json",
            "special_tokens_map.json"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left behind
    assert json.loads((tmp_path / "preprocessor_config.json").read_text()) == json.loads(
        (GOLDEN_CKPT / "preprocessor_config.json").read_text())
    assert json.loads((tmp_path / "added_tokens.json").read_text()) == json.loads(
        (GOLDEN_CKPT / "added_tokens.json").read_text())
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((GOLDEN_CKPT / "vocab.json").read_text())
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "extra_special_tokens" not in tok_config and tok_config["tokenizer_class"] == "Qwen2Tokenizer"
    assert tok_config["added_tokens_decoder"]["151671"]["content"] == "<IMG_CONTEXT>"
    reloaded = SAILVLProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    case, _ = load_case("single_300x1000")
    out = reloaded(images=IMG_300, text=case["chat_template_text"])
    assert out["input_ids"].tolist() == [case["input_ids"]]
    # Only the tokenizer.json-free slow files (the release layout) also give the same ids.
    for name in ("tokenizer.json", "chat_template.jinja"):
        (tmp_path / name).unlink(missing_ok=True)
    slow = SAILVLProcessor.from_pretrained(tmp_path, tokenizer=None)
    assert slow(images=IMG_300, text=case["chat_template_text"])["input_ids"].tolist() == [case["input_ids"]]


def test_from_pretrained_overrides_and_constructor(sailvl_processor, tmp_path):
    p = SAILVLProcessor.from_pretrained(GOLDEN_CKPT, max_num=12, use_msac=True, tokenizer=sailvl_processor.tokenizer)
    assert (p.image_config.max_num, p.image_config.use_msac) == (12, True)
    direct = SAILVLProcessor(sailvl_processor.image_config, sailvl_processor.tokenizer, downsample_ratio=0.25)
    assert direct.tokens_per_tile == 64
    from sailvl2.errors import CheckpointError, ConfigError

    with pytest.raises(CheckpointError, match="not a local directory"):
        SAILVLProcessor.from_pretrained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        SAILVLProcessor.from_pretrained(tmp_path)
