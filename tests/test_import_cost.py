"""`import sailvl2` is lazy: the package, the curation runner and the CPU curation stages load neither torch nor
transformers (each spawned curation worker would pay seconds for them), while the public names and the
Auto-class registration behave as when everything was imported eagerly.

Every check runs in a fresh interpreter: what this test process has imported already says nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")


def _python(script: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON line last, returned here."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_WORKER = """
    import json, sys
    import sailvl2
    import sailvl2.curation, sailvl2.curation.runner, sailvl2.curation.cli
    from PIL import Image
    from sailvl2.curation import Item, available_stages, get_stage
    from sailvl2.curation.runner import process_shard

    imported = {"after_import": [m for m in %(heavy)r if m in sys.modules]}
    names = available_stages()  # imports every built-in stage module
    Image.effect_noise((64, 64), 50).convert("RGB").save("a.png")
    Image.linear_gradient("L").convert("RGB").resize((64, 48)).save("b.png")

    def items():
        answers = ["a red square on a grey ground", "a red square on a grey ground", "two blue lines"]
        return [Item(f"r{i}", {"id": f"r{i}", "image": image, "conversations": [
                    {"from": "human", "value": "<image>\\nWhat is it?"}, {"from": "gpt", "value": answer}]}, ".")
                for i, (image, answer) in enumerate(zip(["a.png", "a.png", "b.png"], answers))]

    # What a worker does with map stages: set them up and run a shard (files under ./out). (Not cap2qa: its
    # endpoint client, sailvl2.evaluation.endpoint, imports torch through sailvl2.evaluation.prompts.)
    stats = process_shard([get_stage("validate", {"min_side": 8})], set(), 0, 0, [0], items(), "out")
    # What the driver does with the CPU global stages.
    kept = {}
    for name, settings in [("exact_dedup", {}), ("image_dedup", {}), ("text_dedup", {"min_chars": 5}),
                           ("ngram_resample", {"fraction": 0.7}),
                           ("bucket_balance", {"embedder": "tfidf", "buckets": 2, "fraction": 0.7})]:
        kept[name] = [d.id for d in get_stage(name, settings).process_all(items()) if d.kept]
    imported["after_running"] = [m for m in %(heavy)r if m in sys.modules]
    print(json.dumps({"imported": imported, "stages": names, "kept": kept, "shard_kept": stats["kept"]}))
"""


def test_sailvl2_and_the_cpu_curation_path_do_not_import_torch(tmp_path):
    out = _python(_WORKER % {"heavy": HEAVY}, tmp_path)
    assert out["imported"] == {"after_import": [], "after_running": []}
    assert {"validate", "exact_dedup", "image_dedup", "text_dedup", "ngram_resample", "bucket_balance",
            "cap2qa", "judge"} <= set(out["stages"])
    # The stages really ran: r1 repeats r0's image and text (exact_dedup, image_dedup and text_dedup drop
    # it), validate keeps all three 64-px images.
    assert out["shard_kept"] == 3
    for name in ("exact_dedup", "image_dedup", "text_dedup"):
        assert out["kept"][name] == ["r0", "r2"], name
    assert len(out["kept"]["ngram_resample"]) == 2 and len(out["kept"]["bucket_balance"]) == 2  # round(0.7 * 3)


# The Auto-class registration check shared by the scripts below: sailvl's classes are in transformers'
# mappings, as `AutoModel.from_pretrained(release_dir)` needs.
_REGISTERED = """
    from transformers import AutoModel, AutoModelForCausalLM, AutoProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    import sailvl2
    registered = (CONFIG_MAPPING["sailvl"] is sailvl2.SAILVLConfig
                  and CONFIG_MAPPING[sailvl2.SAILViTConfig.model_type] is sailvl2.SAILViTConfig
                  and AutoModel._model_mapping[sailvl2.SAILVLConfig] is sailvl2.SAILVLModel
                  and AutoModelForCausalLM._model_mapping[sailvl2.SAILVLConfig] is sailvl2.SAILVLModel
                  and PROCESSOR_MAPPING[sailvl2.SAILVLConfig] is sailvl2.SAILVLProcessor)
"""

_SCRIPTS = {
    # The README's order: sailvl2 first, transformers' Auto classes afterwards.
    "readme": "import sys, json\nimport sailvl2\nlight = 'transformers' not in sys.modules\n",
    # A public name first: the registration happens on its way.
    "attribute": "import sys, json\nimport sailvl2\nlight = 'transformers' not in sys.modules\nsailvl2.load\n",
    # A model submodule first, which imports transformers half-way through its own import.
    "submodule": "import sys, json\nimport sailvl2.modeling\nlight = True\n",
    # transformers already imported: registered at once, as before.
    "transformers_first": "import sys, json\nimport transformers\nimport sailvl2\nlight = True\n",
}


@pytest.mark.slow  # each script imports torch and transformers (~5 s each on 2 busy cores)
@pytest.mark.parametrize("order", sorted(_SCRIPTS))
def test_auto_classes_are_registered_whatever_is_imported_first(order, tmp_path):
    script = _SCRIPTS[order] + textwrap.dedent(_REGISTERED) + "print(json.dumps([light, registered]))\n"
    assert _python(script, tmp_path) == [True, True]


@pytest.mark.slow  # imports torch and transformers
def test_every_public_name_resolves(tmp_path):
    script = """
        import json, sys
        import sailvl2
        light = not any(m in sys.modules for m in ("torch", "transformers"))
        names = {name: type(getattr(sailvl2, name)).__name__ for name in sailvl2.__all__}
        namespace = {}
        exec("from sailvl2 import *", namespace)
        star = sorted(k for k in namespace if not k.startswith("__"))
        from sailvl2.api import SAILVL2, ChatResponse, load
        from sailvl2.configuration import SAILViTConfig, SAILVLConfig
        from sailvl2.errors import SailVL2Error
        from sailvl2.modeling import SAILVLModel
        from sailvl2.processing import SAILVLProcessor
        same = (sailvl2.load is load and sailvl2.SAILVL2 is SAILVL2 and sailvl2.ChatResponse is ChatResponse
                and sailvl2.SAILVLConfig is SAILVLConfig and sailvl2.SAILViTConfig is SAILViTConfig
                and sailvl2.SAILVLModel is SAILVLModel and sailvl2.SAILVLProcessor is SAILVLProcessor
                and sailvl2.SailVL2Error is SailVL2Error)
        submodules = [type(sailvl2.modeling).__name__, type(sailvl2.errors).__name__]
        try:
            sailvl2.no_such_name
            missing = "resolved"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({"light": light, "names": names, "star": star, "same": same, "submodules": submodules,
                          "missing": missing, "version": sailvl2.__version__}))
    """
    out = _python(script, tmp_path)
    import sailvl2

    assert out["light"] and out["same"] and out["version"] == sailvl2.__version__
    assert sorted(out["names"]) == sorted(sailvl2.__all__) and out["star"] == sorted(sailvl2.__all__)
    assert out["names"]["load"] == "function" and out["names"]["SAILVLModel"] == "type"
    assert all(kind == "type" for name, kind in out["names"].items() if name != "load")
    assert out["submodules"] == ["module", "module"]
    assert out["missing"] == "module 'sailvl2' has no attribute 'no_such_name'"


def test_validate_uses_the_processors_image_placeholder():
    from sailvl2.curation.stages import validate
    from sailvl2.processing.prompt import IMAGE_PLACEHOLDER

    assert validate._IMAGE_PLACEHOLDER == IMAGE_PLACEHOLDER
