"""AdaLRS: loss-slope-guided learning-rate search (SAIL-VL2 §3.2.3 Eq. 1; AdaLRS, arXiv 2506.13274).

AdaLRS multiplies a scale `s` onto the base schedule, `lr(step) = base_lr * base_schedule(step) * s`, and tunes
`s` during the search range of training with a backtracking line search on the loss slope (PAPER.md 7):

    s <- alpha' * s   if v(alpha' * s) > v(s) + 2e     (faster descent: keep the upscaled LR)
         beta'  * s   if v(alpha' * s) < v(s) - 2e     (slower descent: roll back, then downscale)
         s            otherwise
    alpha' = max(lambda^t * alpha, 1),   beta' = 1 / max(lambda^t * beta, 1)

where v is the descent velocity (minus the ordinary-least-squares slope of loss against step over a window of k
observations) and e its estimation error. Outside the search range `s` never changes.

How a trainer drives it, once per optimizer step (`step` 0-based, the loss of that step's batch):

    decision = adalrs.observe(step, loss)
    if decision is not None and decision.rollback:
        restore_snapshot(snapshot, model, optimizer)      # parameters + optimizer state of the trial start
    if decision is not None and decision.snapshot:
        snapshot = take_snapshot(model, optimizer)        # the state the trial LR starts from
    lr for step + 1 = base_lr * base_schedule(step + 1) * adalrs.lr_multiplier()

The global step counter and the data stream keep going forward after a rollback: the paper rolls back "model
parameters and optimizer state", and the compute spent on the failed trial is spent. `take_snapshot(extra=...)`
can carry anything else the trainer wants restored (RNG, a data cursor, a grad-scaler state). In data-parallel
training every rank must observe the same (globally averaged) loss so that all ranks take the same decisions.

Decisions taken where the papers are silent (PAPER.md 7.2 [NOT FOUND], 7.3, 10.4); each one is a setting:

1. Window (`window`, default 50 observations): non-overlapping, count-based windows. Windows are collected
   only inside the search range (the first one starts at `search_start`), and the buffer restarts after every
   decision that changes the LR or the parameters, so a window never mixes two LRs or two trajectories.
2. Estimation error e (`error_mode`, default "pooled"): the OLS standard error of the slope, from the residual
   scatter of the window around its fitted line. The paper compares v(trial) with v(ref) +/- 2e where e is "the"
   estimation error of v, so e is the pooled per-window error sqrt((se_ref^2 + se_trial^2) / 2); "reference" uses
   se_ref alone, "combined" uses the standard error of the difference sqrt(se_ref^2 + se_trial^2). The factor 2
   is `error_sigmas`.
3. Trial protocol: a trial runs the upscaled LR for exactly one window of k observations, then compares that
   window's velocity with the reference velocity (the window measured right before the trial, at the pre-trial
   LR, ending at the snapshot). A trial only starts if its whole window fits before `search_end`, so no decision
   is ever taken outside [search_start, search_end) when observe() is called every step.
4. When to start a trial (`trigger`, default "slowdown"): "when loss descent slows" = the window's velocity is
   lower than the previous kept window's velocity (no margin: descent velocity normally decays, so this fires
   often, which is what a search needs). The first window of the range is only a baseline. "always" starts a
   trial at every normal window boundary. No trial starts from a window whose loss rises significantly
   (v < -error_sigmas * se): a rising loss argues for a smaller LR, and the boundary rule handles it.
5. "Neither" (`neither_action`, default "revert"): Eq. 1 says eta_{t+k} = eta_t, i.e. the pre-trial LR; the
   trial's parameters are kept (no rollback: they are statistically as good). "stay" keeps the trial LR instead.
   Either way the decision kind is "keep".
6. The unit of t in lambda^t (`decay`, default 0.99) is the ADJUSTMENT, not the step (PAPER.md 7.3): with
   lambda = 0.99 per step, alpha = 3 would decay to 1 within ~110 steps, far shorter than any search range;
   per adjustment it takes ~110 resolved trials, which matches "converges within a few adjustments" plus the
   geometric contraction of the step sizes. t counts every resolved trial (accept, reject, abort, keep) and
   every boundary-rule downscale. alpha' and beta' are computed from the same t at trial start and resolution.
   Once alpha' is 1 no trial starts; once beta' is 1 the boundary rule stops downscaling: the search is over.
7. Early abort (`abort_on_max`, `max_scope`): a trial is aborted (rollback + downscale by beta', like a reject)
   as soon as one loss exceeds the historical maximum. "Historical" (`max_scope`, default "all") means every
   finite loss observed on the kept trajectory since training started (losses of rolled-back trials do not
   count); "search" counts only losses since `search_start`, which is much more sensitive. A non-finite loss
   during a trial aborts it too.
8. Boundary rule (`rise_windows`, default 2): "loss rises over two consecutive windows" = two consecutive
   normal windows each with a significantly positive slope (v < -error_sigmas * se); then s <- beta' * s
   without rollback. Significance keeps a flat, noisy loss (slope ~ 0) from triggering it.
9. Clamps: `min_scale` <= s <= `max_scale`; a trial whose upscale would be clamped to no change is not started.
10. Non-finite losses outside a trial are skipped (logged at WARNING), not fitted.

Every decision is logged (INFO, logger "sailvl2.training.adalrs") and appended to `history` as a dict (the
trainer writes it to its metrics file). `state_dict()` / `load_state_dict()` are JSON-serialisable and resume
exactly, mid-window and mid-trial; a trainer that checkpoints mid-trial must also keep the trial snapshot
(`in_trial` says so) so that a later rollback still has something to restore.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)

_STATE_VERSION = 1
DECISION_KINDS = ("trial", "accept", "reject", "abort", "downscale", "keep")


@dataclass(frozen=True)
class AdaLRSConfig:
    """Settings of the search; see the module docstring for each choice the papers leave open."""

    enabled: bool = True
    window: int = 50  # k: observations per window
    alpha: float = 3.0  # upscale factor of a trial (before decay)
    beta: float = 2.0  # downscale divisor (before decay)
    decay: float = 0.99  # lambda, applied per adjustment
    search_start: float = 0.1  # fraction of total steps where the search begins
    search_end: float = 0.4  # fraction of total steps where it ends
    error_sigmas: float = 2.0  # the "2" in 2e
    error_mode: str = "pooled"  # pooled | reference | combined
    trigger: str = "slowdown"  # slowdown | always
    neither_action: str = "revert"  # revert (Eq. 1: pre-trial LR) | stay (keep trial LR)
    abort_on_max: bool = True  # early-stop a trial when a loss exceeds the historical maximum
    max_scope: str = "all"  # all | search: which losses make the historical maximum
    rise_windows: int = 2  # boundary rule: this many consecutive rising windows -> downscale
    min_scale: float = 1e-3
    max_scale: float = 1e3

    def __post_init__(self) -> None:
        problems = []
        if self.window < 3:
            problems.append("window must be >= 3 (an OLS slope with a standard error needs 3 points)")
        if not (self.alpha >= 1.0 and self.beta >= 1.0):
            problems.append("alpha and beta must be >= 1")
        if not 0.0 < self.decay <= 1.0:
            problems.append("decay must be in (0, 1]")
        if not 0.0 <= self.search_start <= self.search_end <= 1.0:
            problems.append("need 0 <= search_start <= search_end <= 1")
        if self.error_sigmas < 0:
            problems.append("error_sigmas must be >= 0")
        if self.error_mode not in ("pooled", "reference", "combined"):
            problems.append(f"error_mode must be pooled, reference or combined, got {self.error_mode!r}")
        if self.trigger not in ("slowdown", "always"):
            problems.append(f"trigger must be slowdown or always, got {self.trigger!r}")
        if self.neither_action not in ("revert", "stay"):
            problems.append(f"neither_action must be revert or stay, got {self.neither_action!r}")
        if self.max_scope not in ("all", "search"):
            problems.append(f"max_scope must be all or search, got {self.max_scope!r}")
        if self.rise_windows < 1:
            problems.append("rise_windows must be >= 1")
        if not 0.0 < self.min_scale <= 1.0 <= self.max_scale:
            problems.append("need 0 < min_scale <= 1 <= max_scale")
        if problems:
            raise ConfigError("invalid AdaLRS settings: " + "; ".join(problems))


@dataclass(frozen=True)
class Decision:
    """One AdaLRS decision. `snapshot`: save model+optimizer now; `rollback`: restore the last snapshot now."""

    kind: str  # trial | accept | reject | abort | downscale | keep
    step: int
    scale_before: float
    scale_after: float
    velocity: float | None  # descent velocity of the window just measured (None for an abort)
    reference_velocity: float | None  # velocity of the pre-trial window (None outside a trial)
    stderr: float | None  # e: the estimation error used for the 2e margin
    snapshot: bool = False
    rollback: bool = False
    factor: float = 1.0  # alpha' (trial) or beta' (downscales) applied; 1.0 otherwise
    adjustments: int = 0  # t after this decision
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ols_slope(steps: list[float] | tuple[float, ...], losses: list[float] | tuple[float, ...]) -> tuple[float, float]:
    """Ordinary-least-squares slope of `losses` against `steps` and its standard error.

    slope = Sxy / Sxx, se = sqrt(RSS / (n - 2) / Sxx), computed in float64 with exact summation.
    """
    n = len(steps)
    if n != len(losses):
        raise ValueError("steps and losses must have the same length")
    if n < 3:
        raise ValueError("an OLS slope with a standard error needs at least 3 points")
    xs = [float(x) for x in steps]
    ys = [float(y) for y in losses]
    mx = math.fsum(xs) / n
    my = math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    if sxx <= 0.0:
        raise ValueError("all steps are equal; the slope is undefined")
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    rss = math.fsum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    stderr = math.sqrt(max(rss, 0.0) / (n - 2) / sxx)
    return slope, stderr


class AdaLRS:
    """The AdaLRS controller. Call `observe(step, loss)` after every optimizer step."""

    def __init__(self, config: AdaLRSConfig | None = None, total_steps: int = 1) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
        self.config = config if config is not None else AdaLRSConfig()
        self.total_steps = int(total_steps)
        self.start_step = round(self.config.search_start * self.total_steps)
        self.end_step = round(self.config.search_end * self.total_steps)
        self._scale = 1.0
        self._mode = "normal"
        self._buf_steps: list[int] = []
        self._buf_losses: list[float] = []
        self._last_velocity: float | None = None
        self._last_stderr: float | None = None
        self._rising = 0
        self._ref_velocity: float | None = None
        self._ref_stderr: float | None = None
        self._pre_trial_scale: float | None = None
        self._trial_factor: float | None = None
        self._trial_step: int | None = None
        self._trial_max: float | None = None
        self._adjustments = 0
        self._hist_max: float | None = None
        self.history: list[dict[str, Any]] = []

    # ----------------------------------------------------------------------------------------- properties
    @property
    def scale(self) -> float:
        return self._scale

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def in_trial(self) -> bool:
        return self._mode == "trial"

    @property
    def adjustments(self) -> int:
        return self._adjustments

    def lr_multiplier(self) -> float:
        """The factor to multiply onto base_lr * base_schedule(step); 1.0 when disabled."""
        return self._scale if self.config.enabled else 1.0

    def scaled_lr(self, base_lr: float, schedule_factor: float) -> float:
        return base_lr * schedule_factor * self.lr_multiplier()

    def alpha_prime(self) -> float:
        return max(self.config.decay ** self._adjustments * self.config.alpha, 1.0)

    def beta_prime(self) -> float:
        """The downscale multiplier (<= 1): 1 / max(lambda^t * beta, 1)."""
        return 1.0 / max(self.config.decay ** self._adjustments * self.config.beta, 1.0)

    def in_search_range(self, step: int) -> bool:
        return self.start_step <= step < self.end_step

    # ----------------------------------------------------------------------------------------- main entry
    def observe(self, step: int, loss: float) -> Decision | None:
        """Feed the loss of optimizer step `step`; returns a Decision when one is taken, else None."""
        if not self.config.enabled:
            return None
        step = int(step)
        loss = float(loss)
        finite = math.isfinite(loss)
        if self._mode == "trial":
            return self._observe_trial(step, loss, finite)
        if not finite:
            logger.warning("AdaLRS: non-finite loss %r at step %d skipped", loss, step)
            return None
        in_range = self.in_search_range(step)
        if self.config.max_scope == "all" or in_range:
            self._hist_max = loss if self._hist_max is None else max(self._hist_max, loss)
        if not in_range:
            self._clear_window()
            return None
        self._buf_steps.append(step)
        self._buf_losses.append(loss)
        if len(self._buf_steps) < self.config.window:
            return None
        return self._normal_boundary(step)

    # ----------------------------------------------------------------------------------------- internals
    def _clear_window(self) -> None:
        self._buf_steps = []
        self._buf_losses = []

    def _fit_window(self) -> tuple[float, float]:
        slope, stderr = ols_slope(self._buf_steps, self._buf_losses)
        self._clear_window()
        return -slope, stderr

    def _normal_boundary(self, step: int) -> Decision | None:
        cfg = self.config
        velocity, stderr = self._fit_window()
        previous = self._last_velocity
        rising = velocity < -cfg.error_sigmas * stderr
        self._rising = self._rising + 1 if rising else 0
        self._last_velocity, self._last_stderr = velocity, stderr

        if self._rising >= cfg.rise_windows:
            factor = self.beta_prime()
            new_scale = max(self._scale * factor, cfg.min_scale)
            self._rising = 0
            if factor >= 1.0 or new_scale >= self._scale:
                return None
            before = self._scale
            self._scale = new_scale
            self._adjustments += 1
            return self._emit(Decision(
                "downscale", step, before, new_scale, velocity, None, stderr, factor=factor,
                adjustments=self._adjustments, reason=f"loss rose over {cfg.rise_windows} consecutive windows",
            ))

        if rising:
            return None
        if cfg.trigger == "slowdown" and (previous is None or velocity >= previous):
            return None
        if step + cfg.window >= self.end_step:  # the trial window would not fit in the search range
            return None
        factor = self.alpha_prime()
        new_scale = min(self._scale * factor, cfg.max_scale)
        if factor <= 1.0 or new_scale <= self._scale:
            return None
        before = self._scale
        self._mode = "trial"
        self._ref_velocity, self._ref_stderr = velocity, stderr
        self._pre_trial_scale = before
        self._trial_factor = factor
        self._trial_step = step
        self._trial_max = None
        self._scale = new_scale
        reason = "first window" if previous is None else f"descent slowed ({velocity:.6g} < {previous:.6g})"
        if cfg.trigger == "always":
            reason = "trigger=always"
        return self._emit(Decision(
            "trial", step, before, new_scale, velocity, velocity, stderr, snapshot=True, factor=factor,
            adjustments=self._adjustments, reason=reason,
        ))

    def _observe_trial(self, step: int, loss: float, finite: bool) -> Decision | None:
        cfg = self.config
        if cfg.abort_on_max and (not finite or (self._hist_max is not None and loss > self._hist_max)):
            reason = (f"non-finite loss {loss!r}" if not finite
                      else f"loss {loss:.6g} exceeds the historical maximum {self._hist_max:.6g}")
            return self._fail_trial("abort", step, None, None, reason)
        if not finite:
            logger.warning("AdaLRS: non-finite loss %r at step %d skipped", loss, step)
            return None
        self._buf_steps.append(step)
        self._buf_losses.append(loss)
        self._trial_max = loss if self._trial_max is None else max(self._trial_max, loss)
        if len(self._buf_steps) < cfg.window:
            return None

        velocity, stderr = self._fit_window()
        v_ref, se_ref = self._ref_velocity, self._ref_stderr
        assert v_ref is not None and se_ref is not None
        if cfg.error_mode == "pooled":
            err = math.sqrt((se_ref ** 2 + stderr ** 2) / 2.0)
        elif cfg.error_mode == "reference":
            err = se_ref
        else:
            err = math.sqrt(se_ref ** 2 + stderr ** 2)
        margin = cfg.error_sigmas * err
        if velocity > v_ref + margin:
            return self._end_trial("accept", step, self._scale, velocity, err,
                                   f"faster descent: {velocity:.6g} > {v_ref:.6g} + {margin:.3g}")
        if velocity < v_ref - margin:
            return self._fail_trial("reject", step, velocity, err,
                                    f"slower descent: {velocity:.6g} < {v_ref:.6g} - {margin:.3g}")
        after = self._pre_trial_scale if cfg.neither_action == "revert" else self._scale
        assert after is not None
        return self._end_trial("keep", step, after, velocity, err,
                               f"no significant difference: |{velocity:.6g} - {v_ref:.6g}| <= {margin:.3g}")

    def _end_trial(self, kind: str, step: int, scale_after: float, velocity: float, err: float,
                   reason: str) -> Decision:
        """accept / keep: the trial's parameters stay; its losses join the historical record."""
        before = self._scale
        if self._trial_max is not None:
            self._hist_max = self._trial_max if self._hist_max is None else max(self._hist_max, self._trial_max)
        v_ref = self._ref_velocity
        self._scale = scale_after
        self._last_velocity, self._last_stderr = velocity, err
        self._finish_trial()
        return self._emit(Decision(
            kind, step, before, scale_after, velocity, v_ref, err, factor=1.0,
            adjustments=self._adjustments, reason=reason,
        ))

    def _fail_trial(self, kind: str, step: int, velocity: float | None, err: float | None,
                    reason: str) -> Decision:
        """reject / abort: roll back to the snapshot and downscale relative to the pre-trial scale."""
        assert self._pre_trial_scale is not None
        factor = self.beta_prime()
        before = self._scale
        after = max(self._pre_trial_scale * factor, self.config.min_scale)
        v_ref = self._ref_velocity
        # The restored state is the one at the end of the reference window.
        self._last_velocity, self._last_stderr = v_ref, self._ref_stderr
        self._scale = after
        self._clear_window()
        self._finish_trial()
        return self._emit(Decision(
            kind, step, before, after, velocity, v_ref, err, rollback=True, factor=factor,
            adjustments=self._adjustments, reason=reason,
        ))

    def _finish_trial(self) -> None:
        self._mode = "normal"
        self._rising = 0
        self._adjustments += 1
        self._ref_velocity = self._ref_stderr = None
        self._pre_trial_scale = self._trial_factor = None
        self._trial_step = None
        self._trial_max = None

    def _emit(self, decision: Decision) -> Decision:
        # adjustments was already incremented for resolving decisions; record the post-decision count.
        decision = Decision(**{**decision.as_dict(), "adjustments": self._adjustments})
        self.history.append(decision.as_dict())
        logger.info(
            "AdaLRS %s at step %d: scale %.6g -> %.6g (v=%s, v_ref=%s, e=%s; %s)",
            decision.kind, decision.step, decision.scale_before, decision.scale_after,
            _fmt(decision.velocity), _fmt(decision.reference_velocity), _fmt(decision.stderr), decision.reason,
        )
        return decision

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; plain JSON types only."""
        return {
            "version": _STATE_VERSION,
            "total_steps": self.total_steps,
            "config": asdict(self.config),
            "scale": self._scale,
            "mode": self._mode,
            "window_steps": list(self._buf_steps),
            "window_losses": list(self._buf_losses),
            "last_velocity": self._last_velocity,
            "last_stderr": self._last_stderr,
            "rising_windows": self._rising,
            "reference_velocity": self._ref_velocity,
            "reference_stderr": self._ref_stderr,
            "pre_trial_scale": self._pre_trial_scale,
            "trial_factor": self._trial_factor,
            "trial_step": self._trial_step,
            "trial_max": self._trial_max,
            "adjustments": self._adjustments,
            "historical_max": self._hist_max,
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported AdaLRS state version {state.get('version')!r}")
        if state.get("total_steps") != self.total_steps or state.get("config") != asdict(self.config):
            logger.warning("AdaLRS: resuming with different settings or total_steps than the checkpoint had")
        if state["mode"] not in ("normal", "trial"):
            raise ValueError(f"invalid AdaLRS mode {state['mode']!r}")
        self._scale = float(state["scale"])
        self._mode = state["mode"]
        self._buf_steps = [int(s) for s in state["window_steps"]]
        self._buf_losses = [float(x) for x in state["window_losses"]]
        self._last_velocity = _opt_float(state["last_velocity"])
        self._last_stderr = _opt_float(state["last_stderr"])
        self._rising = int(state["rising_windows"])
        self._ref_velocity = _opt_float(state["reference_velocity"])
        self._ref_stderr = _opt_float(state["reference_stderr"])
        self._pre_trial_scale = _opt_float(state["pre_trial_scale"])
        self._trial_factor = _opt_float(state["trial_factor"])
        self._trial_step = None if state["trial_step"] is None else int(state["trial_step"])
        self._trial_max = _opt_float(state["trial_max"])
        self._adjustments = int(state["adjustments"])
        self._hist_max = _opt_float(state["historical_max"])
        self.history = copy.deepcopy(list(state["history"]))


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


# --------------------------------------------------------------------------------------------- snapshots
@dataclass
class Snapshot:
    """Deep CPU copies of a model's and an optimizer's state dicts, plus caller-defined extras."""

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu_clone(value: Any) -> Any:
    """Recursively copy a state structure: tensors become fresh CPU tensors of the same dtype."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return type(value)((k, _cpu_clone(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_cpu_clone(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_cpu_clone(v) for v in value)
    return copy.deepcopy(value)


def take_snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                  extra: dict[str, Any] | None = None) -> Snapshot:
    """Copy the model's state dict (parameters and buffers) and the optimizer's (state + param groups) to CPU."""
    return Snapshot(
        model_state=_cpu_clone(model.state_dict()),
        optimizer_state=None if optimizer is None else _cpu_clone(optimizer.state_dict()),
        extra=_cpu_clone(dict(extra or {})),
    )


def restore_snapshot(snapshot: Snapshot, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     zero_grad: bool = True) -> dict[str, Any]:
    """Make the model and optimizer bit-identical to the snapshot moment; returns a copy of its extras.

    Parameters are copied in place (devices and dtypes stay). The optimizer gets a fresh copy of the saved state
    (exp_avg, exp_avg_sq, step, ...), so the snapshot itself is never mutated by later steps and can be restored
    again. Param-group hyperparameters, including `lr`, come back as they were at the snapshot: set the LR for
    the next step from the controller afterwards. Stale gradients are dropped unless `zero_grad=False`.
    """
    model.load_state_dict(snapshot.model_state, strict=True)
    if optimizer is not None:
        if snapshot.optimizer_state is None:
            raise ValueError("the snapshot has no optimizer state")
        optimizer.load_state_dict(_cpu_clone(snapshot.optimizer_state))
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
    elif zero_grad:
        model.zero_grad(set_to_none=True)
    return _cpu_clone(snapshot.extra)
