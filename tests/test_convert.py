"""Hub parts -> a SAIL-VL2 init (sailvl2/convert.py): the converted model computes what transformers' own
AIMv2 and Qwen3 compute from the same weights, in both AIMv2 layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sailvl2.convert import convert_init, vision_key_map
from sailvl2.errors import CheckpointError
from sailvl2.modeling import SAILVLModel
from sailvl2.tiny import SPECIAL_TOKENS, TINY_LLM, build_tokenizer

AIMV2 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_channels": 3, "image_size": 56, "patch_size": 14, "rms_norm_eps": 1e-5, "qkv_bias": False,
         "mlp_bias": False, "use_head": True, "is_native": False}


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    """A tiny transformers-native AIMv2 vision model and a tiny Qwen3 whose tokenizer lacks the image tokens."""
    from transformers import Aimv2VisionConfig, Aimv2VisionModel, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    vit = Aimv2VisionModel(Aimv2VisionConfig(**AIMV2)).eval()
    vit.save_pretrained(root / "aimv2")
    build_tokenizer(root / "full")  # the release's special tokens, then a copy without the image ones
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(root / "full"))
    data = json.loads((root / "full" / "tokenizer.json").read_text())
    kept = [t for t in data["added_tokens"] if t["content"] not in ("<img>", "</img>", "<IMG_CONTEXT>")]
    data["added_tokens"] = kept
    for token in ("<img>", "</img>", "<IMG_CONTEXT>"):
        data["model"]["vocab"].pop(token, None)
    (root / "qwen3").mkdir()
    (root / "qwen3" / "tokenizer.json").write_text(json.dumps(data))
    slim = PreTrainedTokenizerFast(tokenizer_file=str(root / "qwen3" / "tokenizer.json"),
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")
    slim.save_pretrained(root / "qwen3")
    llm = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in TINY_LLM.items() if k not in ("model_type", "architectures")},
                                       vocab_size=len(tokenizer) + 16)).eval()
    llm.save_pretrained(root / "qwen3")
    return {"root": root, "aimv2": root / "aimv2", "qwen3": root / "qwen3", "vit": vit, "llm": llm}


def _original_layout(native: Path, out: Path) -> Path:
    """The same weights in Apple's original remote-code layout (preprocessor.* / trunk.*, fused qkv)."""
    state = load_file(str(native / "model.safetensors"))
    mapping = vision_key_map(sorted(state))
    original = {k: (torch.cat([state[s] for s in v]) if len(v) > 1 else state[v[0]]).contiguous()
                for k, v in mapping.items()}
    original["preprocessor.pos_embed"] = original["preprocessor.pos_embed"][None].contiguous()
    original["head.cls_token"] = torch.zeros(1, 1, 32)  # a pooling head, to be dropped
    out.mkdir(parents=True)
    save_file(original, str(out / "model.safetensors"))
    config = json.loads((native / "config.json").read_text())
    config.pop("mlp_bias")
    (out / "config.json").write_text(json.dumps({**config, "use_bias": False}))
    return out


@pytest.mark.parametrize("layout", ["native", "original"])
def test_converted_model_matches_transformers_aimv2_and_qwen3(hub, tmp_path, layout) -> None:
    vit_dir = hub["aimv2"] if layout == "native" else _original_layout(hub["aimv2"], tmp_path / "original")
    out = convert_init(vit_dir, hub["qwen3"], tmp_path / "init", max_num=4)
    model = SAILVLModel.from_pretrained(out, dtype=torch.float32).eval()
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hub["vit"](pixel_values=pixels).last_hidden_state
        got = model.vision_model(pixels)
        got = got[0] if isinstance(got, tuple) else got
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(model.language_model(input_ids=ids).logits, hub["llm"](input_ids=ids).logits,
                                   rtol=1e-4, atol=1e-5)
    # The tokenizer gained the image tokens, and the config points at <IMG_CONTEXT>.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    vocab = tokenizer.get_vocab()
    assert all(token in vocab for token in SPECIAL_TOKENS)
    assert model.config.image_token_id == vocab["<IMG_CONTEXT>"]
    assert json.loads((out / "preprocessor_config.json").read_text())["max_dynamic_patch"] == 4


def test_bad_parts_are_checkpoint_errors(hub, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="config.json"):
        convert_init(tmp_path / "nothing", hub["qwen3"], tmp_path / "out")
    native = tmp_path / "native_res"
    native.mkdir()
    (native / "config.json").write_text(json.dumps({**AIMV2, "is_native": True}))
    with pytest.raises(CheckpointError, match="native-resolution"):
        convert_init(native, hub["qwen3"], tmp_path / "out")
    # A q projection without its k and v partners.
    with pytest.raises(CheckpointError, match="unexpected|lacks"):
        vision_key_map(["embeddings.patch_embed.weight", "encoder.layers.0.attention.q_proj.weight",
                        "encoder.layers.0.weird.weight"])


def test_cli_convert_init(hub, tmp_path, capsys) -> None:
    from sailvl2.cli import main

    assert main(["convert-init", "--vit", str(hub["aimv2"]), "--llm", str(hub["qwen3"]), "--out",
                 str(tmp_path / "init"), "--max-num", "2"]) == 0
    assert "sailvit_stage1" in capsys.readouterr().out
    assert (tmp_path / "init" / "config.json").is_file()
    assert main(["convert-init", "--vit", str(tmp_path / "missing"), "--llm", str(hub["qwen3"]), "--out",
                 str(tmp_path / "x")]) == 2
