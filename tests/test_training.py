"""The trainer on the debug recipe: outputs, frozen parts, exact resume after kill -9, torchrun == one
process, overfitting, mixtures with bad data, resuming a mixture."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from sailvl2.cli import main as cli_main
from sailvl2.modeling import SAILVLModel
from sailvl2.training.recipe import load_recipe
from sailvl2.training.trainer import Trainer

from .conftest import REPO_ROOT

RUNNER = """
import sys, torch
torch.set_num_threads(1)
from sailvl2.training.recipe import load_recipe
from sailvl2.training.trainer import Trainer
Trainer(load_recipe("debug", sys.argv[1:])).run()
"""


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def _mark_latest_checkpoint(run_dir: Path, offset: int = 10**9) -> None:
    """Add a sentinel to the latest checkpoint's token counter: a run that really resumes from it reports
    the offset in its summary; one that silently starts over (and so also ends bit-identical) does not."""
    from sailvl2.training.checkpoint import latest_checkpoint

    state_file = latest_checkpoint(run_dir / "checkpoints") / "state.json"
    state = json.loads(state_file.read_text())
    state["counters"]["tokens"] += offset
    state_file.write_text(json.dumps(state))


def _resumed(run_dir: Path, offset: int = 10**9) -> bool:
    return json.loads((run_dir / "summary.json").read_text())["tokens_seen"] > offset


def _interrupted_run(run_dir: Path, last_step: int, *settings: str) -> None:
    """Train, drop the last checkpoint and the export (as if killed after the one before), then rerun: the rerun
    must really resume from the checkpoint left (see _mark_latest_checkpoint)."""
    import shutil

    _run(run_dir, *settings)
    shutil.rmtree(run_dir / "checkpoints" / f"step-{last_step:08d}")
    shutil.rmtree(run_dir / "final")
    _mark_latest_checkpoint(run_dir)
    _run(run_dir, *settings)
    assert _resumed(run_dir)


def _assert_same_run(first: Path, second: Path) -> None:
    """Bit-identical final weights and the same loss at every step."""
    ones, twos = _weights(first), _weights(second)
    assert ones.keys() == twos.keys() and all(torch.equal(ones[k], twos[k]) for k in ones)
    assert _losses(first) == _losses(second)


def _run(tmp_path: Path, *overrides: str):
    torch.set_num_threads(1)
    try:
        return Trainer(load_recipe("debug", [f"output_dir={tmp_path}", *overrides])).run()
    finally:
        torch.set_num_threads(2)


def test_debug_recipe_trains_and_writes_every_output(tmp_path, capsys):
    result = _run(tmp_path / "run", "max_steps=6", "save_every=3")
    run = tmp_path / "run"
    assert len(_losses(run)) == 6 and result.losses[-1] < result.losses[0]
    for name in ("loss.png", "summary.json", "tensorboard", "final/config.json", "final/tokenizer.json"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens_seen"] > 0 and 0 < summary["packing_efficiency"] <= 1
    assert "training summary" in capsys.readouterr().out
    reloaded = SAILVLModel.from_pretrained(run / "final")  # the export is the release layout
    assert set(reloaded.state_dict()) == set(_weights(run))


def test_frozen_parts_stay_bit_identical_and_hold_no_optimizer_state(tmp_path):
    _run(tmp_path / "run", "max_steps=3", "trainable=[adapter]", "save_every=0")
    before = load_file(str(tmp_path / "run" / "init-random-tiny" / "model.safetensors"))
    after = _weights(tmp_path / "run")
    for key, tensor in before.items():
        if key.startswith("mlp1."):
            assert not torch.equal(tensor, after[key]), key
        else:
            assert torch.equal(tensor, after[key]), key
    with safe_open(str(tmp_path / "run" / "checkpoints" / "step-00000003" / "optimizer.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(key.startswith("mlp1.") for key in keys)


def test_kill_minus_nine_then_resume_is_bit_identical(tmp_path):
    # AdaLRS searches all along (3-step windows), so a checkpoint can fall inside a trial: its rollback
    # point must survive the restart too.
    steps = ["max_steps=14", "save_every=3", "keep_last=2",
             "adalrs={window: 3, trigger: always, search_start: 0.0, search_end: 1.0, decay: 0.9}"]
    _run(tmp_path / "straight", *steps)
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", RUNNER, f"output_dir={killed}", *steps], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        done = len((killed / "metrics.jsonl").read_text().splitlines()) if (killed / "metrics.jsonl").exists() else 0
        if done >= 7:  # past the step-6 checkpoint, before the end
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "final").exists()
    _mark_latest_checkpoint(killed)
    _run(killed, *steps)  # resumes from the last complete checkpoint
    assert _resumed(killed)
    straight, resumed = _weights(tmp_path / "straight"), _weights(killed)
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert _losses(killed) == _losses(tmp_path / "straight")
    decisions = [json.loads(line).get("adalrs") for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert any(decisions), "AdaLRS made no decision in the run"


def test_torchrun_two_processes_match_one_process(tmp_path):
    single = tmp_path / "single"
    _run(single, "max_steps=10", "save_every=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={tmp_path / 'ddp'}",
                             "max_steps=10", "save_every=0"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ones, twos = _losses(single), _losses(tmp_path / "ddp")
    assert len(ones) == len(twos) == 10
    assert max(abs(a - b) for a, b in zip(ones, twos)) <= 1e-4
    first, second = _weights(single), _weights(tmp_path / "ddp")
    assert max((first[k].float() - second[k].float()).abs().max().item() for k in first) <= 1e-5


BF16_RUNNER = """
import sys, torch
torch.set_num_threads(1)
from sailvl2.training import precision
precision.cpu_has_native_bf16 = lambda: True  # as on a CPU with AVX512-BF16 or AMX, whatever this one has
from sailvl2.training.recipe import load_recipe
from sailvl2.training.trainer import Trainer
Trainer(load_recipe("debug", sys.argv[1:])).run()
"""


def test_torchrun_two_cpu_processes_with_cpu_bf16_follow_one_process(tmp_path, monkeypatch):
    """`cpu_bf16: true` under torchrun on CPU (FSDP2 over gloo inside bf16 autocast, Muon in bf16): the same
    curve as one process with the flag, not the fp32 one's, and fp32 weights."""
    from sailvl2.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    settings = ["optim.kind=muon", "max_steps=8", "save_every=0", "cpu_bf16=true"]
    _run(tmp_path / "single", *settings)
    _run(tmp_path / "fp32", *settings[:-1])
    script = tmp_path / "runner.py"
    script.write_text(BF16_RUNNER)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={tmp_path / 'ddp'}",
                             *settings], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single, sharded, fp32 = (_losses(tmp_path / name) for name in ("single", "ddp", "fp32"))
    assert len(single) == len(sharded) == 8
    # Step 1 (same weights, same rows) tells the precisions apart: bf16 products move the loss by ~1e-4 here, and
    # the sharded run's first loss sits with the one-process bf16 run's, not with the fp32 one's.
    assert single[0] != fp32[0]
    assert abs(sharded[0] - single[0]) <= 0.1 * abs(fp32[0] - single[0]), (sharded[0], single[0], fp32[0])
    # later steps: bf16 products summed in another order (sharded reductions), close
    assert max(abs(a - b) / b for a, b in zip(single, sharded)) < 1e-3, (single, sharded)
    assert all(w.dtype == torch.float32 for w in _weights(tmp_path / "ddp").values())


def test_debug_model_overfits_a_small_dataset(tmp_path):
    result = _run(tmp_path / "run", "max_steps=90", "save_every=0", "data.synthetic.num_samples=4",
                  "schedule.kind=constant", "optim.lr={vit: 2.0e-3, adapter: 2.0e-3, llm: 2.0e-3}")
    assert result.losses[-1] < 0.05, result.losses[-10:]


def test_mixture_with_bad_data_is_counted_and_trained(tmp_path):
    images = tmp_path / "data"
    images.mkdir()
    Image.new("RGB", (64, 64), "red").save(images / "red.png")
    (images / "broken.png").write_bytes(b"not a png")
    good = {"conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}],
            "image": "red.png"}
    lines = [json.dumps({**good, "id": i}) for i in range(30)]
    lines += ["{not json", json.dumps({**good, "id": "missing", "image": "nowhere.png"}),
              json.dumps({**good, "id": "corrupt", "image": "broken.png"}),
              json.dumps({"id": "text", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})]
    (images / "train.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "mixture.yaml").write_text("datasets:\n  - name: toy\n    path: data/train.jsonl\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((REPO_ROOT / "sailvl2" / "recipes" / "debug.yaml").read_text()
                      .replace("synthetic: {num_samples: 16, image_size: 96}", "mixture: mixture.yaml")
                      .replace("output_dir: runs/{name}", f"output_dir: {tmp_path / 'run'}"))
    assert cli_main(["train", str(recipe), "max_steps=4", "save_every=0", "data.error_budget=0.5"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["skipped_samples"].get("ImageLoadError", 0) >= 1  # the corrupt PNG, found when encoding
    reasons = summary["skipped_by_reader"]["toy"]["skipped"]  # found by the reader / validator
    assert any("bad JSON" in reason for reason in reasons) and any("missing image" in reason for reason in reasons)


def test_recipe_errors_are_clear(tmp_path):
    from sailvl2 import ConfigError

    with pytest.raises(ConfigError, match="unknown key"):
        load_recipe("debug", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="no learning rate"):
        load_recipe("debug", ["optim.lr={adapter: 1.0}"])
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_lora_recipe_trains_adapters_and_exports_merged_model(tmp_path):
    run = tmp_path / "run"
    _run(run, "max_steps=3", "save_every=0", "lora={targets: llm, r: 4, alpha: 8}")
    before = load_file(str(run / "init-random-tiny" / "model.safetensors"))
    after = _weights(run)
    assert set(before) == set(after)  # merged: the plain release keys
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("language_model."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("language_model."))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_error_budget_stops_the_run(tmp_path):
    from sailvl2.data.errors import DataError

    data = tmp_path / "data.jsonl"
    good = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    data.write_text("\n".join(["{broken"] * 20 + [json.dumps({**good, "id": i}) for i in range(10)]) + "\n")
    (tmp_path / "mixture.yaml").write_text(f"datasets:\n  - name: bad\n    path: {data}\n")
    with pytest.raises(DataError, match="budget|bad"):
        _run(tmp_path / "run", f"data={{mixture: {tmp_path / 'mixture.yaml'}, error_budget: 0.0}}", "max_steps=2")


def test_debug_loss_curve_matches_golden(tmp_path):
    """torchtitan-style regression guard: the debug recipe's first steps follow the stored curve."""
    golden = json.loads((REPO_ROOT / "tests" / "golden" / "debug_losses.json").read_text())
    result = _run(tmp_path / "run", f"max_steps={len(golden['losses'])}", "save_every=0")
    assert max(abs(a - b) for a, b in zip(result.losses, golden["losses"])) <= golden["tolerance"]


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = _run(tmp_path / "plain", "max_steps=3", "save_every=0").losses
    checkpointed = _run(tmp_path / "ckpt", "max_steps=3", "save_every=0", "gradient_checkpointing=true").losses
    assert max(abs(a - b) for a, b in zip(plain, checkpointed)) <= 1e-5


def test_torchrun_sharded_checkpoints_resume_exactly(tmp_path):
    """Under FSDP2 every rank saves its own shards; deleting the last checkpoint and rerunning resumes from
    the previous one and ends with the uninterrupted run's weights, bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    torchrun = Path(sys.executable).with_name("torchrun")

    def launch(run: Path, *extra: str) -> None:
        result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={run}",
                                 "max_steps=6", "save_every=3", "keep_last=3", *extra],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch(straight)
    launch(resumed)
    checkpoints = resumed / "checkpoints"
    assert sorted(p.name for p in (checkpoints / "step-00000003").glob("model.rank*")) == [
        "model.rank00000-of-00002.safetensors", "model.rank00001-of-00002.safetensors"]
    import shutil

    shutil.rmtree(checkpoints / "step-00000006")
    shutil.rmtree(resumed / "final")
    _mark_latest_checkpoint(resumed)
    launch(resumed)  # resumes at step 3 from the shards
    assert _resumed(resumed)
    first, second = _weights(straight), _weights(resumed)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_attention_implementation_setting(tmp_path):
    """eager and SDPA give the same packed losses; an unavailable kernel is a clear ConfigError."""
    from sailvl2 import ConfigError

    sdpa = _run(tmp_path / "sdpa", "max_steps=2", "save_every=0").losses
    eager = _run(tmp_path / "eager", "max_steps=2", "save_every=0", "attn_implementation=eager").losses
    assert max(abs(a - b) for a, b in zip(sdpa, eager)) <= 1e-5
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="flash_attention_2"):
            _run(tmp_path / "flash", "max_steps=1", "attn_implementation=flash_attention_2")


def test_llm_freeze_layers_trains_only_embeddings_norm_and_head(tmp_path):
    _run(tmp_path / "run", "max_steps=3", "llm_freeze_layers=true", "save_every=0")
    before = load_file(str(tmp_path / "run" / "init-random-tiny" / "model.safetensors"))
    after = _weights(tmp_path / "run")
    changed = {key for key, tensor in before.items() if not torch.equal(tensor, after[key])}
    layers = {key for key in before if key.startswith("language_model.model.layers.")}
    assert layers and not changed & layers  # every decoder layer is bit-identical
    assert {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight"} <= changed
    assert any(key.startswith("vision_model.") for key in changed) and any(key.startswith("mlp1.") for key in changed)


def test_torchrun_resume_inside_an_adalrs_trial_restores_its_sharded_rollback_point(tmp_path):
    """An AdaLRS trial open at a sharded checkpoint: every rank saves its shards of the rollback point, and a
    run resumed there can still roll back, ending bit-identical to the uninterrupted run."""
    import shutil

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    torchrun = Path(sys.executable).with_name("torchrun")
    # alpha 60: every trial multiplies the LR by 60; the second one (from step 9) diverges and is rolled back.
    settings = ["max_steps=13", "save_every=3", "keep_last=5",
                "adalrs={window: 3, trigger: always, search_start: 0.0, search_end: 1.0, decay: 0.9, alpha: 60.0}"]

    def launch(run: Path) -> None:
        result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), f"output_dir={run}", *settings],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch(straight)
    decisions = [json.loads(line).get("adalrs") for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert any(d and d["rollback"] and d["step"] >= 9 for d in decisions), decisions
    launch(resumed)
    snapshot = resumed / "checkpoints" / "step-00000009" / "adalrs_snapshot"
    assert sorted(p.name for p in snapshot.glob("model.rank*")) == [
        "model.rank00000-of-00002.safetensors", "model.rank00001-of-00002.safetensors"]
    shutil.rmtree(resumed / "checkpoints" / "step-00000012")
    shutil.rmtree(resumed / "final")
    _mark_latest_checkpoint(resumed)
    launch(resumed)  # resumes at step 9, inside the trial, and rolls back at step 12 from the loaded shards
    assert _resumed(resumed)
    first, second = _weights(straight), _weights(resumed)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert _losses(resumed) == _losses(straight)


def test_late_image_error_count_survives_a_resume(tmp_path, monkeypatch):
    """The summary's `late_image_error_rows` counts the whole run: the rows before a resume come back from the
    checkpoint. Every row is made to report one late error (its images still decode), so the count is the
    number of rows trained: 2 steps' worth before the stop and 2 after."""
    rows_per_step = load_recipe("debug").global_batch_rows
    original = Trainer._decode_or_blank

    def counting(self, row, weight):
        self.late_image_errors += 1
        return original(self, row, weight)

    monkeypatch.setattr(Trainer, "_decode_or_blank", counting)
    _run(tmp_path / "run", "max_steps=2", "save_every=1")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["late_image_error_rows"] == 2 * rows_per_step
    _run(tmp_path / "run", "max_steps=4", "save_every=1")  # resumes from step 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["late_image_error_rows"] == 4 * rows_per_step


@pytest.mark.parametrize(("cuda", "backend"), [(False, "gloo"), (True, "cpu:gloo,cuda:nccl")])
def test_process_group_backend_takes_cpu_tensors_on_cuda_machines(monkeypatch, cuda, backend):
    """Under torchrun the step's loss (a CPU tensor) is all-reduced; NCCL alone rejects CPU tensors, so on CUDA
    machines the group pairs gloo (CPU) with NCCL (CUDA). Checked without joining a real group."""
    import torch.distributed as dist

    from sailvl2.training import setup

    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda name: chosen.append(name))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    info = setup.init_distributed()
    assert chosen == [backend] and (info.rank, info.world_size) == (0, 2)


def test_torchrun_processes_leave_the_group_before_the_interpreter_shuts_down(tmp_path):
    """A group left to interpreter finalisation can abort a finished run (gloo threads; seen in CI as exit -6).
    A hook registered before init_distributed runs after the trainer's own exit hook (atexit is last-in,
    first-out) and records whether the process still held the group at that point."""
    script = tmp_path / "leave.py"
    script.write_text(
        "import atexit, os, sys, torch, torch.distributed as dist\n"
        "from sailvl2.training.setup import init_distributed\n"
        "out = sys.argv[1] + os.environ['RANK']\n"
        "atexit.register(lambda: open(out, 'w').write(str(dist.is_initialized())))\n"
        "info = init_distributed()\n"
        "total = torch.ones(2)\n"
        "dist.all_reduce(total, async_op=True).wait()\n"
        "assert total.tolist() == [2.0, 2.0] and info.world_size == 2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node", "2", str(script), str(tmp_path / "held")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(tmp_path / f"held{rank}").read_text() for rank in (0, 1)] == ["False", "False"]


def test_resume_from_a_mixture_whose_datasets_are_not_in_alphabetical_order(tmp_path):
    """Checkpoints write their state with sorted keys, which reorders the stream's per-dataset cursors; the
    resumed run must still find each dataset's by name and end bit-identical (the nano mixtures failed to
    resume before, session 18)."""
    data = tmp_path / "data"
    data.mkdir()
    for name, colour in (("zebra", "white"), ("apple", "red")):
        Image.new("RGB", (64, 64), colour).save(data / f"{name}.png")
        lines = [json.dumps({"id": f"{name}-{i}", "image": f"{name}.png", "conversations": [
            {"from": "human", "value": f"<image>\nWhat is this, {i}?"}, {"from": "gpt", "value": f"A {name} {i}."}]})
            for i in range(7 if name == "zebra" else 5)]
        (data / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text("datasets:\n  - {name: zebra, path: data/zebra.jsonl, repeat: 2}\n"
                       "  - {name: apple, path: data/apple.jsonl}\n")
    settings = [f"data={{mixture: {mixture}}}", "max_steps=6", "save_every=3", "keep_last=3"]
    _run(tmp_path / "straight", *settings)
    _interrupted_run(tmp_path / "resumed", 6, *settings)
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")
