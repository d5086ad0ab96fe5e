"""Transformers Auto classes, the release README quick start, the high-level API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import sailvl2
from sailvl2.cli import main as cli_main

from .conftest import GOLDEN_CKPT, GOLDEN_IMAGES, load_case

QUICKSTART = r'''
import torch
from transformers import AutoTokenizer, AutoModel, AutoProcessor
from PIL import Image
import sailvl2
model_path = "{model_path}"
tokenizer = AutoTokenizer.from_pretrained(model_path)
processor = AutoProcessor.from_pretrained(model_path)
device = "cpu"
model = AutoModel.from_pretrained(model_path, torch_dtype=torch.bfloat16,).to(device)
print("##### with images")
cot_prompt = r"You FIRST think about the reasoning process as an internal monologue and then provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \boxed{{}}."
messages = [
{{"role": "user", "content": [{{"type": "image", "image": 'image_path'}},
{{"type": "text", "text": "describe the image" + cot_prompt}}]}}
]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
image_path = "{image_path}"
image = Image.open(image_path)
inputs = processor(images=image, text=text, return_tensors="pt", padding=True, truncation=True).to(model.device).to(torch.bfloat16)
generated_ids = model.generate(**inputs, max_new_tokens=512)
response = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]
response = response.split('<|im_end|>')[0].strip()
print(response)
print("##### without images")
cot_prompt = r"You FIRST think about the reasoning process as an internal monologue and then provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in \boxed{{}}."
messages = [
{{
"role": "user",
"content": [{{"type": "text", "text": "中国的首都是哪里?" + cot_prompt}}]
}}
]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(images=None, text=text, return_tensors="pt", padding=True, truncation=True).to(model.device).to(torch.bfloat16)
generated_ids = model.generate(**inputs, max_new_tokens=512)
response = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]
response = response.split('<|im_end|>')[0].strip()
print(response)
'''


def test_release_readme_quickstart_runs_unchanged(tmp_path):
    """The release README quick start, changed only in: no trust_remote_code, CPU device line, paths, and
    `import sailvl2`. Run in a fresh interpreter with stdin closed (a remote-code prompt would fail)."""
    script = tmp_path / "quickstart.py"
    script.write_text(QUICKSTART.format(model_path=GOLDEN_CKPT, image_path=GOLDEN_IMAGES / "img_800x600.png"))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = result.stdout.split("##### without images")
    assert first.startswith("##### with images") and first.strip() != "##### with images"
    assert second.strip()


def test_auto_classes_load_without_remote_code():
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor

    assert isinstance(AutoConfig.from_pretrained(GOLDEN_CKPT), sailvl2.SAILVLConfig)
    assert isinstance(AutoModel.from_pretrained(GOLDEN_CKPT), sailvl2.SAILVLModel)
    assert isinstance(AutoModelForCausalLM.from_pretrained(GOLDEN_CKPT, dtype=torch.float32), sailvl2.SAILVLModel)
    assert isinstance(AutoProcessor.from_pretrained(GOLDEN_CKPT), sailvl2.SAILVLProcessor)


@pytest.fixture(scope="module")
def vlm():
    return sailvl2.load(GOLDEN_CKPT, device="cpu", dtype=torch.float32)


def _golden_text(vlm, name):
    case, _ = load_case(name)
    return vlm.processor.tokenizer.decode(case["generated_ids"], skip_special_tokens=True).strip(), case


def test_chat_reproduces_release_chat(vlm):
    # chat() puts "<image>\n" per image in front of the question, as the release's chat() does.
    for name in ("single_800x600", "multi_800x600_300x1000", "text_only"):
        expected, case = _golden_text(vlm, name)
        images = [GOLDEN_IMAGES / n for n in case["images"]]
        response = vlm.chat(case["question"], images=images or None, max_new_tokens=16, eos_token_id=None)
        assert response.text == expected
        assert response.num_generated_tokens == 16


def test_stream_yields_the_same_text(vlm):
    expected, case = _golden_text(vlm, "single_300x1000")
    pieces = list(vlm.chat(case["question"], images=GOLDEN_IMAGES / "img_300x1000.png", max_new_tokens=16,
                           eos_token_id=None, stream=True))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == expected


def test_batch_chat_equals_chat_one_by_one(vlm):
    names = ["text_only", "single_1000x250", "multi_800x600_300x1000"]
    questions, images = [], []
    for name in names:
        case, _ = load_case(name)
        questions.append(case["question"])
        images.append([GOLDEN_IMAGES / n for n in case["images"]] or None)
    together = vlm.batch_chat(questions, images=images, max_new_tokens=16, eos_token_id=None, batch_size=2)
    for response, name in zip(together, names):
        assert response.text == _golden_text(vlm, name)[0]


def test_thinking_prompt_and_answer_split(vlm):
    from sailvl2.processing import THINKING_SUFFIX

    prompt = vlm.processor.apply_chat_template([{"role": "user", "content": "2+2?"}], thinking=True)
    assert prompt.endswith("2+2?" + THINKING_SUFFIX + "<|im_end|><|im_start|>assistant\n")
    ids = vlm.processor.tokenizer("<think>two and two</think>The sum is \\boxed{4}.<|im_end|>")["input_ids"]
    response = vlm._response(ids, [])
    assert (response.thinking, response.answer, response.boxed) == ("two and two", "The sum is \\boxed{4}.", "4")


def test_grounding_answer_becomes_pixel_boxes_and_drawing(vlm):
    from PIL import Image

    image = Image.open(GOLDEN_IMAGES / "img_800x600.png")
    ids = vlm.processor.tokenizer("<ref>square</ref><box>[[100, 200, 500, 750]]</box>")["input_ids"]
    response = vlm._response(ids, [image])
    assert [(b.label, b.box) for b in response.boxes] == [("square", (80.0, 120.0, 400.0, 450.0))]
    drawn = response.draw(image)
    assert drawn.size == image.size and drawn.tobytes() != image.convert("RGB").tobytes()


def test_api_errors(vlm):
    with pytest.raises(sailvl2.ImagePlaceholderError):
        vlm.chat("<image>\n<image>\nCompare.", images=GOLDEN_IMAGES / "img_448x448.png", max_new_tokens=2)
    with pytest.raises(sailvl2.ImageLoadError, match="nope.png"):
        vlm.chat("Hi", images="nope.png", max_new_tokens=2)
    with pytest.raises(sailvl2.InputError):
        vlm.batch_chat(["a", "b"], images=[None], max_new_tokens=2)


def test_cli_info_counts_parameters(capsys):
    assert cli_main(["info", str(GOLDEN_CKPT), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    info = json.loads((GOLDEN_CKPT / "tiny_ckpt_info.json").read_text())
    assert summary["parameters"]["total"] == info["n_params_unique"]
    assert summary["tokens_per_tile"] == 256 and summary["stored_dtype"] == "bfloat16"


def test_cli_chat_streams_the_answer(capsys):
    expected, _ = _golden_text(sailvl2.load(GOLDEN_CKPT, device="cpu"), "single_800x600")
    code = cli_main(["chat", "--model", str(GOLDEN_CKPT), "--image", str(GOLDEN_IMAGES / "img_800x600.png"),
                     "--max-new-tokens", "16", "Describe the image."])
    assert code == 0
    assert capsys.readouterr().out.strip().startswith(expected[:20])


def test_cli_reports_errors_cleanly(capsys, tmp_path):
    assert cli_main(["chat", "--model", str(tmp_path), "hello"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_load_rejects_an_unknown_dtype():
    with pytest.raises(sailvl2.InputError, match="float99"):
        sailvl2.load(GOLDEN_CKPT, device="cpu", dtype="float99")


def test_cli_interactive_chat_keeps_history(monkeypatch, capsys):
    answers = iter(["Describe the image.", "And the colours?", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code = cli_main(["chat", "--model", str(GOLDEN_CKPT), "--image", str(GOLDEN_IMAGES / "img_448x448.png"),
                     "--max-new-tokens", "3"])
    assert code == 0
    out = capsys.readouterr()
    assert len([line for line in out.out.splitlines() if line.strip()]) == 2  # one answer per question


def test_eos_none_disables_stopping_and_default_stops(vlm):
    case, _ = load_case("text_only")
    stop_at = case["generated_ids"][2]
    stopped = vlm.chat(case["question"], max_new_tokens=16, eos_token_id=stop_at)
    assert stopped.num_generated_tokens == 3
    endless = vlm.batch_chat([case["question"]], max_new_tokens=16, eos_token_id=None)[0]
    assert endless.num_generated_tokens == 16
    early = vlm.batch_chat([case["question"]], max_new_tokens=16, eos_token_id=stop_at)[0]
    assert early.num_generated_tokens == 3
