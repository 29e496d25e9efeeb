"""The training engine without a run directory: the lr schedule, one epoch, predict_logits, the budget.

Tiny models on a list of in-memory batches, so every test takes well under a second on CPU.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nextclass.engine.budget import Budget
from nextclass.engine.checkpoint import load_checkpoint, save_checkpoint
from nextclass.engine.loop import Device, StepParts, predict_logits, train_one_epoch
from nextclass.engine.optim import Schedule

# ---------------------------------------------------------------------------------------------- schedule


def curve(s: Schedule, n: int | None = None) -> list[float]:
    return [s.multiplier(i) for i in range(s.total if n is None else n)]


def test_warmup_is_linear_and_reaches_the_full_rate():
    s = Schedule("cosine", total_steps=100, warmup_steps=10, min_ratio=0.01)
    warm = curve(s, 10)
    assert warm == pytest.approx([(i + 1) / 11 for i in range(10)])
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert s.multiplier(10) == pytest.approx(1.0)  # the first step after warm-up runs at the full rate
    assert s.multiplier(10) > warm[-1]
    # warm-up is part of "plateau" and "none" too (make_schedule passes it for those)
    for kind in ("plateau", "none"):
        s = Schedule(kind, total_steps=50, warmup_steps=4)
        assert curve(s, 6) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_cosine_decreases_after_warmup():
    s = Schedule("cosine", total_steps=40, warmup_steps=5, min_ratio=0.05)
    after = curve(s)[5:]
    assert after[0] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(after, after[1:]))
    assert min(after) >= 0.05
    mid = 5 + (39 - 5) // 2  # halfway from step 5 to the last step 39: half-way between 1 and the floor
    assert s.multiplier(mid) == pytest.approx(0.05 + 0.95 * (1 + math.cos(math.pi * (mid - 5) / 34)) / 2)
    assert s.multiplier(mid) == pytest.approx((1 + 0.05) / 2)


@pytest.mark.parametrize("total,warmup", [(10, 0), (10, 2), (30, 5)])
def test_cosine_ends_at_min_ratio_at_the_last_step(total, warmup):
    s = Schedule("cosine", total_steps=total, warmup_steps=warmup, min_ratio=0.01)
    assert s.multiplier(total - 1) == pytest.approx(0.01, abs=1e-9)  # the last step train_one_epoch applies


@pytest.mark.parametrize("total,warmup", [(10, 2), (100, 20)])
def test_linear_warms_up_from_a_fifth_then_falls_to_the_floor_at_the_last_step(total, warmup):
    s = Schedule("linear", total_steps=total, warmup_steps=warmup, min_ratio=0.0)
    c = curve(s, total)
    assert c[0] == pytest.approx(0.2) and c[warmup] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(c[:warmup + 1], c[1:warmup + 1]))  # rising during warm-up
    assert all(b < a for a, b in zip(c[warmup:], c[warmup + 1:]))  # then falling every step
    assert c[-1] == pytest.approx(0.0, abs=1e-12)
    assert s.multiplier((warmup + total - 1) / 2) == pytest.approx(0.5)  # a straight line


def test_last_step_of_a_run_is_total_minus_one():
    """The premise of the test above: over a whole run the loop applies steps 0 .. total-1, never ``total``."""
    model, batches = tiny_model(), blobs(5)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    s = Schedule("cosine", total_steps=10, warmup_steps=0, min_ratio=0.01)
    lrs: list[float] = []
    parts = StepParts(model, opt, recording_ce(opt, lrs), s)
    for epoch in range(2):
        train_one_epoch(parts, batches, step0=epoch * 5)
    assert lrs == pytest.approx([s.multiplier(i) for i in range(10)])
    assert opt.param_groups[0]["lr"] == pytest.approx(s.multiplier(9))


def test_onecycle_shape():
    s = Schedule("onecycle", total_steps=1000)
    c = curve(s)
    peak = int(0.3 * 1000)
    assert c[0] == pytest.approx(1 / 25)
    assert int(np.argmax(c)) == peak and c[peak] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(c[:peak], c[1:peak + 1]))  # rises to the peak
    assert all(b < a for a, b in zip(c[peak:], c[peak + 1:]))  # then only falls
    assert c[-1] < 2e-4 and s.multiplier(1000) == pytest.approx(1e-4)
    assert Schedule("onecycle", 1000, warmup_steps=50).multiplier(10) == c[10]  # its own warm-up; warmup_steps unused


def test_plateau_factor_after_patience_and_only_for_plateau():
    s = Schedule("plateau", total_steps=100, plateau_patience=2, plateau_factor=0.3)
    scales = []
    for acc in (0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.58, 0.61, 0.6):  # higher is better
        s.epoch_end(acc, higher_is_better=True)
        scales.append(s.state["plateau_scale"])
    # 0.6 is not better than 0.6; the 3rd bad epoch in a row (bad > patience) cuts the rate, then counting restarts
    assert scales == pytest.approx([1, 1, 1, 1, 0.3, 0.3, 0.3, 0.3, 0.3])
    assert s.multiplier(50) == pytest.approx(0.3)
    low = Schedule("plateau", total_steps=100, plateau_patience=1, plateau_factor=0.5)
    scales = []
    for loss in (1.0, 0.9, 0.95, 0.92, 0.8, 0.85, 0.86):  # lower is better
        low.epoch_end(loss, higher_is_better=False)
        scales.append(low.state["plateau_scale"])
    assert scales == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    assert low.multiplier(50) == pytest.approx(0.25)
    c = Schedule("cosine", total_steps=100, plateau_patience=0)
    before = curve(c)
    for _ in range(5):
        c.epoch_end(1.0, higher_is_better=False)
    assert curve(c) == before and c.state["plateau_scale"] == 1.0


def test_apply_scales_every_group_from_its_initial_rate():
    w1, w2 = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w1], "lr": 0.1}, {"params": [w2], "lr": 0.01}], lr=0.1)
    s = Schedule("cosine", total_steps=10, warmup_steps=2)
    for step in (0, 5, 9, 3):  # in any order: always relative to the initial rate, never compounding
        assert s.apply(opt, step) == pytest.approx(0.1 * s.multiplier(step))
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * s.multiplier(step), 0.01 * s.multiplier(step)])
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_schedule_state_round_trips_through_a_checkpoint(tmp_path):
    """The resume path: the state goes into the checkpoint's JSON and back into a fresh Schedule."""
    metrics = [0.9, 0.8, 0.85, 0.82, 0.81, 0.8, 0.79, 0.78, 0.77, 0.76]  # val loss, lower is better

    def make():
        return Schedule("plateau", total_steps=200, warmup_steps=5, plateau_patience=1, plateau_factor=0.5)

    straight = make()
    for m in metrics:
        straight.epoch_end(m, higher_is_better=False)
    first = make()
    for m in metrics[:4]:
        first.epoch_end(m, higher_is_better=False)
    assert first.state != make().state  # something to carry over
    model = nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "last.safetensors", model, None, {"epoch": 4, "schedule": dict(first.state)})
    resumed = make()
    resumed.state.update(load_checkpoint(path, nn.Linear(2, 2))["schedule"])
    assert resumed.state == first.state
    assert curve(resumed) == curve(first)
    for m in metrics[4:]:
        resumed.epoch_end(m, higher_is_better=False)
    assert resumed.state == straight.state and curve(resumed) == curve(straight)


# ---------------------------------------------------------------------------------------------- one epoch


def blobs(n_batches: int, batch_size: int = 8, seed: int = 0, classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 1x4x4 'images': class k lights up row k, plus noise. Learnable by a linear layer."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, classes, (batch_size,), generator=g)
        x = 0.5 * torch.randn(batch_size, 1, 4, 4, generator=g)
        x[torch.arange(batch_size), 0, y, :] += 1.5
        out.append((x, y))
    return out


def tiny_model(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


def recording_ce(opt: torch.optim.Optimizer, lrs: list[float]):
    """Cross-entropy that also notes the learning rate in force when each batch's loss is computed."""

    def criterion(out, y):
        lrs.append(opt.param_groups[0]["lr"])
        return F.cross_entropy(out, y)

    return criterion


def constant() -> Schedule:
    return Schedule("none", total_steps=1)


def test_loss_decreases_over_epochs_and_the_result_counts_images():
    model, batches = tiny_model(), blobs(6)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    parts = StepParts(model, opt, nn.CrossEntropyLoss(), constant(), Device())
    results = [train_one_epoch(parts, batches, step0=e * len(batches)) for e in range(5)]
    losses = [r.loss for r in results]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0]
    assert results[-1].acc > 0.9 and results[-1].acc > results[0].acc
    assert all(r.images == 48 and not r.stopped_early and r.seconds >= 0 for r in results)
    assert model.training  # left in train mode
    # the reported loss is the image-weighted mean over the epoch, measured before each step
    uneven = [(x[:k], y[:k]) for (x, y), k in zip(blobs(3, seed=1), (8, 3, 5))]
    frozen = tiny_model(1)
    opt0 = torch.optim.SGD(frozen.parameters(), lr=0.0)
    r = train_one_epoch(StepParts(frozen, opt0, nn.CrossEntropyLoss(), constant()), uneven, step0=0)
    with torch.no_grad():
        want = sum(float(F.cross_entropy(frozen(x), y)) * len(y) for x, y in uneven) / 16
        acc = sum(int((frozen(x).argmax(1) == y).sum()) for x, y in uneven) / 16
    assert r.images == 16 and r.loss == pytest.approx(want, rel=1e-5) and r.acc == pytest.approx(acc)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_schedule_is_applied_per_optimiser_step_from_step0(accumulate):
    model, batches = tiny_model(), blobs(6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = Schedule("cosine", total_steps=20, warmup_steps=4, min_ratio=0.01)
    lrs: list[float] = []
    parts = StepParts(model, opt, recording_ce(opt, lrs), s, accumulate=accumulate)
    train_one_epoch(parts, batches, step0=3)
    want = [0.1 * s.multiplier(3 + i // accumulate) for i in range(6)]
    assert lrs == pytest.approx(want)
    assert len(set(lrs)) == 6 // accumulate  # it really changes at each optimiser step
    assert opt.param_groups[0]["initial_lr"] == 0.1


@pytest.mark.parametrize("n_batches,accumulate,steps", [(6, 1, 6), (6, 2, 3), (7, 3, 3), (2, 4, 1)])
def test_accumulation_steps_the_optimiser_the_right_number_of_times(n_batches, accumulate, steps):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # AdamW counts its own steps per parameter
    parts = StepParts(model, opt, nn.CrossEntropyLoss(), constant(), accumulate=accumulate)
    res = train_one_epoch(parts, blobs(n_batches), step0=0)
    assert res.images == 8 * n_batches
    assert [int(opt.state[p]["step"]) for p in model.parameters()] == [steps, steps]
    assert all(p.grad is None for p in model.parameters())  # the trailing partial group is stepped too, then zeroed


def test_accumulating_two_half_batches_equals_one_full_batch():
    (x1, y1), (x2, y2) = blobs(2, batch_size=4, seed=3)
    a, b = tiny_model(5), tiny_model(5)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    train_one_epoch(StepParts(a, opt_a, nn.CrossEntropyLoss(), constant(), accumulate=2), [(x1, y1), (x2, y2)], step0=0)
    train_one_epoch(StepParts(b, opt_b, nn.CrossEntropyLoss(), constant()), [(torch.cat([x1, x2]), torch.cat([y1, y2]))],
                    step0=0)
    untouched = tiny_model(5)
    for pa, pb, p0 in zip(a.parameters(), b.parameters(), untouched.parameters()):
        assert not torch.allclose(pa, p0)  # it did move
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_clip_grad_bounds_the_update():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = blobs(1)[0]
    train_one_epoch(StepParts(model, opt, nn.CrossEntropyLoss(), constant(), clip_grad=1e-3), [(x * 100, y)], step0=0)
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert 0 < float(delta.norm()) <= 1e-3 * (1 + 1e-4)


def test_exhausted_budget_stops_the_epoch_early():
    model, batches = tiny_model(), blobs(5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    res = train_one_epoch(StepParts(model, opt, nn.CrossEntropyLoss(), constant(), budget=Budget(0)), batches, step0=0)
    assert res.stopped_early
    assert res.images == 8  # the budget is checked after every batch: the first one ran, nothing after it
    assert [int(opt.state[p]["step"]) for p in model.parameters()] == [1, 1]
    for budget in (None, Budget(None), Budget(60)):
        res = train_one_epoch(StepParts(model, opt, nn.CrossEntropyLoss(), constant(), budget=budget), batches, step0=1)
        assert not res.stopped_early and res.images == 40


def test_batch_transform_runs_on_the_training_path_and_device_puts_channels_last():
    seen: list[torch.Tensor] = []

    def blank(x):  # e.g. BatchAugment: runs after the copy, before the model
        seen.append(x)
        return torch.zeros_like(x)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.Flatten(), nn.Linear(16, 3))
    conv0, head0 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    dev = Device(channels_last=True)
    batches = blobs(3)
    train_one_epoch(StepParts(model, opt, nn.CrossEntropyLoss(), constant(), dev), batches, step0=0, batch_transform=blank)
    assert [len(x) for x in seen] == [8, 8, 8] and torch.equal(seen[0], batches[0][0])
    assert torch.equal(model[0].weight, conv0)  # a blank input gives the conv no gradient: the transform was used
    assert torch.equal(model[2].weight, head0)
    x = dev.put(batches[0][0], lambda t: t + 1)
    assert x.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, batches[0][0] + 1)


def test_predict_logits_in_order_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    batches = [(x[:k], y[:k]) for (x, y), k in zip(blobs(4, seed=2), (8, 1, 5, 8))]
    logits, labels = predict_logits(model, batches, Device())
    assert not model.training
    assert logits.dtype == np.float32 and logits.shape == (22, 3)
    with torch.no_grad():
        want = torch.cat([model(x) for x, _ in batches]).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, torch.cat([y for _, y in batches]).numpy())
    # order is the loader's: reversing the batches reverses the blocks
    rl, rlab = predict_logits(model, batches[::-1])
    np.testing.assert_allclose(rl[:8], logits[-8:], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rlab[:8], labels[-8:])
    empty_logits, empty_labels = predict_logits(model, [])
    assert empty_logits.shape == (0, 0) and empty_labels.shape == (0,)


# ---------------------------------------------------------------------------------------------- budget


def test_budget():
    assert Budget(None).exceeded() is False and Budget(None).remaining() is None
    b = Budget(2)
    assert not b.exceeded() and 119 < b.remaining() <= 120
    started = time.time() - 90
    half = Budget(1.0, start=started)  # started 90 s ago with one minute: over by ~30 s
    assert half.exceeded() and -31 < half.remaining() < -29
    assert half.deadline == pytest.approx(started + 60)
    zero = Budget(0)
    time.sleep(0.001)
    assert zero.exceeded() and zero.remaining() < 0
    assert Budget(5, synced=True).synced is False  # no process group: nothing to all-reduce
    assert Budget(5, synced=True).exceeded() is False
