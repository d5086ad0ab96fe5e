"""The allocator switch (sailvl2/_malloc.py): which library a command-line run preloads, and that the re-executed
process really runs under it and trains to the same numbers as glibc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sailvl2 import _malloc

MIMALLOC = _malloc.mimalloc_library()
needs_mimalloc = pytest.mark.skipif(sys.platform != "linux" or MIMALLOC is None,
                                    reason="needs Linux and the cmeel-mimalloc wheel (sailvl2[train])")


def _env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("LD_PRELOAD", _malloc.ENV_CHOICE, _malloc._ENV_DONE)}
    env.update(settings)
    return env


def test_choice_rules(tmp_path, capsys):
    library = tmp_path / "libother.so"
    library.write_bytes(b"\x7fELF")
    assert _malloc.chosen_library(_env(), platform="darwin") is None
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC="system"), platform="linux") is None
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC=str(library)), platform="linux") == library
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC=str(library), LD_PRELOAD=f"/x.so {library}"),
                                  platform="linux") is None  # already preloaded
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC=str(library), SAILVL2_MALLOC_ACTIVE="1"),
                                  platform="linux") is None  # the re-executed process never re-executes
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC=str(tmp_path / "missing.so")), platform="linux") is None
    assert "missing.so: no such library" in capsys.readouterr().err
    assert _malloc.chosen_library(_env(), platform="linux") == MIMALLOC  # auto: the wheel's, when installed
    spaced = tmp_path / "my libs" / "libother.so"
    spaced.parent.mkdir()
    spaced.write_bytes(b"\x7fELF")
    assert _malloc.chosen_library(_env(SAILVL2_MALLOC=str(spaced)), platform="linux") is None
    assert "LD_PRELOAD cannot carry" in capsys.readouterr().err


def test_preload_environment_goes_first_and_keeps_the_others(tmp_path):
    library = tmp_path / "libmimalloc.so"
    env = _malloc.preload_environment(library, {"LD_PRELOAD": "/opt/libfoo.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{library} /opt/libfoo.so"
    assert env["PATH"] == "/bin" and env[_malloc._ENV_DONE] == str(library)
    assert _malloc.preload_environment(library, {})["LD_PRELOAD"] == str(library)


def test_a_failed_reexec_runs_on_with_the_system_allocator(tmp_path, monkeypatch, capsys):
    library = tmp_path / "libmimalloc.so"
    monkeypatch.setattr(_malloc, "chosen_library", lambda: library)

    def refuse(*args):
        raise PermissionError("not allowed")

    monkeypatch.setattr(_malloc.os, "execve", refuse)
    _malloc.reexec_with_allocator()  # returns instead of raising
    assert "could not re-execute under libmimalloc.so (not allowed)" in capsys.readouterr().err


_COUNT = "print(sum('libmimalloc' in line for line in open('/proc/self/maps')))"  # mapped in this process
_MAPPED = "from sailvl2._malloc import reexec_with_allocator; reexec_with_allocator(); " + _COUNT


@needs_mimalloc
def test_reexec_runs_under_mimalloc_once():
    auto = subprocess.run([sys.executable, "-c", _MAPPED], env=_env(), capture_output=True, text=True, check=True)
    assert int(auto.stdout) > 0, auto.stderr  # the library is mapped in the process that printed
    system = subprocess.run([sys.executable, "-c", _MAPPED], env=_env(SAILVL2_MALLOC="system"),
                            capture_output=True, text=True, check=True)
    assert int(system.stdout) == 0


@needs_mimalloc
def test_module_runs_a_python_command_under_mimalloc():
    """`python -m sailvl2._malloc ARGS` (the Makefile's test target) runs `python ARGS` under the allocator."""
    auto = subprocess.run([sys.executable, "-m", "sailvl2._malloc", "-c", _COUNT], env=_env(),
                          capture_output=True, text=True, check=True)
    assert int(auto.stdout) > 0, auto.stderr
    system = subprocess.run([sys.executable, "-m", "sailvl2._malloc", "-c", _COUNT],
                            env=_env(SAILVL2_MALLOC="system"), capture_output=True, text=True, check=True)
    assert int(system.stdout) == 0


def _losses(run_dir: Path) -> list[tuple[float, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(record["loss"], record["grad_norm"]) for record in records if "loss" in record]


@needs_mimalloc
def test_cli_training_under_mimalloc_matches_glibc(tmp_path):
    """`sailvl2 train` re-executes under mimalloc, and the run's numbers do not depend on the allocator (a read of
    uninitialised memory would differ between the two)."""
    runs = {}
    for name, choice in (("mimalloc", "auto"), ("glibc", "system")):
        run_dir = tmp_path / name
        subprocess.run([sys.executable, "-m", "sailvl2.cli", "train", "debug", f"output_dir={run_dir}",
                        "max_steps=3", "save_every=0"], env=_env(SAILVL2_MALLOC=choice), check=True,
                       capture_output=True)
        runs[name] = _losses(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["allocator"] == ("mimalloc" if name == "mimalloc" else "system")
    assert len(runs["glibc"]) == 3
    assert runs["mimalloc"] == runs["glibc"]
