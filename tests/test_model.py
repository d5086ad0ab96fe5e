"""Model, config and weight I/O: golden parity on ids, round trips, the release key set, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sailvl2 import CheckpointError, ConfigError, ContextLengthError, ImagePlaceholderError, InputError
from sailvl2.configuration import SAILVLConfig
from sailvl2.modeling import SAILVLModel
from sailvl2.modeling.projector import pixel_shuffle
from sailvl2.modeling.weights import to_release_key

from .conftest import GOLDEN_CASES, GOLDEN_CKPT, RELEASE_DIR, load_case


def test_text_only_and_448_logits_match_golden(golden_model):
    # These two cases need no preprocessing (the 448 case ships its full pixel_values).
    for name in ("text_only", "single_448x448"):
        case, arrays = load_case(name)
        pixels = torch.from_numpy(arrays["pixel_values"]) if "pixel_values" in arrays else None
        with torch.no_grad():
            logits = golden_model(input_ids=torch.tensor([case["input_ids"]]), pixel_values=pixels).logits[0, -1]
        reference = torch.from_numpy(arrays["last_logits"])
        assert (logits - reference).abs().max().item() <= 1e-4
        assert int(logits.argmax()) == case["last_logits"]["argmax"]


def test_vision_features_match_golden_digest(golden_model):
    case, arrays = load_case("single_448x448")
    with torch.no_grad():
        features = golden_model.get_image_features(torch.from_numpy(arrays["pixel_values"])).double()
    digest = case["vit_embeds"]
    assert list(features.shape) == digest["shape"]
    assert abs(features.sum().item() - digest["sum"]) <= 1e-4 * digest["abs_sum"]
    assert abs(features.abs().sum().item() - digest["abs_sum"]) <= 1e-4 * digest["abs_sum"]


def test_lm_head_is_loaded_untied(golden_model):
    # The release stores lm_head separately although tie_word_embeddings is true (FACTS.md).
    assert golden_model.config.llm_config.tie_word_embeddings is True
    head = golden_model.language_model.lm_head.weight
    embed = golden_model.language_model.get_input_embeddings().weight
    assert head.data_ptr() != embed.data_ptr()
    assert not torch.equal(head, embed)


def test_config_round_trip_keeps_every_release_field(tmp_path):
    original = json.loads((RELEASE_DIR / "config.json").read_text())
    original["a_field_we_do_not_know"] = {"kept": [1, 2]}
    original["llm_config"]["another_unknown"] = 7
    (tmp_path / "config.json").write_text(json.dumps(original))
    config = SAILVLConfig.from_pretrained(tmp_path)
    config.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())

    def check(reference, ours, where):
        for key, value in reference.items():
            if key in ("transformers_version", "_commit_hash"):
                continue
            assert key in ours, f"{where}{key} lost on round trip"
            if isinstance(value, dict) and isinstance(ours[key], dict):
                check(value, ours[key], f"{where}{key}.")
            else:
                assert ours[key] == value, f"{where}{key}: {value!r} -> {ours[key]!r}"

    check(original, saved, "")
    # A second round trip is stable.
    again = SAILVLConfig.from_pretrained(tmp_path / "out").to_dict()
    assert json.loads(json.dumps(again)) == saved


def test_release_key_set_on_meta_device():
    config = SAILVLConfig.from_pretrained(RELEASE_DIR)
    with torch.device("meta"):
        model = SAILVLModel(config)
    index = json.loads((RELEASE_DIR / "model.safetensors.index.json").read_text())
    # The names save_pretrained writes (through the explicit key map) are the release's names.
    assert {to_release_key(name) for name in model.state_dict()} == set(index["weight_map"])
    # Sizes agree too: bf16 bytes of every tensor add up to the index's total_size.
    assert sum(t.numel() * 2 for t in model.state_dict().values()) == index["metadata"]["total_size"]


def test_save_then_load_gives_identical_logits(golden_model, tmp_path):
    ids = torch.tensor([load_case("text_only")[0]["input_ids"]])
    golden_model.save_pretrained(tmp_path / "single")
    golden_model.save_pretrained(tmp_path / "sharded", max_shard_size=2_000_000)
    assert (tmp_path / "single" / "model.safetensors").is_file()
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    with torch.no_grad():
        reference = golden_model(input_ids=ids).logits
        for folder in ("single", "sharded"):
            reloaded = SAILVLModel.from_pretrained(tmp_path / folder)
            assert torch.equal(reloaded(input_ids=ids).logits, reference)
    from safetensors import safe_open

    with safe_open(str(GOLDEN_CKPT / "model.safetensors"), "pt") as original, safe_open(
        str(tmp_path / "single" / "model.safetensors"), "pt"
    ) as ours:
        assert set(original.keys()) == set(ours.keys())


def test_bf16_checkpoint_loads_into_bf16(tmp_path):
    model = SAILVLModel.from_pretrained(GOLDEN_CKPT, dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_missing_lm_head_falls_back_to_tied_embeddings(tmp_path):
    from safetensors.torch import load_file, save_file

    shutil.copy(GOLDEN_CKPT / "config.json", tmp_path / "config.json")
    state = load_file(str(GOLDEN_CKPT / "model.safetensors"))
    del state["language_model.lm_head.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    model = SAILVLModel.from_pretrained(tmp_path)
    assert torch.equal(model.language_model.lm_head.weight, model.language_model.get_input_embeddings().weight)


def test_loss_is_masked_token_mean(golden_model):
    ids = torch.tensor([load_case("text_only")[0]["input_ids"]])
    labels = ids.clone()
    labels[:, :20] = -100
    with torch.no_grad():
        out = golden_model(input_ids=ids, labels=labels)
    logits = out.logits[0, :-1].double()
    targets = ids[0, 1:]
    keep = labels[0, 1:] != -100
    expected = -(logits.log_softmax(-1)[torch.arange(len(targets)), targets])[keep].mean()
    assert abs(out.loss.item() - expected.item()) <= 2e-6 * abs(expected.item())  # fp32 vs fp64 reference


def test_select_layer_semantics(golden_model):
    _, arrays = load_case("single_448x448")
    pixels = torch.from_numpy(arrays["pixel_values"])
    vision = golden_model.vision_model
    with torch.no_grad():
        tokens, _ = vision.preprocessor(pixels)
        after_first = vision.trunk.blocks[0](tokens)
        after_last = vision.trunk.blocks[1](after_first)
        assert torch.equal(vision(pixels, select_layer=0)[0], after_first)
        assert torch.equal(vision(pixels, select_layer=-2)[0], after_first)
        assert torch.allclose(vision(pixels, select_layer=-1)[0], vision.trunk.post_trunk_norm(after_last))


def test_pixel_shuffle_hand_computed():
    # 1 tile, 2x2 grid, 1 channel: values 0..3 laid out row-major.
    grid = torch.arange(4.0).reshape(1, 2, 2, 1)
    # v2 result: one token whose 4 channels read (row0,col0), (row0,col1), (row1,col0), (row1,col1):
    # columns are merged first, then rows.
    assert pixel_shuffle(grid, 2, "v2").flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    rectangular = torch.arange(8.0).reshape(1, 2, 4, 1)
    out = pixel_shuffle(rectangular, 2, "v2")
    assert out.shape == (1, 1, 2, 4)
    assert out[0, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert out[0, 0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    # v1 leaves the merged grid transposed.
    assert pixel_shuffle(rectangular, 2, "v1").shape == (1, 2, 1, 4)


def test_image_token_count_mismatch_is_a_clear_error(golden_model):
    case, arrays = load_case("single_448x448")
    ids = torch.tensor([case["input_ids"]])
    pixels = torch.from_numpy(arrays["pixel_values"])
    with pytest.raises(ImagePlaceholderError, match="256 per tile"):
        golden_model(input_ids=ids, pixel_values=torch.cat([pixels, pixels]))
    with pytest.raises(ImagePlaceholderError, match="no pixel_values"):
        golden_model(input_ids=ids)


def test_prompt_longer_than_context_is_a_clear_error(golden_model, monkeypatch):
    monkeypatch.setattr(golden_model.config.llm_config, "max_position_embeddings", 32)
    ids = torch.tensor([load_case("text_only")[0]["input_ids"]])
    with pytest.raises(ContextLengthError, match="47 tokens"):
        golden_model.generate(ids, max_new_tokens=4)


def test_generate_rejects_bad_arguments(golden_model):
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(InputError, match="unsupported"):
        golden_model.generate(ids, no_such_option=1)
    with pytest.raises(InputError, match="temperature"):
        golden_model.generate(ids, do_sample=True, temperature=0)
    with pytest.raises(InputError, match="integer tensor"):
        golden_model.generate([[1, 2, 3]])


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "llava"})), "model_type 'llava'"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00garbage" * 10), "not a readable safetensors"),
    ],
)
def test_broken_checkpoints_raise_our_errors(tmp_path, break_it, message):
    directory = tmp_path / "ckpt"
    shutil.copytree(GOLDEN_CKPT, directory)
    break_it(directory)
    with pytest.raises((CheckpointError, ConfigError), match=message):
        SAILVLModel.from_pretrained(directory)


def test_missing_shard_unexpected_key_and_shape_mismatch(golden_model, tmp_path):
    golden_model.save_pretrained(tmp_path / "sharded", max_shard_size=2_000_000)
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        SAILVLModel.from_pretrained(tmp_path / "sharded")

    from safetensors.torch import load_file, save_file

    state = load_file(str(GOLDEN_CKPT / "model.safetensors"))
    shutil.copy(GOLDEN_CKPT / "config.json", tmp_path / "config.json")
    save_file({**state, "mlp1.9.weight": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected"):
        SAILVLModel.from_pretrained(tmp_path)
    state["mlp1.1.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="mlp1.1.weight"):
        SAILVLModel.from_pretrained(tmp_path)


def test_pickle_only_checkpoint_is_refused(tmp_path):
    shutil.copy(GOLDEN_CKPT / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="safetensors only"):
        SAILVLModel.from_pretrained(tmp_path)


def test_bad_config_values_raise_config_error():
    config = json.loads((RELEASE_DIR / "config.json").read_text())
    with pytest.raises(ConfigError, match="select_layer"):
        SAILVLConfig.from_dict({**config, "select_layer": 99})
    with pytest.raises(ConfigError, match="ps_version"):
        SAILVLConfig.from_dict({**config, "ps_version": "v9"})


def test_every_golden_case_has_consistent_ids():
    # Guard on the fixtures themselves: image-token count = 256 x patches.
    for name in GOLDEN_CASES:
        case, _ = load_case(name)
        assert case["num_img_context_tokens"] == 256 * sum(case["num_patches_list"])
        assert np.sum(np.array(case["input_ids"]) == 151671) == case["num_img_context_tokens"]


def test_other_tile_sizes_interpolate_positions(golden_model):
    """AnyRes-ready: a 224-px input (16x16 patches) runs with resized position embeddings and gives
    (16/2)^2 = 64 tokens; the trained 32x32 grid uses the table unchanged."""
    pre = golden_model.vision_model.preprocessor
    assert pre.position_embedding((32, 32)) is pre.pos_embed
    assert pre.position_embedding((16, 24)).shape == (1, 16 * 24, pre.pos_embed.shape[-1])
    with torch.no_grad():
        features = golden_model.get_image_features(torch.zeros(2, 3, 224, 224))
    assert features.shape == (2, 64, golden_model.config.llm_config.hidden_size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_matches_cpu_top1():
    case, _ = load_case("text_only")
    ids = torch.tensor([case["input_ids"]])
    model = SAILVLModel.from_pretrained(GOLDEN_CKPT, dtype=torch.bfloat16, device="cuda")
    out = model.generate(ids.cuda(), max_new_tokens=4, eos_token_id=None)
    assert out.device.type == "cuda"
    assert out[0, 0].item() == case["generated_ids"][0]
