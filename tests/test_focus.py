"""Focus supervision: boxes -> image tokens by hand, the loss against transformers' own attention weights,
its gradient through the attach-to-output path, packed == unpacked, and a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sailvl2.data.errors import DataError
from sailvl2.data.records import parse_record
from sailvl2.demo import SHIPPED_MODEL_DIR
from sailvl2.errors import ConfigError, InputError
from sailvl2.modeling import SAILVLModel
from sailvl2.processing import SAILVLProcessor
from sailvl2.processing.images import ImageProcessorConfig
from sailvl2.training.focus import FocusConfig, FocusSupervision, box_token_positions
from sailvl2.training.loss import packed_loss
from sailvl2.training.packing import pack_row, token_weights
from sailvl2.training.tokenize import IGNORE_INDEX, ConversationEncoder

LAYER, HEAD = 1, 0
# The reference takes -log of fp32 attention weights. When the trained model already puts nearly all of its
# attention on the targets (weight ~ 1 - 2e-4), -log(w) is tiny and carries fp32's absolute rounding error of
# a few ulps of 1.0 (~1e-7), so a purely relative tolerance fails on rounding alone (CI, session 13's model).
FP32_LOG_ABS = 1e-6


def test_box_tokens_by_hand_on_one_tile() -> None:
    config = ImageProcessorConfig(image_size=168, max_num=1)
    # One 168-px tile, a 3 x 3 token grid of 333.3-unit cells.
    assert box_token_positions([10, 10, 300, 300], (168, 168), config, 1, 9) == [0]
    assert box_token_positions([400, 400, 600, 600], (168, 168), config, 1, 9) == [4]
    assert box_token_positions([0, 0, 1000, 1000], (168, 168), config, 1, 9) == list(range(9))
    # A shape in cell 2 that pokes 20 units into cell 1: only cell 2 (the overlap is under half the box).
    assert box_token_positions([713, 50, 950, 300], (168, 168), config, 1, 9) == [2]
    # A wide bar over the whole bottom row.
    assert box_token_positions([0, 700, 1000, 990], (168, 168), config, 1, 9) == [6, 7, 8]


def test_box_tokens_by_hand_with_tiles_and_thumbnail() -> None:
    config = ImageProcessorConfig(image_size=168, max_num=2)
    # A 336 x 168 image: a 2 x 1 grid (tiles 0 and 1, tokens 0-8 and 9-17), then the thumbnail (18-26).
    # The box is the right half's top-left cell: x 500-666 of the image, y 0-333.
    positions = box_token_positions([510, 10, 650, 320], (336, 168), config, 2, 9)
    # In the grid: tile 1, cell 0 -> token 9. In the thumbnail, x 510-650 is the centre column, row 0 -> 18 + 1.
    assert positions == [9, 19]


def test_focus_config_and_record_errors() -> None:
    with pytest.raises(ConfigError, match="weight"):
        FocusConfig(weight=-1)
    with pytest.raises(ConfigError, match="layer and one head"):
        FocusConfig(weight=1, heads=())
    base = {"id": "x", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                            {"from": "gpt", "value": "a"}]}
    record = parse_record({**base, "focus": [[[0, 1, 2, 30, 40]]]}, source="t", fallback_id="x")
    assert record.focus == (((0, 1, 2, 30, 40),),)
    tagged = parse_record({**base, "focus": [[[0, 1, 2, 30, 40, 1]]]}, source="t", fallback_id="x")
    assert tagged.focus == (((0, 1, 2, 30, 40, 1),),)  # a subject index (training/focus.py)
    count = parse_record({**base, "focus": [[[0, 1, 2, 30, 40], [0]]]}, source="t", fallback_id="x")
    assert count.focus == (((0, 1, 2, 30, 40), (0,)),)  # the image's start token: a count's sink
    sink = parse_record({**base, "focus": [[[0, 1, 2, 30, 40, 0], [0, 2]]]}, source="t", fallback_id="x")
    assert sink.focus == (((0, 1, 2, 30, 40, 0), (0, 2)),)  # the start token as subject 2's target
    for bad_pairs in (((1, -1),), ((1,),), ((1, 0.5),), (3,)):
        with pytest.raises(ConfigError, match="subject_heads"):
            FocusConfig(weight=1, subject_heads=bad_pairs)
    for bad in ([[[0, 1, 2, 30]]], [[[0, 50, 2, 30, 40]]], [[[0, 1, 2, 30, 4000]]], {"a": 1}, [["box"]],
                [[[0, 1, 2, 30, 40, -1]]], [[[0, 1, 2, 30, 40, 0.5]]], [[[0, 1, 2, 30, 40, 1, 2]]],
                [[[-1]]], [[[0.5]]], [[[True]]], [[["0"]]], [[[0, -2]]], [[[0, 1.5]]], [[[0, True]]]):
        with pytest.raises(DataError, match="focus"):
            parse_record({**base, "focus": bad}, source="t", fallback_id="x")


@pytest.fixture(scope="module")
def nano():
    model = SAILVLModel.from_pretrained(SHIPPED_MODEL_DIR, dtype=torch.float32)
    return model, SAILVLProcessor.from_pretrained(SHIPPED_MODEL_DIR)


def _scene_image(tmp_path: Path, name: str, colour: tuple[int, int, int]) -> str:
    image = Image.new("RGB", (168, 168), (255, 255, 255))
    image.paste(colour, (120, 120, 160, 160))  # a square in the bottom-right cell
    path = tmp_path / name
    image.save(path)
    return str(path)


def _samples(nano, tmp_path):
    _, processor = nano
    encoder = ConversationEncoder(processor, max_num=1)
    red, blue = _scene_image(tmp_path, "red.png", (220, 30, 30)), _scene_image(tmp_path, "blue.png", (30, 30, 220))
    box = [0, 714, 714, 952, 952]  # the square, 0-1000
    first = encoder.encode(
        [{"from": "human", "value": "<image>\nWhat colour is the square?"}, {"from": "gpt", "value": "red"},
         {"from": "human", "value": "How many shapes?"}, {"from": "gpt", "value": "1"}],
        images=[red], focus=[[box], []], sample_id="first")
    second = encoder.encode(
        [{"from": "human", "value": "<image>\nWhat colour is the square?"}, {"from": "gpt", "value": "blue"}],
        images=[blue], focus=[[box]], sample_id="second")
    return first, second


def test_encoder_marks_the_query_and_the_target_tokens(nano, tmp_path) -> None:
    model, processor = nano
    first, second = _samples(nano, tmp_path)
    # The second turn has no boxes: one supervised reply.
    assert len(first.focus) == 1 and len(second.focus) == 1
    query, targets, subject, spread, share = first.focus[0]
    assert subject == -1 and not spread  # untagged boxes: every supervised head; not a count
    assert share == 1.0  # one query: the reply's whole weight
    # The query is the token before the reply's first labelled token, and it is not itself labelled.
    assert first.labels[query] == IGNORE_INDEX and first.labels[query + 1] != IGNORE_INDEX
    assert processor.tokenizer.decode(first.input_ids[query + 1:query + 2]) == "red"
    # The target is the bottom-right image token (the 9th of the image).
    image_positions = (first.input_ids == model.config.image_token_id).nonzero().flatten().tolist()
    assert targets == [image_positions[8]]
    # A box on an image that only comes after the reply is not supervised (the query cannot see it).
    later = ConversationEncoder(processor, max_num=1).encode(
        [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
         {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
        images=[str(tmp_path / "red.png")], focus=[[[0, 714, 714, 952, 952]], [[0, 714, 714, 952, 952]]])
    assert len(later.focus) == 1 and later.focus[0][0] > later.focus[0][1][0]
    with pytest.raises(InputError, match="2 assistant turns"):
        ConversationEncoder(processor, max_num=1).encode(
            [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"},
             {"from": "human", "value": "q2"}, {"from": "gpt", "value": "b"}],
            images=[str(tmp_path / "red.png")], focus=[[[0, 0, 0, 10, 10]]])


def test_reply_span_supervises_every_reply_token_but_the_end(nano, tmp_path) -> None:
    _, processor = nano
    image = _scene_image(tmp_path, "red.png", (220, 30, 30))
    turns = [{"from": "human", "value": "<image>\nWhere is the red square?"}, {"from": "gpt", "value": "bottom right"}]
    box = [[[0, 714, 714, 952, 952]]]
    first = ConversationEncoder(processor, max_num=1).encode(turns, images=[image], focus=box)
    reply = ConversationEncoder(processor, max_num=1, focus_span="reply").encode(turns, images=[image], focus=box)
    trained = (reply.labels != IGNORE_INDEX).nonzero().flatten().tolist()
    # Every trained token but the closing <|im_end|> is predicted from a supervised query, all with one target.
    assert [query + 1 for query, *_ in reply.focus] == trained[:-1]
    # The reply's queries share its weight: a two-word answer weighs as much as a one-word one.
    assert sum(share for *_, share in reply.focus) == pytest.approx(1.0)
    assert len({share for *_, share in reply.focus}) == 1
    assert processor.tokenizer.decode(reply.input_ids[trained[:-1]]) == "bottom right"
    assert reply.focus[0][:2] == first.focus[0][:2] and len({tuple(t) for _, t, *_ in reply.focus}) == 1
    with pytest.raises(InputError, match="focus_span"):
        ConversationEncoder(processor, focus_span="all")


def _training_forward(model, row) -> torch.Tensor:
    """The trainer's forward of a packed row (per-sample attention), returning its LM loss."""
    return packed_loss(model, row, token_weights([row], "token")[0])


def _eager_attention(model, sample) -> torch.Tensor:
    """Transformers' own eager attention weights of layer LAYER for an unpacked sample: [head, query, key]."""
    previous = model.language_model.config._attn_implementation
    model.language_model.config._attn_implementation = "eager"
    try:
        embeds = model.embed_inputs(sample.input_ids[None], sample.pixel_values)
        return model.language_model.model(inputs_embeds=embeds, output_attentions=True).attentions[LAYER][0]
    finally:
        model.language_model.config._attn_implementation = previous


def _reference_loss(model, sample) -> torch.Tensor:
    """-log(attention on the targets) from transformers' own eager attention weights (unpacked sample)."""
    weights = _eager_attention(model, sample)[HEAD]  # [query, key]
    losses = torch.stack([-weights[query, targets].sum().log() * share for query, targets, _, _, share in sample.focus])
    return losses.sum() / sum(share for *_, share in sample.focus)


def test_loss_matches_eager_attention_weights_and_packed_equals_unpacked(nano, tmp_path) -> None:
    model, processor = nano
    samples = _samples(nano, tmp_path)
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=(HEAD,)))
    try:
        losses, packed_loss_value = _alone_and_packed(model, processor, focus, samples)
        assert packed_loss_value == pytest.approx(sum(losses) / 2, rel=1e-4, abs=FP32_LOG_ABS)
    finally:
        focus.remove()


def _alone_and_packed(model, processor, focus, samples, reference: bool = True) -> tuple[list[float], float]:
    """Each sample's focus loss alone (checked against eager attention unless `reference` is False, for losses
    `_reference_loss` does not compute), then the loss of them packed."""
    losses = []
    for sample in samples:
        row = pack_row([sample], processor.pad_token_id)
        focus.arm(row.focus, 1.0)
        _training_forward(model, row)
        focus.disarm()
        losses.append(focus.last_loss)
        if not reference:
            continue
        with torch.no_grad():
            expected = float(_reference_loss(model, sample))
            assert focus.last_loss == pytest.approx(expected, rel=1e-4, abs=FP32_LOG_ABS)
    packed = pack_row(list(samples), processor.pad_token_id)
    focus.arm(packed.focus, 1.0)
    _training_forward(model, packed)
    focus.disarm()
    return losses, focus.last_loss


def test_gradient_through_the_attached_loss_equals_direct_backprop(nano, tmp_path) -> None:
    model, processor = nano
    sample = _samples(nano, tmp_path)[0]
    params = [model.language_model.model.layers[LAYER].self_attn.q_proj.weight,
              model.language_model.model.layers[0].mlp.up_proj.weight, model.mlp1[1].weight]
    scale = 0.7
    # Reference: the eager attention weights' loss, backpropagated directly.
    model.zero_grad()
    (scale * _reference_loss(model, sample)).backward()
    expected = [p.grad.clone() for p in params]
    # Ours: the loss rides on the attention output; backprop from the LM loss times zero.
    model.zero_grad()
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=(HEAD,)))
    try:
        row = pack_row([sample], processor.pad_token_id)
        focus.arm(row.focus, scale)
        (_training_forward(model, row) * 0).backward()
        focus.disarm()
    finally:
        focus.remove()
    for got, want in zip([p.grad for p in params], expected):
        assert want.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    model.zero_grad()


def test_training_with_focus_logs_it_and_raises_the_target_attention(tmp_path) -> None:
    from sailvl2.nano.ladder import _corpus
    from sailvl2.nano.model import NANO_IMAGE_SIZE, build_nano_init
    from sailvl2.synth import generate_suite
    from sailvl2.training.recipe import load_recipe
    from sailvl2.training.trainer import Trainer

    suite = tmp_path / "suite"
    generate_suite(suite, seed=0, sizes={"train": 120}, families=["shapes"], image_size=NANO_IMAGE_SIZE)
    init = build_nano_init(tmp_path / "init", _corpus(suite / "train.jsonl"), seed=0)
    overrides = [f"init={{checkpoint: {init}}}", f"data.mixture={suite / 'mixtures' / 'multitask.yaml'}",
                 f"output_dir={tmp_path / 'run'}", "max_steps=12", "save_every=0", "packing.max_seq_len=1024",
                 "schedule.warmup_steps=2", "focus={weight: 1.0, layers: [1], heads: [0]}"]
    Trainer(load_recipe("nano_multitask", overrides), device="cpu", resume=False).run()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    probabilities = [m["focus_probability"] for m in metrics]
    assert len(probabilities) == 12 and all(0 < p <= 1 for p in probabilities)
    # 12 steps on the focus loss move the supervised head's attention onto the asked-about shapes.
    assert sum(probabilities[-3:]) / 3 > sum(probabilities[:3]) / 3 + 0.1


def test_activation_checkpointing_gives_the_same_focus_gradients(nano, tmp_path) -> None:
    """A checkpointed layer re-runs its hooks when it is recomputed in backward; the loss must count once."""
    _, processor = nano
    model = SAILVLModel.from_pretrained(SHIPPED_MODEL_DIR, dtype=torch.float32)
    model.train()
    row = pack_row(list(_samples(nano, tmp_path)), processor.pad_token_id)
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=(HEAD,)))
    weight = model.language_model.model.layers[LAYER].self_attn.q_proj.weight
    results = []
    try:
        for checkpointing in (False, True):
            if checkpointing:
                model.language_model.activation_checkpointing_enable()
            model.zero_grad()
            focus.arm(row.focus, 2.0)
            _training_forward(model, row).backward()
            focus.disarm()
            results.append((weight.grad.clone(), focus.last_loss))
    finally:
        focus.remove()
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-7)
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-5)


def test_step_focus_metrics_weight_every_row_by_its_replies() -> None:
    """With several rows per step the logged metrics cover all of them, not only the last one."""
    from sailvl2.training.trainer import _reply_weighted_means

    # Hand-computed: losses 1.0 (3 replies) and 2.0 (1 reply) -> (3 + 2) / 4 = 1.25; probabilities likewise.
    assert _reply_weighted_means([(1.0, 0.5, 3), (2.0, 0.1, 1)]) == pytest.approx((1.25, 0.4))
    assert _reply_weighted_means([(4.0, 0.2, 2)]) == pytest.approx((4.0, 0.2))
    assert _reply_weighted_means([]) is None


def test_reply_span_loss_weighs_each_reply_once(nano, tmp_path) -> None:
    """With `span: reply` a reply's queries share its weight: the loss is the share-weighted mean of the eager
    attention's -log(target mass), and a long reply counts as much as a one-token one in a packed row."""
    model, processor = nano
    image = _scene_image(tmp_path, "red.png", (220, 30, 30))
    box = [[[0, 714, 714, 952, 952]]]
    encoder = ConversationEncoder(processor, max_num=1, focus_span="reply")
    long = encoder.encode([{"from": "human", "value": "<image>\nWhere is the square?"},
                           {"from": "gpt", "value": "bottom right of the picture"}], images=[image], focus=box)
    short = encoder.encode([{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
                           images=[image], focus=box)
    assert len(long.focus) > 3 and len(short.focus) == 1
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=(HEAD,), span="reply"))
    try:
        losses, packed_loss_value = _alone_and_packed(model, processor, focus, (long, short))
        assert abs(losses[0] - losses[1]) > 1e-3
        # Two replies, equal weight: the plain mean of the two, not a mean over the long reply's many queries
        # (which would differ, since the two replies' losses do).
        assert packed_loss_value == pytest.approx(sum(losses) / 2, rel=1e-4, abs=FP32_LOG_ABS)
    finally:
        focus.remove()


RED_BOX, BLUE_BOX = [0, 60, 60, 298, 298], [0, 714, 714, 952, 952]  # 0-1000, the squares of `_two_squares`


def _two_squares(tmp_path: Path, relation: str, answer: str) -> tuple[Path, list[dict[str, str]]]:
    """An image with a red square in the top-left cell and a blue one in the bottom-right cell, and the turns
    "Is the red square <relation> the blue square?" -> ``answer``."""
    image = Image.new("RGB", (168, 168), (255, 255, 255))
    image.paste((220, 30, 30), (10, 10, 50, 50))
    image.paste((30, 30, 220), (120, 120, 160, 160))
    path = tmp_path / "two.png"
    image.save(path)
    return path, [{"from": "human", "value": f"<image>\nIs the red square {relation} the blue square?"},
                  {"from": "gpt", "value": answer}]


def test_subject_tagged_boxes_supervise_one_head_each(nano, tmp_path) -> None:
    """Boxes tagged with a subject (a sixth number) supervise only the matching head: the loss is the mean over
    the heads of -log(that head's eager attention on its own subject's tokens); untagged boxes keep supervising
    every head; a tagged reply weighs as much as an untagged one in a packed row."""
    model, processor = nano
    path, turns = _two_squares(tmp_path, "left of", "yes")
    encoder = ConversationEncoder(processor, max_num=1)
    red, blue = RED_BOX, BLUE_BOX
    tagged = encoder.encode(turns, images=[str(path)], focus=[[red + [0], blue + [1]]], sample_id="tagged")
    untagged = encoder.encode(turns, images=[str(path)], focus=[[red, blue]], sample_id="untagged")
    swapped = encoder.encode(turns, images=[str(path)], focus=[[red + [1], blue + [0]]], sample_id="swapped")
    image_positions = (tagged.input_ids == model.config.image_token_id).nonzero().flatten().tolist()
    # One query, two items: subject 0 -> the red square's token, subject 1 -> the blue one's, half the share each.
    assert [(targets, subject, share) for _, targets, subject, _, share in tagged.focus] == [
        ([image_positions[0]], 0, 0.5), ([image_positions[8]], 1, 0.5)]
    assert [(targets, subject) for _, targets, subject, _, _ in untagged.focus] == [
        ([image_positions[0], image_positions[8]], -1)]
    with pytest.raises(InputError, match="subject >= 0"):
        encoder.encode(turns, images=[str(path)], focus=[[red + [-1]]])
    heads = (0, 2)
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=heads))
    try:
        losses = []
        for sample in (tagged, untagged, swapped):
            row = pack_row([sample], processor.pad_token_id)
            focus.arm(row.focus, 1.0)
            _training_forward(model, row)
            focus.disarm()
            losses.append(focus.last_loss)
        packed = pack_row([tagged, untagged], processor.pad_token_id)
        focus.arm(packed.focus, 1.0)
        _training_forward(model, packed)
        focus.disarm()
    finally:
        focus.remove()
    with torch.no_grad():
        weights = _eager_attention(model, tagged)
    query = tagged.focus[0][0]
    red_token, blue_token = image_positions[0], image_positions[8]
    expected_tagged = (-weights[heads[0], query, red_token].log() - weights[heads[1], query, blue_token].log()) / 2
    expected_untagged = sum(-weights[head, query, [red_token, blue_token]].sum().log() for head in heads) / 2
    assert losses[0] == pytest.approx(float(expected_tagged), rel=1e-4, abs=FP32_LOG_ABS)
    assert losses[1] == pytest.approx(float(expected_untagged), rel=1e-4, abs=FP32_LOG_ABS)
    # The tags pick the heads: each head held to the other square gives another loss (a model trained with tagged
    # pairs may put both heads where the tags say, and then tagged and untagged losses nearly agree).
    expected_swapped = (-weights[heads[0], query, blue_token].log() - weights[heads[1], query, red_token].log()) / 2
    assert losses[2] == pytest.approx(float(expected_swapped), rel=1e-4, abs=FP32_LOG_ABS)
    assert abs(losses[2] - losses[0]) > 1e-3
    assert focus.last_loss == pytest.approx(sum(losses[:2]) / 2, rel=1e-4, abs=FP32_LOG_ABS)  # one reply each


def test_a_count_spreads_its_loss_over_the_counted_tokens_and_the_image_start(nano, tmp_path) -> None:
    """`[image_index]` alone adds the image's <img> token to a turn's targets and makes it a count: its loss is
    -mean(log attention) over the targets (an even spread is the optimum), checked against eager attention;
    the probability logged is still the mass on the targets; packed == unpacked."""
    model, processor = nano
    image = Image.new("RGB", (168, 168), (255, 255, 255))
    for left, top in ((10, 10), (120, 120)):
        image.paste((220, 30, 30), (left, top, left + 40, top + 40))  # red squares, top-left and bottom-right
    path = tmp_path / "two.png"
    image.save(path)
    encoder = ConversationEncoder(processor, max_num=1)
    turns = [{"from": "human", "value": "<image>\nHow many red shapes are there?"}, {"from": "gpt", "value": "2"}]
    boxes = [[0, 60, 60, 298, 298], [0, 714, 714, 952, 952]]
    count = encoder.encode(turns, images=[str(path)], focus=[[*boxes, [0]]], sample_id="count")
    plain = encoder.encode(turns, images=[str(path)], focus=[boxes], sample_id="plain")
    image_positions = (count.input_ids == model.config.image_token_id).nonzero().flatten().tolist()
    start = image_positions[0] - 1
    assert processor.tokenizer.convert_ids_to_tokens(int(count.input_ids[start])) == "<img>"
    [(query, targets, subject, spread, share)] = count.focus
    assert (targets, subject, spread, share) == ([start, image_positions[0], image_positions[8]], -1, True, 1.0)
    assert [item[3] for item in plain.focus] == [False]
    with pytest.raises(InputError, match="focus box"):
        encoder.encode(turns, images=[str(path)], focus=[[[1]]])  # no second image
    focus = FocusSupervision(model, FocusConfig(weight=1.0, layers=(LAYER,), heads=(HEAD,)))
    try:
        losses, packed_loss_value = _alone_and_packed(model, processor, focus, (count, plain), reference=False)
        row = pack_row([count], processor.pad_token_id)
        focus.arm(row.focus, 1.0)
        _training_forward(model, row)
        focus.disarm()
        probability = focus.last_target_probability
    finally:
        focus.remove()
    with torch.no_grad():
        weights = _eager_attention(model, count)
    on_targets = weights[HEAD, query, targets]
    assert losses[0] == pytest.approx(float(-on_targets.log().mean()), rel=1e-4, abs=FP32_LOG_ABS)
    assert probability == pytest.approx(float(on_targets.sum()), rel=1e-4, abs=FP32_LOG_ABS)
    assert losses[1] == pytest.approx(float(-weights[HEAD, query, targets[1:]].sum().log()), rel=1e-4,
                                      abs=FP32_LOG_ABS)
    assert packed_loss_value == pytest.approx(sum(losses) / 2, rel=1e-4, abs=FP32_LOG_ABS)



def test_subject_heads_supervise_a_later_layer_and_a_tagged_sink(nano, tmp_path) -> None:
    """focus.subject_heads maps subject k to one (layer, head), hooking that layer too; `[image_index, subject]`
    is the image's start token as that subject's target. The loss of each hooked layer is its supervised heads'
    mean of -log(eager attention on their own targets), and the row's loss the mean over the layers."""
    model, processor = nano
    path, turns = _two_squares(tmp_path, "below", "no")
    encoder = ConversationEncoder(processor, max_num=1)
    red, blue = RED_BOX, BLUE_BOX
    sample = encoder.encode(turns, images=[str(path)], focus=[[red + [0], blue + [1], [0, 2]]], sample_id="rel")
    image_positions = (sample.input_ids == model.config.image_token_id).nonzero().flatten().tolist()
    start = image_positions[0] - 1
    assert int(sample.input_ids[start]) == processor.image_start_token_id
    assert [(targets, subject) for _, targets, subject, _, _ in sample.focus] == [
        ([image_positions[0]], 0), ([image_positions[8]], 1), ([start], 2)]
    later = 2
    config = FocusConfig(weight=1.0, layers=(LAYER,), heads=(0, 2), subject_heads=((LAYER, 0), (LAYER, 2), (later, 1)))
    focus = FocusSupervision(model, config)
    try:
        focus.arm(pack_row([sample], processor.pad_token_id).focus, 1.0)
        _training_forward(model, pack_row([sample], processor.pad_token_id))
        focus.disarm()
        loss = focus.last_loss
    finally:
        focus.remove()
    previous = model.language_model.config._attn_implementation
    model.language_model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            embeds = model.embed_inputs(sample.input_ids[None], sample.pixel_values)
            attentions = model.language_model.model(inputs_embeds=embeds, output_attentions=True).attentions
    finally:
        model.language_model.config._attn_implementation = previous
    query = sample.focus[0][0]
    first = (-attentions[LAYER][0, 0, query, image_positions[0]].log()
             - attentions[LAYER][0, 2, query, image_positions[8]].log()) / 2
    second = -attentions[later][0, 1, query, start].log()
    assert loss == pytest.approx(float(first + second) / 2, rel=1e-4, abs=FP32_LOG_ABS)
    with pytest.raises(InputError, match="subject >= 0"):
        encoder.encode(turns, images=[str(path)], focus=[[[0, -1]]])
