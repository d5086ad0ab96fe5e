"""Model soup (PAPER.md 8.1): weighted averages of homogeneous tiny checkpoints, checked by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sailvl2.cli import main
from sailvl2.errors import CheckpointError, ConfigError, InputError
from sailvl2.modeling import SAILVLModel
from sailvl2.modeling.weights import iter_tensors, save_state_dict, weight_files
from sailvl2.tiny import TINY_LLM, TINY_MOE_LLM, build_random_checkpoint
from sailvl2.training.soup import RECIPE_FILE, soup


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    return dict(iter_tensors(weight_files(directory)))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soup")
    return {
        "a": build_random_checkpoint(root / "a", seed=0),
        "b": build_random_checkpoint(root / "b", seed=1),
        "wide": build_random_checkpoint(root / "wide", seed=2, llm={**TINY_LLM, "hidden_size": 96}),
        "moe": build_random_checkpoint(root / "moe", seed=3, llm=TINY_MOE_LLM),
    }


def _logits(directory: Path, input_ids: torch.Tensor) -> torch.Tensor:
    model = SAILVLModel.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def _text_ids(directory: Path) -> torch.Tensor:
    config = json.loads((directory / "config.json").read_text())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(14, config["llm_config"]["vocab_size"], (1, 12), generator=generator)
    assert not (ids == config["image_token_id"]).any()
    return ids


def test_soup_of_copies_is_the_checkpoint_bit_for_bit(ckpts, tmp_path):
    a = ckpts["a"]
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)
    out = soup([a, copy, a], tmp_path / "out")
    original, souped = _tensors(a), _tensors(out)
    assert original.keys() == souped.keys()
    for key, tensor in original.items():
        assert souped[key].dtype == tensor.dtype, key
        assert torch.equal(souped[key], tensor), key
    ids = _text_ids(a)
    assert torch.equal(_logits(out, ids), _logits(a, ids))
    # Tokenizer and preprocessor files come along, and the recipe is recorded.
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (a / name).read_bytes(), name
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert [entry["weight"] for entry in recipe["inputs"]] == pytest.approx([1 / 3] * 3)
    assert recipe["inputs"][1]["path"] == str(copy.resolve())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_soup_of_copies_keeps_bfloat16_exact(ckpts, tmp_path):
    half = soup([ckpts["a"]], tmp_path / "half", dtype="bfloat16")
    out = soup([half, half], tmp_path / "out")
    expected, souped = _tensors(half), _tensors(out)
    assert all(t.dtype == torch.bfloat16 for t in souped.values())
    assert all(torch.equal(souped[k], expected[k]) for k in expected)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("weights", "expected"), [(None, (0.5, 0.5)), ((0.25, 0.75), (0.25, 0.75)), ((1.0, 3.0), (0.25, 0.75))]
)
def test_soup_is_the_weighted_average(ckpts, tmp_path, weights, expected):
    out = soup([ckpts["a"], ckpts["b"]], tmp_path / "out", weights=weights)
    a, b, souped = _tensors(ckpts["a"]), _tensors(ckpts["b"]), _tensors(out)
    assert souped.keys() == a.keys()
    for key in a:
        by_hand = (a[key].double() * expected[0] + b[key].double() * expected[1]).float()
        torch.testing.assert_close(souped[key], by_hand, rtol=0, atol=1e-7, msg=key)
    assert not torch.equal(souped["mlp1.1.weight"], a["mlp1.1.weight"])
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert [e["weight"] for e in recipe["inputs"]] == pytest.approx(list(expected))
    SAILVLModel.from_pretrained(out)  # the result is a loadable checkpoint


@pytest.mark.parametrize(("other", "field"), [("wide", "llm_config.hidden_size"), ("moe", "llm_config.")])
def test_soup_refuses_different_architectures(ckpts, tmp_path, other, field):
    with pytest.raises(ConfigError, match="configs differ") as info:
        soup([ckpts["a"], ckpts[other]], tmp_path / "out")
    assert field in str(info.value)
    assert not (tmp_path / "out").exists()


def _variant(source: Path, target: Path, change) -> Path:
    """A copy of `source` whose weights are changed by `change(state)` (config unchanged)."""
    shutil.copytree(source, target)
    state = _tensors(source)
    change(state)
    save_state_dict(state, target)
    return target


def test_soup_refuses_different_keys_or_shapes(ckpts, tmp_path):
    missing = _variant(ckpts["a"], tmp_path / "missing", lambda s: s.pop("mlp1.3.bias"))
    with pytest.raises(CheckpointError, match=r"lacks 1 weights.*mlp1\.3\.bias"):
        soup([ckpts["a"], missing], tmp_path / "out")

    def reshape(state):
        state["mlp1.3.bias"] = torch.zeros(3)

    reshaped = _variant(ckpts["a"], tmp_path / "reshaped", reshape)
    with pytest.raises(CheckpointError, match=r"shapes differ: mlp1\.3\.bias \(64,\) vs \(3,\)"):
        soup([ckpts["a"], reshaped], tmp_path / "out")


@pytest.mark.parametrize(
    ("weights", "message"),
    [((1.0,), "1 soup weights for 2"), ((1.0, 2.0, 3.0), "3 soup weights"), ((-1.0, 2.0), "negative"),
     ((0.0, 0.0), "positive sum"), ((float("nan"), 1.0), "finite")],
)
def test_soup_rejects_bad_weights(ckpts, tmp_path, weights, message):
    with pytest.raises(InputError, match=message):
        soup([ckpts["a"], ckpts["b"]], tmp_path / "out", weights=weights)


def test_soup_refuses_existing_output_and_missing_inputs(ckpts, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        soup([ckpts["a"]], taken)
    assert (taken / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="not an empty directory"):
        soup([ckpts["a"], ckpts["b"]], ckpts["a"])  # never overwrite an input
    with pytest.raises(ConfigError, match="no config.json"):
        soup([ckpts["a"], tmp_path / "nowhere"], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert soup([ckpts["a"]], empty) == empty and (empty / "model.safetensors").is_file()


def test_cli_soup(ckpts, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["soup", str(ckpts["a"]), str(ckpts["b"]), "--out", str(out), "--weights", "0.25", "0.75"]
    assert main(argv) == 0
    assert str(out) in capsys.readouterr().out
    api = soup([ckpts["a"], ckpts["b"]], tmp_path / "api", weights=[0.25, 0.75])
    expected, got = _tensors(api), _tensors(out)
    assert all(torch.equal(got[k], expected[k]) for k in expected)

    assert main(["soup", str(ckpts["a"]), str(ckpts["wide"]), "--out", str(tmp_path / "bad")]) == 2
    assert "configs differ" in capsys.readouterr().err
    assert main(["soup", str(ckpts["a"]), str(ckpts["b"]), "--out", str(tmp_path / "bad"), "--weights", "1"]) == 2
    assert "1 soup weights for 2 checkpoints" in capsys.readouterr().err
