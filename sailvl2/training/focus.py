"""Focus supervision: an auxiliary loss that teaches chosen attention heads where the answer is in the image.

A record may say, for each assistant turn, which image regions the answer depends on (``focus``: per turn a
list of ``[image_index, x1, y1, x2, y2]`` boxes in the release's 0-1000 grounding coordinates). The encoder
maps the boxes to the image tokens that cover them (this module's :func:`box_token_positions`, through the
processor's own tile plan) and marks the *queries*: the position whose output is the reply's first token
(``span: first``), or the positions predicting every token of the reply's text (``span: reply``). For the
configured heads, the loss is

    - log sum_{t in targets} softmax_t(q_query . k_t / sqrt(d))    (keys: the query's own sample, causal)

averaged over the global batch's queries and scaled by ``weight``.

A box may carry a sixth number, its *subject* (``[image_index, x1, y1, x2, y2, subject]``): boxes tagged k
supervise only the k-th of the configured heads (modulo their number), untagged boxes all of them. A question
about two things ("Is the value of A greater than the value of B?") then gets one head on each, where a single
target set made both heads attend to the pair and their outputs averaged the two values away: the nano chart
comparison went from 58 to 85 % (docs/nano-sessions.md, session 16; tagging the shapes' spatial relations did
not help them). A tagged reply weighs what an untagged one does.

A turn may also list ``[image_index]`` alone: that image's start token ``<img>`` (the *sink*; before a sample's
first image its content is the same in every sample) joins the turn's untagged targets, and they become a
*count*, whose loss is the mean of the targets' log-probabilities,

    - (1 / |T|) sum_{t in T} log softmax_t(q_query . k_t / sqrt(d)),

minimal when the attention spreads evenly over the counted tokens and the sink. The head's output is then the
mean of their values, and the sink's part of it, 1 / (count + 1), tells how many there are (all of it: none).
A head held only to put its mass on the counted tokens outputs their mean whatever their number: the nano
model answered "1" for two or three shapes of a colour (session 16); with sinks, counting by kind went from 67
to 76 % and a zero count is read (session 17).

With ``subject_heads`` (``[[layer, head], ...]``), subject k supervises exactly that head of that layer, and the
layers named there are hooked as well. A spatial question needs two lookups: "Is A left of B?" finds A in layer 1,
and only then can a head look where A's position and the relation word point. The nano suite tags that second
lookup as subject 2 (B when the relation holds; else ``[image_index, 2]``, the image's start token as subject 2's
target) and the nano recipes put it on layer 2's head 0: relation 45 -> 99 % and "which shape is left of ..."
62 -> 96 % after the multi-task stage (session 21). The yes/no answer alone gave no signal to learn the comparison
from: for each relation word, neither position alone tells the answer.

It is not in the paper: the nano model (trained from scratch on a CPU) learns aggregate questions (counts) long
before it learns to pick one image token by the question's attributes, and supervising one head's attention
closes that gap (docs/nano-sessions.md, session 6). With ``weight: 0`` (the default) nothing is hooked and
training is unchanged.

FSDP2 / activation checkpointing: the scores are computed inside a pre-hook of the supervised attention module,
while its parameters are unsharded, and the loss is attached to that module's output by an autograd function
whose backward injects the loss gradient when the output's gradient arrives, i.e. during the layer's own
backward, when FSDP2 has gathered the parameters again (the pattern MoE auxiliary losses use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..processing.images import ImageProcessorConfig, plan_tiles

if TYPE_CHECKING:
    from .packing import RowFocusQuery

__all__ = ["FocusConfig", "FocusSupervision", "box_token_positions"]


@dataclass(frozen=True)
class FocusConfig:
    weight: float = 0.0  # 0 disables focus supervision
    layers: tuple[int, ...] = (1,)  # decoder layers whose heads are supervised
    heads: tuple[int, ...] = (0,)  # query heads supervised in each of those layers
    span: str = "first"  # which reply tokens' predictions are supervised: "first" or every token ("reply")
    # Optional: subject k supervises exactly (layer, head) subject_heads[k] instead of the k-th of `heads` in every
    # layer of `layers`; its layers are hooked too. Lets a question's second lookup (after a first head found its
    # anchor) be supervised in a later layer.
    subject_heads: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        object.__setattr__(self, "heads", tuple(int(head) for head in self.heads))
        pairs = [tuple(pair) if isinstance(pair, (list, tuple)) else (pair,) for pair in self.subject_heads]
        if any(len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
               for pair in pairs):
            raise ConfigError(f"focus.subject_heads must be [layer, head] pairs of integers >= 0, got "
                              f"{list(self.subject_heads)!r}")
        object.__setattr__(self, "subject_heads", tuple((int(layer), int(head)) for layer, head in pairs))
        if self.weight < 0:
            raise ConfigError(f"focus.weight must be >= 0, got {self.weight}")
        if self.span not in ("first", "reply"):
            raise ConfigError(f"focus.span must be 'first' or 'reply', got {self.span!r}")
        if self.weight and (not self.layers or not self.heads):
            raise ConfigError("focus supervision needs at least one layer and one head")

    @property
    def enabled(self) -> bool:
        return self.weight > 0


def box_token_positions(box: Sequence[float], image_size: tuple[int, int], config: ImageProcessorConfig,
                        max_num: int | None, tokens_per_tile: int) -> list[int]:
    """Indices (within the image's own tokens) of the tokens whose cells cover `box` (0-1000 coordinates).

    Follows the processor's tile plan: every tile of every grid (and the thumbnail) is split into a
    side x side token grid (side = sqrt(tokens per tile), one token per 2x2 patches after the pixel shuffle,
    row-major). A token is a target when its cell and the box overlap by at least half of the smaller of the
    two, so a shape drawn inside one cell selects that cell and not the neighbours it barely touches, and a box
    spanning several cells selects all of them.
    """
    side = int(round(tokens_per_tile ** 0.5))
    if side * side != tokens_per_tile:
        raise ConfigError(f"focus supervision needs a square token grid per tile, got {tokens_per_tile} tokens")
    x1, y1, x2, y2 = (float(v) / 1000.0 for v in box)
    box_area = max(x2 - x1, 1e-6) * max(y2 - y1, 1e-6)
    positions, offset = [], 0
    for (cols, rows), start, stop in plan_tiles(*image_size, config, max_num).pieces:
        cell_w, cell_h = 1.0 / (cols * side), 1.0 / (rows * side)
        threshold = 0.5 * min(cell_w * cell_h, box_area)
        for tile in range(start, stop):
            tile_row, tile_col = divmod(tile, cols)
            for cell in range(tokens_per_tile):
                row, col = divmod(cell, side)
                left, top = (tile_col * side + col) * cell_w, (tile_row * side + row) * cell_h
                overlap = (max(0.0, min(x2, left + cell_w) - max(x1, left))
                           * max(0.0, min(y2, top + cell_h) - max(y1, top)))
                if overlap >= threshold:
                    positions.append(offset + cell)
            offset += tokens_per_tile
    return positions


class _AttachLoss(torch.autograd.Function):
    """Identity on `output`; in backward, also sends gradient 1 into `loss` (already weighted)."""

    @staticmethod
    def forward(ctx: Any, output: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        ctx.loss_shape = loss.shape
        return output.view_as(output)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad_output, torch.ones(ctx.loss_shape, dtype=grad_output.dtype, device=grad_output.device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class FocusSupervision:
    """Hooks the supervised attention modules of a transformers decoder (Qwen3 layout: `q_proj`, `k_proj`,
    `q_norm`, `k_norm`, rotary `position_embeddings`) and adds the focus loss of the row being run."""

    def __init__(self, model: torch.nn.Module, config: FocusConfig) -> None:
        self.config = config
        layers = model.language_model.model.layers
        self._handles = []
        self._items: list[tuple[int, int, list[int], int, bool, float]] = []
        self._scale = 0.0
        self.last_loss: float | None = None  # this row's unweighted loss (mean over its replies)
        self.last_target_probability: float | None = None
        # Per supervised module: (loss, target probability) of the current row. Keyed by module because an
        # activation-checkpointed layer runs its hooks again when it is recomputed in backward.
        self._stats: dict[int, tuple[float, float]] = {}
        self._layer_of: dict[int, int] = {}
        for layer in sorted({*config.layers, *(layer for layer, _ in config.subject_heads)}):
            if not 0 <= layer < len(layers):
                raise ConfigError(f"focus.layers has {layer}; the LLM has layers 0..{len(layers) - 1}")
            attention = layers[layer].self_attn
            if not all(hasattr(attention, name) for name in ("q_proj", "k_proj", "head_dim", "scaling")):
                raise ConfigError(f"focus supervision needs Qwen-style attention (q_proj, k_proj, rotary "
                                  f"position_embeddings); layer {layer} has {type(attention).__name__}")
            heads = attention.config.num_attention_heads
            if any(not 0 <= head < heads for head in (*config.heads, *(h for _, h in config.subject_heads))):
                raise ConfigError(f"focus.heads {list(config.heads)} or subject_heads {list(config.subject_heads)} out "
                                  f"of range: the LLM has {heads} heads")
            self._layer_of[id(attention)] = layer
            self._handles.append(attention.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(attention.register_forward_hook(self._post_hook))
        self._pending: list[torch.Tensor] = []

    def arm(self, items: list[RowFocusQuery], scale: float) -> None:
        """The next forward is a packed row with these focus queries (training/packing.py); `scale` multiplies
        the sum of its per-query losses times their shares (weight / replies in the global batch, times any rank
        factor)."""
        self._items, self._scale, self._pending, self._stats = list(items), float(scale), [], {}

    def disarm(self) -> None:
        """Call after the row's backward (a checkpointed layer recomputes its forward, and hooks, then)."""
        self._items, self._pending = [], []
        self.last_loss = self.last_target_probability = None  # a row without focus items reports none
        if self._stats:
            self.last_loss = sum(loss for loss, _ in self._stats.values()) / len(self._stats)
            self.last_target_probability = sum(p for _, p in self._stats.values()) / len(self._stats)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _factor(self, subject: int, layer: int, head: int) -> float:
        """How much an item of this subject (-1: untagged) counts on this head of this layer. A tagged item
        supervises one head (subject k -> subject_heads[k], else the k-th of `heads` in each of `layers`, modulo
        their number) at len(heads) times its share, so a tagged reply weighs what an untagged one does."""
        config, tagged = self.config, float(len(self.config.heads))
        if subject < 0:
            return 1.0 if layer in config.layers and head in config.heads else 0.0
        if config.subject_heads:
            return tagged * (config.subject_heads[subject % len(config.subject_heads)] == (layer, head))
        return tagged * (layer in config.layers and config.heads[subject % len(config.heads)] == head)

    def _pre_hook(self, module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if not self._items or not torch.is_grad_enabled():
            return
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        if hidden.shape[0] != 1:
            raise ConfigError("focus supervision runs on packed rows (batch dimension 1)")
        head_dim = module.head_dim
        queries = torch.tensor([item.query for item in self._items], device=hidden.device)
        starts = torch.tensor([item.start for item in self._items], device=hidden.device)
        shares = torch.tensor([item.share for item in self._items], device=hidden.device)
        subjects = [item.subject for item in self._items]
        spread = torch.tensor([item.spread for item in self._items], device=hidden.device)
        # Queries at the supervised positions only; keys everywhere (a row is a few thousand tokens).
        q_norm, k_norm = getattr(module, "q_norm", torch.nn.Identity()), getattr(module, "k_norm", torch.nn.Identity())
        q = q_norm(module.q_proj(hidden[0, queries]).view(len(queries), -1, head_dim))
        k = k_norm(module.k_proj(hidden[0]).view(hidden.shape[1], -1, head_dim))
        q = q * cos[0, queries, None] + _rotate_half(q) * sin[0, queries, None]
        k = k * cos[0, :, None] + _rotate_half(k) * sin[0, :, None]
        keys = torch.arange(hidden.shape[1], device=hidden.device)
        visible = (keys[None] >= starts[:, None]) & (keys[None] <= queries[:, None])
        targets = torch.zeros_like(visible)
        item_index = [index for index, item in enumerate(self._items) for _ in item.targets]
        target_index = [position for item in self._items for position in item.targets]
        targets[item_index, target_index] = True
        groups = q.shape[1] // k.shape[1]  # grouped-query attention: query heads per key-value head
        total = hidden.new_zeros((), dtype=torch.float32)
        losses, probabilities = [], []
        layer = self._layer_of[id(module)]
        supervised = list(self.config.heads) if layer in self.config.layers else []
        supervised += [h for (at, h) in self.config.subject_heads if at == layer and h not in supervised]
        for head in supervised:
            weights = shares * torch.tensor([self._factor(subject, layer, head) for subject in subjects],
                                            device=hidden.device)
            if not bool((weights > 0).any()):
                continue
            scores = (q[:, head].float() @ k[:, head // groups].float().T) * module.scaling
            log_probs = scores.masked_fill(~visible, float("-inf")).log_softmax(-1)
            mass = log_probs.masked_fill(~targets, float("-inf")).logsumexp(-1)  # log of the mass on the targets
            on_target = mass
            if bool(spread.any()):
                # A count: the mean log-probability of its targets, whose optimum is an even spread over the
                # counted tokens and the image's start token, so the head's output is their mean value and the
                # start token's part of it, 1 / (count + 1), says how many there are.
                mean_log = log_probs.masked_fill(~targets, 0.0).sum(-1) / targets.sum(-1).clamp(min=1)
                on_target = torch.where(spread, mean_log, on_target)
            on_target = on_target.masked_fill(weights == 0, 0.0)  # untouched heads' items: no -inf * 0
            total = total - (on_target * weights).sum()
            replies = float(weights.sum())
            losses.append(float(-(on_target.detach() * weights).sum()) / replies)
            probabilities.append(float((mass.detach().exp() * weights).sum()) / replies)
        if not losses:  # no item of this row is supervised in this layer
            return
        self._stats[id(module)] = (sum(losses) / len(losses), sum(probabilities) / len(probabilities))
        self._pending.append(total * (self._scale / len(self.config.heads) / len(self.config.layers)))

    def _post_hook(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        if not self._pending:
            return None
        loss = self._pending.pop()
        if isinstance(output, tuple):
            return (_AttachLoss.apply(output[0], loss.to(output[0].dtype)), *output[1:])
        return _AttachLoss.apply(output, loss.to(output.dtype))
