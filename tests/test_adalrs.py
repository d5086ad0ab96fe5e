"""AdaLRS (sailvl2.training.adalrs): OLS slope, the search on a problem with a known best LR, exact rollback,
exact resume, and the search range / decay."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from sailvl2.errors import ConfigError
from sailvl2.training.adalrs import (
    AdaLRS,
    AdaLRSConfig,
    Decision,
    ols_slope,
    restore_snapshot,
    take_snapshot,
)


# ----------------------------------------------------------------------------------------------- 1. OLS
def test_ols_slope_and_stderr_by_hand():
    # x = 0..3, y = 1, 3, 2, 5: mean x 1.5, mean y 2.75, Sxx = 5, Sxy = 5.5 -> slope 1.1, intercept 1.1;
    # residuals -0.1, 0.8, -1.3, 0.6 -> RSS 2.7 -> se = sqrt(2.7 / 2 / 5) = sqrt(0.27).
    slope, se = ols_slope([0, 1, 2, 3], [1.0, 3.0, 2.0, 5.0])
    assert slope == pytest.approx(1.1, abs=1e-12)
    assert se == pytest.approx(math.sqrt(0.27), abs=1e-12)
    # Shifting the steps changes neither; an exact line has zero error.
    assert ols_slope([100, 101, 102, 103], [1.0, 3.0, 2.0, 5.0]) == pytest.approx((1.1, math.sqrt(0.27)))
    slope, se = ols_slope([10, 12, 14, 16, 18], [9.0, 8.0, 7.0, 6.0, 5.0])
    assert slope == pytest.approx(-0.5) and se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        ols_slope([0, 1], [1.0, 2.0])
    with pytest.raises(ValueError):
        ols_slope([3, 3, 3], [1.0, 2.0, 3.0])


def test_window_velocity_sign_and_config_validation():
    # A falling loss has a positive descent velocity; a trigger="always" trial reports it.
    ctl = AdaLRS(AdaLRSConfig(window=4, search_start=0.0, search_end=1.0, trigger="always"), total_steps=100)
    decisions = [ctl.observe(s, 10.0 - 0.5 * s) for s in range(4)]
    assert decisions[:3] == [None, None, None]
    assert decisions[3].kind == "trial" and decisions[3].velocity == pytest.approx(0.5)
    assert decisions[3].snapshot and not decisions[3].rollback
    for bad in (dict(window=2), dict(alpha=0.5), dict(decay=0.0), dict(search_start=0.5, search_end=0.2),
                dict(error_mode="x"), dict(trigger="x"), dict(neither_action="x"), dict(min_scale=2.0)):
        with pytest.raises(ConfigError):
            AdaLRSConfig(**bad)


# ------------------------------------------------------------------------- 2. a problem with a known best LR
#
# A loss-descent model whose descent velocity is a fixed concave function of the LR, so "the best LR" is one
# well-defined target for the whole run. (On a convergent problem, e.g. a noisy quadratic, the LR that descends
# fastest over the next window shrinks as the loss nears its noise floor - that is LR annealing, not the LR
# search AdaLRS does; and plain SGD 10x above 1/L diverges before any search can start.)
#
#   loss(p, q) = -A * p + (CURV / 2) * |q|^2
#
# p is "progress": its gradient is the constant -A, so SGD moves it by lr * A per step (velocity A^2 * lr).
# q collects "damage": each step's stochastic gradient carries a zero-mean kick +-KICK on a fresh coordinate of
# q, which adds (CURV / 2) * (lr * KICK)^2 = C * lr^2 to the loss and stays (CURV is tiny, so it barely heals).
# The expected velocity is A^2 * lr - C * lr^2, best at A^2 / (2 C) = 0.1; the test finds it by a grid search.
# The trainer logs the population loss plus N(0, OBS^2) measurement noise (OBS = the best per-step descent).
A, CURV, C = 1.0, 1e-6, 5.0
KICK = math.sqrt(2.0 * C / CURV)
OBS = 0.05
TOTAL = 1000
SEARCH = AdaLRSConfig(window=20, alpha=3.0, beta=2.0, decay=0.9, search_start=0.1, search_end=0.9)


class LossDescentModel(nn.Module):
    def __init__(self, n_steps: int) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.q = nn.Parameter(torch.zeros(n_steps, dtype=torch.float64))

    def population_loss(self) -> torch.Tensor:
        return -A * self.p + 0.5 * CURV * (self.q**2).sum()

    def batch_loss(self, step: int, sign: float) -> torch.Tensor:
        kick = torch.zeros_like(self.q)
        kick[step] = sign * KICK
        return self.population_loss() + (kick * self.q).sum()


def _sgd_steps(model: LossDescentModel, optimizer, first_step: int, n: int, signs) -> list[float]:
    """n plain SGD steps; returns the population loss before each step (noise-free)."""
    losses = []
    for step in range(first_step, first_step + n):
        with torch.no_grad():
            losses.append(model.population_loss().item())
        optimizer.zero_grad()
        model.batch_loss(step, signs[step]).backward()
        optimizer.step()
    return losses


def _signs(seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return [1.0 if b else -1.0 for b in (torch.rand(TOTAL, generator=g) < 0.5).tolist()]


def _best_lr_by_grid(start_state: dict, first_step: int, window: int) -> tuple[float, list[tuple[float, float]]]:
    """The grid LR whose window (from `start_state`) has the steepest noise-free OLS descent."""
    signs = _signs(123)
    curve = []
    for j in range(0, 57):  # 1e-3 * 2^(j/4): 1e-3 .. 16
        lr = 1e-3 * 2.0 ** (j / 4)
        model = LossDescentModel(TOTAL)
        model.load_state_dict(start_state)
        losses = _sgd_steps(model, torch.optim.SGD(model.parameters(), lr=lr), first_step, window, signs)
        curve.append((lr, -ols_slope(list(range(window)), losses)[0]))
    return max(curve, key=lambda item: item[1])[0], curve


def _train_with_adalrs(base_lr: float, seed: int) -> tuple[float, AdaLRS]:
    """A trainer loop: lr = base_lr * schedule (constant here) * AdaLRS scale, with snapshot / rollback."""
    model = LossDescentModel(TOTAL)
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr)
    adalrs = AdaLRS(SEARCH, TOTAL)
    signs = _signs(seed)
    noise = torch.randn(TOTAL, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * OBS
    snapshot = None
    for step in range(TOTAL):
        for group in optimizer.param_groups:
            group["lr"] = base_lr * 1.0 * adalrs.lr_multiplier()
        with torch.no_grad():
            logged = model.population_loss().item() + noise[step].item()
        optimizer.zero_grad()
        model.batch_loss(step, signs[step]).backward()
        optimizer.step()
        decision = adalrs.observe(step, logged)
        if decision is not None and decision.rollback:
            restore_snapshot(snapshot, model, optimizer)
        if decision is not None and decision.snapshot:
            snapshot = take_snapshot(model, optimizer)
    return base_lr * adalrs.scale, adalrs


def test_search_finds_the_best_lr_from_10x_too_low_and_10x_too_high():
    fresh = LossDescentModel(TOTAL).state_dict()
    best, curve = _best_lr_by_grid(fresh, 0, SEARCH.window)
    velocities = [v for _, v in curve]
    peak = velocities.index(max(velocities))
    # Unimodal: rises to the peak, falls after it (loss after a window is convex in the LR).
    assert all(a < b for a, b in zip(velocities[:peak], velocities[1 : peak + 1]))
    assert all(a > b for a, b in zip(velocities[peak:], velocities[peak + 1 :]))
    assert 0 < peak < len(curve) - 1
    # Stationary: the same best LR from a state damaged by 100 steps at a far too large LR.
    damaged = LossDescentModel(TOTAL)
    _sgd_steps(damaged, torch.optim.SGD(damaged.parameters(), lr=10 * best), 0, 100, _signs(7))
    assert _best_lr_by_grid(damaged.state_dict(), 100, SEARCH.window)[0] == best

    final_low, run_low = _train_with_adalrs(best / 10, seed=0)
    final_high, run_high = _train_with_adalrs(best * 10, seed=0)
    print(f"best lr {best:.4g}; from {best / 10:.4g} -> {final_low:.4g}; from {best * 10:.4g} -> {final_high:.4g}")
    assert best / 2 <= final_low <= best * 2, (best, final_low, run_low.history)
    assert best / 2 <= final_high <= best * 2, (best, final_high, run_high.history)
    kinds_low = {h["kind"] for h in run_low.history}
    kinds_high = {h["kind"] for h in run_high.history}
    assert "accept" in kinds_low  # climbed by accepted trials
    assert kinds_high & {"downscale", "reject", "abort"}  # came down by the boundary rule / failed trials
    # Every rollback was preceded by the trial that asked for the snapshot.
    for run in (run_low, run_high):
        for prev, cur in zip(run.history, run.history[1:]):
            if cur["rollback"]:
                assert prev["kind"] == "trial" and prev["snapshot"]


# ----------------------------------------------------------------------------------- 3. exact rollback
def _adamw_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    data = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    target = torch.randn(32, 1, generator=torch.Generator().manual_seed(2))
    return model, optimizer, data, target


def _adamw_step(model, optimizer, data, target, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss = ((model(data) - target) ** 2).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def _frozen(model, optimizer):
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = {i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(optimizer.state.values())}
    return params, state


def _assert_identical(model, optimizer, frozen):
    params, state = frozen
    for key, value in model.state_dict().items():
        assert torch.equal(value, params[key]), key
    now = list(optimizer.state.values())
    assert len(now) == len(state)
    for i, s in enumerate(now):
        assert set(s) == {"step", "exp_avg", "exp_avg_sq"}
        for key in s:
            assert torch.equal(s[key], state[i][key]), (i, key)


@pytest.mark.parametrize("failure", ["reject", "abort"])
def test_failed_trial_restores_exact_pre_trial_state(failure):
    cfg = AdaLRSConfig(window=5, alpha=3.0, beta=2.0, decay=0.9, search_start=0.0, search_end=1.0,
                       trigger="always")
    adalrs = AdaLRS(cfg, total_steps=200)
    model, optimizer, data, target = _adamw_setup()
    base_lr = 1e-2
    for step in range(5):  # some AdamW history before the trial
        _adamw_step(model, optimizer, data, target, base_lr)

    # The controller sees a steadily falling loss, then (in the trial) a rising one or a spike above the maximum.
    trial = None
    for step in range(5):
        _adamw_step(model, optimizer, data, target, base_lr * adalrs.lr_multiplier())
        trial = adalrs.observe(step, 10.0 - 0.1 * step)
    assert trial.kind == "trial" and trial.snapshot and trial.scale_after == pytest.approx(3.0)
    snapshot = take_snapshot(model, optimizer, extra={"data_cursor": 5})
    frozen = _frozen(model, optimizer)
    expected_beta = 1.0 / max(cfg.decay ** adalrs.adjustments * cfg.beta, 1.0)

    decision = None
    for step in range(5, 10):
        _adamw_step(model, optimizer, data, target, base_lr * adalrs.lr_multiplier())
        loss = 9.5 + 0.02 * (step - 5) if failure == "reject" else (9.55 if step < 7 else 50.0)
        decision = adalrs.observe(step, loss)
        if decision is not None:
            break
    assert decision.kind == failure and decision.rollback and not decision.snapshot
    assert decision.step == (9 if failure == "reject" else 7)
    with pytest.raises(AssertionError):
        _assert_identical(model, optimizer, frozen)  # the trial really moved things
    extra = restore_snapshot(snapshot, model, optimizer)
    _assert_identical(model, optimizer, frozen)
    assert extra == {"data_cursor": 5}
    assert adalrs.scale == pytest.approx(1.0 * expected_beta) and expected_beta == pytest.approx(0.5)
    assert decision.scale_before == pytest.approx(3.0) and decision.scale_after == adalrs.scale

    # Training on after the rollback is bit-identical to training on from the snapshot moment, and the snapshot
    # was not mutated by those steps (it can be restored again).
    after_restore = [_adamw_step(model, optimizer, data, target, 5e-3) for _ in range(3)]
    restore_snapshot(snapshot, model, optimizer)
    _assert_identical(model, optimizer, frozen)
    again = [_adamw_step(model, optimizer, data, target, 5e-3) for _ in range(3)]
    assert after_restore == again


# ------------------------------------------------------------------------------------- 4. exact resume
def _simulate(cfg: AdaLRS | AdaLRSConfig, total: int, stop: int | None = None, resume: dict | None = None):
    """A scalar closed loop: the loss falls by v(lr) = lr - 5 lr^2 per step plus noise; rollback restores it."""
    noise = torch.randn(total, generator=torch.Generator().manual_seed(11), dtype=torch.float64).mul(0.02).tolist()
    if resume is None:
        adalrs, loss, saved, start = AdaLRS(cfg, total), 100.0, None, 0
    else:
        adalrs = AdaLRS(cfg, total)
        adalrs.load_state_dict(resume["adalrs"])
        loss, saved, start = resume["loss"], resume["saved"], resume["step"]
    base_lr = 0.02
    for step in range(start, total):
        if stop is not None and step == stop:
            state = json.loads(json.dumps({"adalrs": adalrs.state_dict(), "loss": loss, "saved": saved,
                                           "step": step}))
            return adalrs, state
        lr = base_lr * adalrs.lr_multiplier()
        observed = loss + noise[step]
        loss -= lr - 5.0 * lr * lr
        decision = adalrs.observe(step, observed)
        if decision is not None and decision.rollback:
            loss = saved
        if decision is not None and decision.snapshot:
            saved = loss
    return adalrs, None


def test_state_dict_json_round_trip_resumes_exactly():
    cfg = AdaLRSConfig(window=10, decay=0.9, search_start=0.1, search_end=0.9)
    total = 600
    reference, _ = _simulate(cfg, total)
    kinds = [h["kind"] for h in reference.history]
    assert "trial" in kinds and len(kinds) >= 8
    # Cut mid-window in normal mode, and mid-trial (a few steps after a trial started).
    trial_steps = [h["step"] for h in reference.history if h["kind"] == "trial"]
    cuts = [67, 123, trial_steps[0] + 3, trial_steps[len(trial_steps) // 2] + 7]
    for cut in cuts:
        first, state = _simulate(cfg, total, stop=cut)
        if cut in cuts[2:]:
            assert state["adalrs"]["mode"] == "trial" and state["adalrs"]["window_losses"]
        resumed, _ = _simulate(cfg, total, resume=state)
        assert resumed.history == reference.history, cut
        assert resumed.scale == reference.scale
        assert resumed.state_dict() == reference.state_dict()


# ------------------------------------------------------------------------------- 5. range and decay
def test_no_decisions_outside_the_search_range_and_factors_decay_to_one():
    total = 3000
    cfg = AdaLRSConfig(window=10, alpha=3.0, beta=2.0, decay=0.8, search_start=0.2, search_end=0.7,
                       trigger="always")
    adalrs = AdaLRS(cfg, total)
    assert (adalrs.start_step, adalrs.end_step) == (600, 2100)
    noise = torch.randn(total, generator=torch.Generator().manual_seed(5), dtype=torch.float64).mul(0.02).tolist()
    loss, saved, multipliers = 100.0, None, []
    for step in range(total):
        multipliers.append(adalrs.lr_multiplier())
        lr = 0.02 * adalrs.lr_multiplier()
        observed = loss + noise[step]
        loss -= lr - 5.0 * lr * lr
        decision = adalrs.observe(step, observed)
        if decision is not None and decision.rollback:
            loss = saved
        if decision is not None and decision.snapshot:
            saved = loss
    steps = [h["step"] for h in adalrs.history]
    assert steps and all(600 <= s < 2100 for s in steps)
    assert set(multipliers[:601]) == {1.0}
    assert len(set(multipliers[2100:])) == 1
    # alpha' = max(3 * 0.8^t, 1) reaches 1 at t = 5, beta' at t = 4; then no decision is taken at all.
    assert adalrs.alpha_prime() == 1.0 and adalrs.beta_prime() == 1.0
    assert adalrs.adjustments == 5
    trial_factors = [h["factor"] for h in adalrs.history if h["kind"] == "trial"]
    assert trial_factors == pytest.approx([3.0 * 0.8**t for t in range(5)])
    assert adalrs.history[-1]["step"] < 2100 - 10 * 20  # the search ended long before the range did


def test_disabled_and_every_decision_is_logged(caplog):
    off = AdaLRS(AdaLRSConfig(enabled=False, window=3, search_start=0.0, trigger="always"), total_steps=10)
    assert all(off.observe(s, 1.0 - s) is None for s in range(10)) and off.lr_multiplier() == 1.0
    on = AdaLRS(AdaLRSConfig(window=3, search_start=0.0, search_end=1.0, trigger="always"), total_steps=100)
    with caplog.at_level("INFO", logger="sailvl2.training.adalrs"):
        decision = [on.observe(s, 5.0 - s) for s in range(3)][-1]
    assert isinstance(decision, Decision) and decision.kind == "trial"
    assert on.history == [decision.as_dict()]
    assert any("AdaLRS trial at step 2" in r.getMessage() for r in caplog.records)
    json.dumps(on.state_dict())
