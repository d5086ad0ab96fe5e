"""Tokenisation masks, stream + visual packing, and packed == unpacked loss and gradients."""

from __future__ import annotations

import pytest
import torch

from sailvl2 import ImagePlaceholderError
from sailvl2.training.loss import packed_loss
from sailvl2.training.packing import PackingConfig, StreamPacker, fit_to_length, pack_row, token_weights
from sailvl2.training.tokenize import IGNORE_INDEX, ConversationEncoder

from .conftest import GOLDEN_IMAGES

PAD = 151643


@pytest.fixture(scope="module")
def encoder(sailvl_processor):
    return ConversationEncoder(sailvl_processor, max_num=2)


def _mixed_samples(encoder):
    img = lambda name: str(GOLDEN_IMAGES / name)  # noqa: E731
    return [
        encoder.encode([{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello, how can I help?"}]),
        encoder.encode([{"from": "human", "value": "What is this?"}, {"from": "gpt", "value": "A picture."}],
                       images=[img("img_800x600.png")]),
        encoder.encode(
            [{"from": "human", "value": "<image>\n<image>\nCompare"}, {"from": "gpt", "value": "Left is wider."},
             {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes, clearly so."}],
            images=[img("img_300x1000.png"), img("img_448x448.png")]),
        encoder.encode([{"from": "human", "value": "Count to five."}, {"from": "gpt", "value": "1 2 3 4 5"}]),
    ]


def _decode_labels(processor, sample):
    return processor.tokenizer.decode(sample.labels[sample.labels != IGNORE_INDEX])


def test_loss_is_on_assistant_turns_only(encoder, sailvl_processor):
    sample = _mixed_samples(encoder)[2]
    assert _decode_labels(sailvl_processor, sample) == "Left is wider.<|im_end|>Yes, clearly so.<|im_end|>"
    # Every labelled token equals its input token; labels elsewhere are ignored.
    trained = sample.labels != IGNORE_INDEX
    assert torch.equal(sample.labels[trained], sample.input_ids[trained])
    assert sample.num_tiles == sum(sample.image_num_tiles) == sample.pixel_values.shape[0]


def test_think_fusion_masking(encoder, sailvl_processor):
    turns = [{"from": "human", "value": "2+3?"}, {"from": "gpt", "value": "<think>\n2+3=5\n</think>\n\\boxed{5}"}]
    cot = encoder.encode(turns, kind="cot")
    direct = encoder.encode(turns, kind="direct")
    assert torch.equal(cot.input_ids, direct.input_ids)
    assert _decode_labels(sailvl_processor, cot) == "<think>\n2+3=5\n</think>\n\\boxed{5}<|im_end|>"
    assert _decode_labels(sailvl_processor, direct) == "\n\\boxed{5}<|im_end|>"
    # The direct sample's trained tokens are exactly the cot sample's, minus the thinking block.
    cot_positions = (cot.labels != IGNORE_INDEX).nonzero().flatten().tolist()
    direct_positions = (direct.labels != IGNORE_INDEX).nonzero().flatten().tolist()
    think_end = sailvl_processor.tokenizer.convert_tokens_to_ids("</think>")
    cut = (cot.input_ids == think_end).nonzero().flatten().tolist()[-1]
    assert direct_positions == [p for p in cot_positions if p > cut]


def test_placeholders_are_prepended_or_checked(encoder, sailvl_processor):
    sample = _mixed_samples(encoder)[1]
    text = sailvl_processor.tokenizer.decode(sample.input_ids)
    assert "<|im_start|>user\n<img>" in text and "</img>\nWhat is this?" in text
    with pytest.raises(ImagePlaceholderError, match="2 '<image>' placeholder"):
        encoder.encode([{"from": "human", "value": "<image><image>x"}, {"from": "gpt", "value": "y"}],
                       images=[str(GOLDEN_IMAGES / "img_448x448.png")])


@pytest.mark.parametrize("reduction", ["token", "sample", "sqrt"])
def test_packed_equals_unpacked_loss_and_gradients(golden_model, encoder, reduction):
    samples = _mixed_samples(encoder)
    packed = [pack_row(samples[:3], PAD), pack_row(samples[3:], PAD, pad_to=samples[3].length + 7)]
    single = [pack_row([s], PAD) for s in samples]

    def run(batches):
        golden_model.zero_grad()
        total = sum(packed_loss(golden_model, b, w) for b, w in zip(batches, token_weights(batches, reduction)))
        total.backward()
        return total.detach(), {n: p.grad.clone() for n, p in golden_model.named_parameters() if p.grad is not None}

    packed_total, packed_grads = run(packed)
    single_total, single_grads = run(single)
    assert abs(packed_total.item() - single_total.item()) <= 1e-5
    assert packed_grads.keys() == single_grads.keys() and len(packed_grads) == 50
    for name in packed_grads:
        assert (packed_grads[name] - single_grads[name]).abs().max().item() <= 1e-5, name
    golden_model.zero_grad()


def test_without_restarting_positions_samples_would_leak(golden_model, encoder):
    """Negative control: the same row with continuous positions (one long sequence) gives another loss."""
    samples = _mixed_samples(encoder)[:2]
    row = pack_row(samples, PAD)
    weights = token_weights([row], "token")[0]
    with torch.no_grad():
        separate = packed_loss(golden_model, row, weights)
        row.position_ids = torch.arange(row.num_tokens).unsqueeze(0)
        leaking = packed_loss(golden_model, row, weights)
    assert abs(separate.item() - leaking.item()) > 1e-3


def test_weights_normalise_per_reduction(encoder):
    samples = _mixed_samples(encoder)
    rows = [pack_row(samples[:2], PAD), pack_row(samples[2:], PAD)]
    counts = [n for row in rows for n in row.sample_loss_tokens]
    for reduction, per_sample in (("token", [n / sum(counts) for n in counts]), ("sample", [0.25] * 4)):
        weights = token_weights(rows, reduction)
        sums = []
        for row, weight in zip(rows, weights):
            start = 0
            for length in row.sample_lengths:
                sums.append(weight[0, start : start + length].sum().item())
                start += length
        assert sums == pytest.approx(per_sample, rel=1e-5)


def test_overlong_policy_truncates_after_last_image_or_skips(encoder):
    sample = _mixed_samples(encoder)[1]  # ~1.3k tokens, image first
    image_end = int((sample.input_ids == 151671).nonzero()[-1]) + 2
    cut = fit_to_length(sample, PackingConfig(max_seq_len=image_end + 3), 151671)
    assert cut.length == image_end + 3 and torch.equal(cut.input_ids, sample.input_ids[: image_end + 3])
    assert fit_to_length(sample, PackingConfig(max_seq_len=image_end - 5), 151671) is None
    assert fit_to_length(sample, PackingConfig(max_seq_len=image_end + 3, overlong="skip"), 151671) is None


def test_stream_packer_places_every_sample_once_and_balances_tiles(encoder):
    base = _mixed_samples(encoder)
    samples = []
    for copy in range(6):
        for index, sample in enumerate(base):
            samples.append(type(sample)(sample.input_ids, sample.labels, sample.pixel_values,
                                        sample.image_num_tiles, f"{copy}-{index}"))
    packer = StreamPacker(PackingConfig(max_seq_len=4096, buffer_size=12), 151671, PAD, num_ranks=2)
    seen, spreads = [], []
    for rows in packer.steps(samples):
        assert all(row.num_tokens <= 4096 for row in rows)
        seen += [sid for row in rows for sid in row.sample_ids]
        if len(rows) == 2:
            spreads.append(abs(rows[0].num_tiles - rows[1].num_tiles))
    assert sorted(seen) == sorted(s.sample_id for s in samples)
    assert max(spreads) <= max(s.num_tiles for s in base)  # never worse than one sample's tiles
    assert packer.stats.samples == len(samples) and packer.stats.efficiency > 0


def test_segment_lengths_by_hand():
    from sailvl2.modeling.packed_attention import segment_lengths

    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    assert segment_lengths(positions) == (3, 2, 1, 4)
    assert segment_lengths(torch.arange(5).unsqueeze(0)) == (5,)


def test_per_sample_attention_equals_dense_block_mask(golden_model, encoder, monkeypatch):
    """The packed rows' per-sample SDPA (`sailvl2_sdpa`) and transformers' SDPA over the dense block-diagonal
    mask are two paths to the same attention: same loss, same gradients."""
    samples = _mixed_samples(encoder)
    row = pack_row(samples, PAD, pad_to=sum(s.length for s in samples) + 5)
    weights = token_weights([row], "token")[0]
    config = golden_model.language_model.config
    assert config._attn_implementation == "sailvl2_sdpa"

    def run(implementation):
        config._attn_implementation = implementation
        try:
            golden_model.zero_grad()
            loss = packed_loss(golden_model, row, weights)
            loss.backward()
        finally:
            config._attn_implementation = "sailvl2_sdpa"
        return loss.detach(), {n: p.grad.clone() for n, p in golden_model.named_parameters() if p.grad is not None}

    from sailvl2.modeling import packed_attention

    calls = []
    original = packed_attention.sdpa_attention_forward
    monkeypatch.setattr(packed_attention, "sdpa_attention_forward",
                        lambda *args, **kwargs: calls.append(args[1].shape[2]) or original(*args, **kwargs))
    per_sample_loss, per_sample_grads = run("sailvl2_sdpa")
    # One causal SDPA call per sample (and the pad tail) in every layer, never one over the whole row.
    num_layers = golden_model.language_model.config.num_hidden_layers
    assert calls == ([s.length for s in samples] + [5]) * num_layers
    dense_loss, dense_grads = run("sdpa")
    assert abs(per_sample_loss.item() - dense_loss.item()) <= 1e-5
    assert per_sample_grads.keys() == dense_grads.keys()
    for name in dense_grads:
        assert (per_sample_grads[name] - dense_grads[name]).abs().max().item() <= 1e-5, name
    golden_model.zero_grad()


def test_lazy_pixels_plan_from_headers_and_decode_only_when_asked(sailvl_processor, monkeypatch):
    """Under torchrun the encoder plans tiles from image headers (lazy_pixels.py): the same tokens, tiles and
    packed rows as eager encoding, and no image is decoded until a rank asks for its own row's pixels."""
    import sailvl2.training.lazy_pixels as lazy_module
    from sailvl2.training.lazy_pixels import LazyPixels

    eager = _mixed_samples(ConversationEncoder(sailvl_processor, max_num=2))
    calls = []
    real = lazy_module.preprocess_images
    monkeypatch.setattr(lazy_module, "preprocess_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    lazy = _mixed_samples(ConversationEncoder(sailvl_processor, max_num=2, lazy_pixels=True))
    eager_row, lazy_row = pack_row(eager, PAD), pack_row(lazy, PAD)
    assert isinstance(lazy_row.pixel_values, LazyPixels) and lazy_row.num_tiles == eager_row.num_tiles > 0
    for one, two in zip(eager, lazy):
        assert torch.equal(one.input_ids, two.input_ids) and one.image_num_tiles == two.image_num_tiles
    assert calls == []  # planned and packed, nothing decoded
    assert torch.equal(lazy_row.pixels(), eager_row.pixels())
    assert len(calls) == 2  # the two samples with images, once each
    lazy_row.pixels()
    assert len(calls) == 2  # cached


def test_a_late_image_error_blanks_the_row_and_zeroes_its_weight(sailvl_processor, tmp_path):
    """A file whose header reads but whose data is cut off fails only when decoded; the trainer then runs the
    row with black tiles and zero weight so the other ranks stay in step."""
    from types import SimpleNamespace

    from PIL import Image

    from sailvl2.errors import ImageLoadError
    from sailvl2.training.trainer import Trainer

    path = tmp_path / "cut.jpg"
    noise = torch.randint(0, 256, (480, 640, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, half the scan data does not
    sample = ConversationEncoder(sailvl_processor, max_num=2, lazy_pixels=True).encode(
        [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}], images=[str(path)])
    row = pack_row([sample], PAD)
    with pytest.raises(ImageLoadError):
        pack_row([sample], PAD).pixels()
    trainer = SimpleNamespace(info=SimpleNamespace(rank=0), late_image_errors=0)
    weight = token_weights([row], "token")[0]
    assert weight.sum() > 0
    blanked = Trainer._decode_or_blank(trainer, row, weight)
    assert float(blanked.abs().sum()) == 0.0 and trainer.late_image_errors == 1
    assert row.pixels().shape[0] == row.num_tiles == sample.num_tiles and float(row.pixels().abs().sum()) == 0.0
