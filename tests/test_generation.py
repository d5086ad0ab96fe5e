"""Generation: golden greedy ids, sampling filters on hand-computed logits, streaming, seeds, MoE."""

from __future__ import annotations

import math

import pytest
import torch

from sailvl2.generation import SamplingSettings, select_next_tokens, stream_tokens
from sailvl2.generation.sampling import apply_repetition_penalty, filter_top_k, filter_top_p

from .conftest import load_case


def test_greedy_ids_match_golden_for_cases_without_preprocessing(golden_model):
    for name in ("text_only", "single_448x448"):
        case, arrays = load_case(name)
        pixels = torch.from_numpy(arrays["pixel_values"]) if "pixel_values" in arrays else None
        ids = golden_model.generate(torch.tensor([case["input_ids"]]), pixel_values=pixels, max_new_tokens=16,
                                    eos_token_id=None)
        assert ids[0].tolist() == case["generated_ids"]


def test_first_step_top5_matches_golden(golden_model):
    case, _ = load_case("text_only")
    with torch.no_grad():
        logits = golden_model(input_ids=torch.tensor([case["input_ids"]]), logits_to_keep=1).logits[0, -1]
    top = torch.topk(logits, 5)
    assert top.indices.tolist() == case["gen_steps"][0]["top5_ids"]
    for ours, reference in zip(top.values.tolist(), case["gen_steps"][0]["top5_logits"]):
        assert abs(ours - reference) <= 1e-4


def test_top_k_keeps_exactly_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = filter_top_k(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_smallest_set_reaching_mass():
    # probabilities 0.5, 0.25, 0.125, 0.125 (log-probs as logits)
    logits = torch.log(torch.tensor([[0.125, 0.5, 0.125, 0.25]]))
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.6)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_top_p(logits, 0.75)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_top_p(logits, 0.8)).sum() == 3  # 0.75 < 0.8 needs one of the 0.125s
    assert torch.isfinite(filter_top_p(logits, 1e-9)).sum() == 1  # always at least one


def test_repetition_penalty_hand_computed():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_greedy_ignores_temperature_and_sampling_is_seeded():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    greedy = select_next_tokens(logits, SamplingSettings())
    assert greedy.tolist() == logits.argmax(-1).tolist()
    settings = SamplingSettings(do_sample=True, temperature=0.7, top_p=0.9, top_k=10)
    first = select_next_tokens(logits, settings, generator=torch.Generator().manual_seed(3))
    second = select_next_tokens(logits, settings, generator=torch.Generator().manual_seed(3))
    assert first.tolist() == second.tolist()
    # top_k=1 sampling can only pick the argmax.
    only = select_next_tokens(logits, SamplingSettings(do_sample=True, top_k=1), generator=torch.Generator())
    assert only.tolist() == greedy.tolist()


def test_sampling_frequencies_follow_temperature():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(4000, 1)
    picks = select_next_tokens(logits, SamplingSettings(do_sample=True), generator=torch.Generator().manual_seed(1))
    share = (picks == 0).float().mean().item()
    assert abs(share - 0.7) < 0.03
    hot = select_next_tokens(logits, SamplingSettings(do_sample=True, temperature=2.0),
                             generator=torch.Generator().manual_seed(1))
    expected = math.sqrt(0.7) / (math.sqrt(0.7) + math.sqrt(0.2) + math.sqrt(0.1))
    assert abs((hot == 0).float().mean().item() - expected) < 0.03


def test_stream_tokens_equal_generate_and_streamer_protocol(golden_model):
    case, _ = load_case("text_only")
    ids = torch.tensor([case["input_ids"]])
    streamed = [int(t[0]) for t in stream_tokens(golden_model, ids, max_new_tokens=8, eos_token_id=None)]

    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    recorder = Recorder()
    generated = golden_model.generate(ids, max_new_tokens=8, eos_token_id=None, streamer=recorder)
    assert generated[0].tolist() == streamed == case["generated_ids"][:8]
    assert recorder.calls[0] == ids.tolist()  # the prompt first, as transformers streamers expect
    assert [c[0] for c in recorder.calls[1:-1]] == streamed and recorder.calls[-1] == "end"


def test_generation_stops_at_eos_and_pads_finished_rows(golden_model):
    case, _ = load_case("text_only")
    ids = torch.tensor([case["input_ids"]])
    stop_at = case["generated_ids"][3]
    out = golden_model.generate(ids, max_new_tokens=16, eos_token_id=stop_at)
    assert out[0].tolist() == case["generated_ids"][: case["generated_ids"].index(stop_at) + 1]


def test_repetition_penalty_changes_a_repetitive_greedy_run(golden_model):
    case, _ = load_case("text_only")
    ids = torch.tensor([case["input_ids"]])
    plain = golden_model.generate(ids, max_new_tokens=12, eos_token_id=None)[0].tolist()
    penalised = golden_model.generate(ids, max_new_tokens=12, eos_token_id=None, repetition_penalty=3.0)[0].tolist()
    assert len(set(penalised)) >= len(set(plain))
    assert penalised != plain or len(set(plain)) == len(plain)


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory):
    from sailvl2.modeling import SAILVLModel
    from sailvl2.tiny import TINY_MOE_LLM, build_random_checkpoint

    directory = build_random_checkpoint(tmp_path_factory.mktemp("moe"), seed=1, llm=TINY_MOE_LLM)
    return SAILVLModel.from_pretrained(directory)


def test_moe_backbone_loads_generates_and_batches(moe_model, tmp_path):
    assert type(moe_model.language_model).__name__ == "Qwen3MoeForCausalLM"
    rows = [[50, 60, 70, 80, 90, 100], [110, 120, 130]]  # ordinary tokens (no image token)
    pad = 0
    batch = torch.tensor([rows[0], [pad] * 3 + rows[1]])
    mask = torch.tensor([[1] * 6, [0] * 3 + [1] * 3])
    together = moe_model.generate(batch, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    for index, row in enumerate(rows):
        alone = moe_model.generate(torch.tensor([row]), max_new_tokens=6, eos_token_id=None)
        assert together[index].tolist() == alone[0].tolist()
    moe_model.save_pretrained(tmp_path)
    reloaded = type(moe_model).from_pretrained(tmp_path)
    assert set(reloaded.state_dict()) == set(moe_model.state_dict())
    assert any("experts" in key for key in reloaded.state_dict())
