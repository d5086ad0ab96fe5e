"""The `sailvl2` command.

    sailvl2 chat --model DIR [--image PATH]... [--thinking] "question"   # streams the answer
    sailvl2 chat --model DIR --image cat.png                               # interactive prompt
    sailvl2 info DIR                                                       # architecture and sizes
    sailvl2 train RECIPE [key=value ...]                                   # train (also under torchrun)
    sailvl2 nano [--preset smoke]                                          # nano ladder from scratch + report
    sailvl2 soup CKPT... --out DIR [--weights W...]                        # weighted average of checkpoints
    sailvl2 eval --data BENCH.tsv [--model DIR | --api-base URL --api-model NAME]   # benchmark evaluation
    sailvl2 eval-compare RESULT_DIR... [--paper 2B|8B]                    # results side by side
    sailvl2 curate PIPELINE.yaml [--engine local|ray] [--workers N]        # data curation (docs/curation.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import CheckpointError, SailVL2Error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sailvl2", description="Native SAIL-VL2: chat with and inspect models.")
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", help="ask about images (streams the answer)")
    chat.add_argument("question", nargs="?", help="the question; omit it for an interactive prompt")
    chat.add_argument("--model", help="checkpoint directory (release layout); default: the built-in model")
    chat.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    chat.add_argument("--thinking", action="store_true", help="ask for <think> reasoning and a \\boxed{} answer")
    chat.add_argument("--max-new-tokens", type=int, default=512)
    chat.add_argument("--max-num", type=int, default=None, help="max 448-px tiles per image")
    chat.add_argument("--temperature", type=float, default=None, help="sample at this temperature (default greedy)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--device", default=None)
    chat.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16")

    info = commands.add_parser("info", help="print architecture, parameter counts, dtype, tokens per tile")
    info.add_argument("model", help="checkpoint directory")
    info.add_argument("--json", action="store_true", help="print JSON")

    train = commands.add_parser("train", help="train with a recipe (also under torchrun)")
    train.add_argument("recipe", help="a recipe YAML, or the name of a shipped one (e.g. debug)")
    train.add_argument("overrides", nargs="*", help="key=value settings, e.g. max_steps=100 optim.lr.llm=1e-5")
    train.add_argument("--no-resume", action="store_true", help="start over even if the run has checkpoints")
    train.add_argument("--device", default=None)

    nano = commands.add_parser("nano", help="generate the task suite and train the nano model from scratch")
    nano.add_argument("--out", default="runs/nano", help="output folder (data, stage runs, report.md)")
    nano.add_argument("--preset", choices=("full", "smoke"), default="full")
    nano.add_argument("--seed", type=int, default=0)
    nano.add_argument("--text-layout", choices=("free", "slots"), default=None,
                      help="slots: one character per ViT patch in the suite's text "
                           "(default: the preset's; full: slots)")
    nano.add_argument("--chart-layout", choices=("free", "slots"), default=None,
                      help="slots: charts' and tables' text likewise (default: the preset's; full: slots)")
    nano.add_argument("--chart-images", type=int, default=None,
                      help="extra chart and table read-out images for the train split (default: preset's; full: 8000)")
    nano.add_argument("--number-images", type=int, default=None,
                      help="extra number-reading images for the train split (default: the preset's; full: 8000)")
    nano.add_argument("--letter-images", type=int, default=None,
                      help="extra letter-string images for the train split (default: the preset's; full: 8000)")
    nano.add_argument("--shape-images", type=int, default=None,
                      help="extra shape scenes (counts, spatial questions) for the train split (default: the "
                           "preset's; full: 8000)")

    soup = commands.add_parser("soup", help="average homogeneous checkpoints into one (model soup)")
    soup.add_argument("checkpoints", nargs="+", help="checkpoint directories with identical architectures")
    soup.add_argument("--out", required=True, help="new output directory (must not exist or be empty)")
    soup.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per checkpoint")
    soup.add_argument("--dtype", default=None, help="output dtype (default: as stored)")
    soup.add_argument("--max-shard-size", default="5GB")

    convert = commands.add_parser("convert-init", help="build a SAIL-VL2 init from an AIMv2 ViT and a Qwen3 LLM")
    convert.add_argument("--vit", required=True, help="local AIMv2 folder (e.g. aimv2-huge-patch14-448)")
    convert.add_argument("--llm", required=True, help="local Qwen3 (or other causal LM) folder")
    convert.add_argument("--out", required=True, help="output folder (release layout)")
    convert.add_argument("--max-num", type=int, default=12, help="max tiles per image in the processor config")
    convert.add_argument("--max-shard-size", default="5GB")
    convert.set_defaults(handler=_convert)

    from .evaluation.cli import register as register_evaluation

    register_evaluation(commands)

    from .curation.cli import register as register_curate

    register_curate(commands)
    return parser


def _chat(args: argparse.Namespace) -> int:
    from . import api

    vlm = api.load(args.model, device=args.device, dtype=args.dtype)
    generation = {"max_new_tokens": args.max_new_tokens, "max_num": args.max_num, "thinking": args.thinking}
    if args.temperature is not None:
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    images = list(args.image)

    def answer(question: str, history: list[tuple[str, str]]) -> str:
        pieces = []
        for piece in vlm.chat(question, images=images or None, history=history, stream=True, **generation):
            print(piece, end="", flush=True)
            pieces.append(piece)
        print()
        return "".join(pieces)

    if args.question is not None:
        answer(args.question, [])
        return 0
    history: list[tuple[str, str]] = []
    print("sailvl2 chat: type a question, an empty line or Ctrl-D to quit.", file=sys.stderr)
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            break
        if not question:
            break
        reply = answer(question, history)
        if not history and images and "<image>" not in question:
            # The images stay attached to the first turn, as in the release's multi-turn chat().
            question = "<image>\n" * len(images) + question
        history.append((question, reply))
    return 0


def describe(directory: str | Path) -> dict:
    """Architecture summary of a checkpoint, counted on the meta device (no weights are read)."""
    import torch

    from .configuration import SAILVLConfig
    from .modeling import SAILVLModel
    from .modeling.language import is_moe
    from .modeling.weights import weight_files

    config = SAILVLConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = SAILVLModel(config)
    counts = {
        part: sum(p.numel() for p in getattr(model, part).parameters())
        for part in ("vision_model", "mlp1", "language_model")
    }
    try:
        stored = sorted({p.name for p in weight_files(Path(directory)).values()})
    except CheckpointError as err:  # a config-only folder (e.g. the release's data files) is still described
        stored = [f"(none: {err})"]
    llm = config.llm_config
    vision = config.vision_config
    return {
        "path": str(directory),
        "vision": f"SAIL-ViT {vision.hidden_size} wide x {vision.num_hidden_layers} layers, "
        f"{vision.num_attention_heads} heads, {vision.image_size}px tiles, patch {vision.patch_size}",
        "adapter": f"pixel shuffle {config.shuffle_factor}x{config.shuffle_factor} ({config.ps_version}) -> "
        f"2-layer MLP {vision.hidden_size * config.shuffle_factor**2} -> {llm.hidden_size}",
        "llm": f"{type(llm).__name__.removesuffix('Config')} {llm.hidden_size} wide x {llm.num_hidden_layers} "
        f"layers, vocab {llm.vocab_size}" + (" (MoE)" if is_moe(llm) else ""),
        "parameters": {**counts, "total": sum(counts.values())},
        "stored_dtype": str(config.dtype).removeprefix("torch."),
        "tokens_per_tile": config.tokens_per_tile,
        "select_layer": config.select_layer,
        "weight_files": stored,
    }


def _info(args: argparse.Namespace) -> int:
    summary = describe(args.model)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        if key == "parameters":
            print("parameters:")
            for part, count in value.items():
                print(f"  {part:<15} {count:>15,}")
        else:
            print(f"{key}: {value}")
    return 0


def _soup(args: argparse.Namespace) -> int:
    from .training.soup import soup

    out = soup(args.checkpoints, args.out, weights=args.weights, dtype=args.dtype, max_shard_size=args.max_shard_size)
    print(f"wrote the soup of {len(args.checkpoints)} checkpoints to {out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import convert_init

    out = convert_init(args.vit, args.llm, args.out, max_num=args.max_num, max_shard_size=args.max_shard_size)
    print(f"wrote a SAIL-VL2 init (random adapter) to {out}; train it with e.g. "
          f"`sailvl2 train sailvit_stage1 init.checkpoint={out}`")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training.recipe import load_recipe
    from .training.trainer import Trainer

    recipe = load_recipe(args.recipe, args.overrides)
    result = Trainer(recipe, device=args.device, resume=not args.no_resume).run()
    if result.final_dir is not None:
        print(f"final model (release layout): {result.final_dir}")
    return 0


# Commands that run long enough for glibc's heap fragmentation to slow them (sailvl2/_malloc.py).
_LONG_COMMANDS = ("train", "nano", "eval", "curate")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in _LONG_COMMANDS:
        # From the command line only (tests call main(argv) in-process), and before torch is imported.
        from ._malloc import reexec_with_allocator

        reexec_with_allocator()
    args = _parser().parse_args(argv)
    try:
        if hasattr(args, "handler"):  # subcommands registered by other modules (evaluation, curation)
            return args.handler(args)
        if args.command == "soup":
            return _soup(args)
        if args.command == "train":
            return _train(args)
        if args.command == "nano":
            from .nano.ladder import run_ladder

            run_ladder(args.out, preset=args.preset, seed=args.seed, text_layout=args.text_layout,
                       number_images=args.number_images, letter_images=args.letter_images,
                       chart_layout=args.chart_layout, chart_images=args.chart_images,
                       shape_images=args.shape_images)
            print((Path(args.out) / "report.md").read_text())
            return 0
        return _chat(args) if args.command == "chat" else _info(args)
    except SailVL2Error as err:
        print(f"sailvl2: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
