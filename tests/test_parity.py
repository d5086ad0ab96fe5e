"""End-to-end parity with the official code's outputs (golden/cases), through our processor and model.

Tolerances are the ones in golden/cases/README.md: identical prompt and ids, last-position logits within
1e-4 (fp32), identical 16 greedy tokens (eos ignored), top-5 per step identical with logits within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from .conftest import GOLDEN_CASES, GOLDEN_ROOT, load_case


def _inputs(processor, case):
    text = processor.apply_chat_template(case["messages"], add_generation_prompt=True, tokenize=False)
    assert text == case["chat_template_text"]
    images = [str(GOLDEN_ROOT / "images" / name) for name in case["images"]]
    return processor(images=images or None, text=text, max_num=case["max_num"], return_tensors="pt")


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_case_matches_official_outputs(golden_model, sailvl_processor, name):
    case, arrays = load_case(name)
    inputs = _inputs(sailvl_processor, case)
    assert inputs["input_ids"][0].tolist() == case["input_ids"]
    if case["num_patches_list"]:
        assert inputs["image_num_tiles"].tolist() == case["num_patches_list"]
    with torch.no_grad():
        logits = golden_model(**inputs, logits_to_keep=1).logits[0, -1]
    assert (logits - torch.from_numpy(arrays["last_logits"])).abs().max().item() <= 1e-4

    generated = golden_model.generate(**inputs, max_new_tokens=16, eos_token_id=None)
    assert generated[0].tolist() == case["generated_ids"]
    assert sailvl_processor.batch_decode(generated, skip_special_tokens=False)[0] == case["generated_text"]


@pytest.mark.parametrize("name", ["single_800x600", "multi_800x600_300x1000"])
def test_every_step_top5_matches_official(golden_model, sailvl_processor, name):
    case, _ = load_case(name)
    inputs = _inputs(sailvl_processor, case)
    ids = inputs["input_ids"]
    with torch.no_grad():
        out = golden_model(**inputs, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        logits = out.logits[0, -1]
        for step, reference in enumerate(case["gen_steps"]):
            top = torch.topk(logits, 5)
            assert top.indices.tolist() == reference["top5_ids"], f"step {step}"
            assert max(abs(a - b) for a, b in zip(top.values.tolist(), reference["top5_logits"])) <= 1e-4
            token = torch.tensor([[reference["token"]]])
            position = torch.tensor([[ids.shape[1] + step]])
            out = golden_model.language_model(input_ids=token, position_ids=position, past_key_values=cache,
                                              use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1]


def test_batched_equals_unbatched_on_a_mixed_batch(golden_model, sailvl_processor):
    """Text-only, one image, two images, different sizes: one left-padded batch gives each row's own tokens."""
    names = ["text_only", "single_300x1000", "multi_800x600_300x1000", "single_1000x250"]
    cases = [load_case(name)[0] for name in names]
    texts = [c["chat_template_text"] for c in cases]
    images = [[str(GOLDEN_ROOT / "images" / n) for n in c["images"]] or None for c in cases]
    batch = sailvl_processor(images=images, text=texts, return_tensors="pt")
    assert batch["input_ids"].shape[0] == 4
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding
    together = golden_model.generate(**batch, max_new_tokens=16, eos_token_id=None)
    for row, case in enumerate(cases):
        assert together[row].tolist() == case["generated_ids"], names[row]


def test_bf16_agrees_with_fp32_within_documented_tolerance(golden_model, sailvl_processor):
    """bf16 weights + bf16 pixels: last logits cosine >= 0.999, max abs diff <= 3% of the largest |logit|,
    and the same top-1 token (README "Numerics")."""
    from sailvl2.modeling import SAILVLModel

    from .conftest import GOLDEN_CKPT

    bf16 = SAILVLModel.from_pretrained(GOLDEN_CKPT, dtype=torch.bfloat16)
    for name in ("single_800x600", "text_only"):
        case, _ = load_case(name)
        inputs = _inputs(sailvl_processor, case)
        with torch.no_grad():
            reference = golden_model(**inputs, logits_to_keep=1).logits[0, -1]
            low = bf16(**inputs.to(torch.bfloat16), logits_to_keep=1).logits[0, -1].float()
        assert torch.nn.functional.cosine_similarity(reference, low, dim=0) >= 0.999
        assert (reference - low).abs().max() <= 0.03 * reference.abs().max()
        assert int(low.argmax()) == int(reference.argmax())
