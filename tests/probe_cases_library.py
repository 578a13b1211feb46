"""Probe cases: the library used wrongly (AutoWU, AutoLR, the schedules, the registry, the optimizers)."""
from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
import torch

from fault_probe import Outcome, case, expect_ok, expect_raise


def _opt(lr: float = 0.1):
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)


@case("library", "AutoWU with total_steps 0")
def autowu_zero_total_steps(p):
    from autowu import AutoWU
    return expect_raise(p, lambda: AutoWU(_opt(), steps_per_epoch=0, total_epochs=10), "steps_per_epoch")


# -- helpers -----------------------------------------------------------------------------------------------------------
def _stepped(sched):
    """The scheduler after one (empty) optimizer step, so that step() does not warn about the order."""
    sched.optimizer.step()
    return sched


def _autowu(*, spe: int = 4, epochs: int = 10, opt=None, **kw):
    from autowu import AutoWU
    return _stepped(AutoWU(opt if opt is not None else _opt(), spe, epochs, **kw))


def _two_groups(lr0=0.1, lr1=0.01):
    m = torch.nn.Linear(2, 1)
    return torch.optim.SGD([{"params": [m.weight], "lr": lr0}, {"params": [m.bias], "lr": lr1}], lr=lr0)


def _autolr(*, spe: int = 4, epochs: int = 10, **kw):
    from autowu.autolr import AutoLR
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    args = dict(model=model, loss_fn=lambda m, a, b: ((m(a) - b) ** 2).mean(), batches=lambda: iter([(x, y)]),
                superbatch=1)
    args.update(kw)
    s = AutoLR(opt, spe, epochs, **args)
    return s, model, opt, x, y


def _autolr_steps(s, model, opt, x, y, n: int):
    for _ in range(n):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        s.step()


def _range_test(**kw):
    from autowu.range_test import RangeTestCosine
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(4)]
    args = dict(model=model, loss_fn=lambda m, a, b: ((m(a) - b) ** 2).mean(), batches=lambda: iter(data))
    args.update(kw)
    return RangeTestCosine(opt, 4, 10, **args)


def _snapshot(s) -> tuple:
    """What a refused load_state_dict must leave as it was."""
    pending = getattr(s, "pending", None)
    pending = [float(x) for x in pending.items] if hasattr(pending, "reduced") else repr(pending)
    return (s.last_epoch, s.get_last_lr(), [float(g["lr"]) for g in s.optimizer.param_groups], pending,
            len(getattr(s, "history", [])))


def _refused_untouched(p, s, bad, names) -> Outcome:
    """``s.load_state_dict(bad)`` should raise naming ``names`` and leave ``s`` exactly as it was."""
    before = _snapshot(s)
    out = expect_raise(p, lambda: s.load_state_dict(bad), names)
    if out.outcome == "clear error" and _snapshot(s) != before:
        return Outcome("silent", f"refused ({out.detail[:80]}) but the scheduler was half-loaded: "
                                 f"{before} -> {_snapshot(s)}")
    return out


def _opt_args(**kw):
    """A resolved train.py namespace for framework.optim.create_optimizer (the paper's defaults for ``opt``)."""
    from framework.optim import resolve_optimizer_defaults
    a = argparse.Namespace(opt="adamp", lr=None, lr_base=None, batch_size=256, lr_base_size=256, lr_scale="sqrt",
                           weight_decay=None, opt_betas=None, opt_eps=None, adamp_delta=None, momentum=None,
                           wd_exclude_bias_norm=False, warmup_epochs=0)
    a.__dict__.update(kw)
    resolve_optimizer_defaults(a)
    return a


def _create_opt(model=None, **kw):
    from framework.optim import create_optimizer
    return create_optimizer(_opt_args(**kw), model if model is not None else torch.nn.Linear(2, 1))


# -- the schedules' arguments ------------------------------------------------------------------------------------------
@case("library", "steps_per_epoch given as a NumPy integer (len of an array, np.ceil(...).astype(int))")
def steps_per_epoch_numpy_int(p):
    from autowu import WarmupCosine

    def check():
        s = WarmupCosine(_opt(), np.int64(4), np.int64(10), warmup_epochs=1)
        assert s.total_steps == 40 and type(s.total_steps) is int, s.total_steps
    return expect_ok(p, check)


@case("library", "AutoWU seed given as a NumPy integer")
def autowu_seed_numpy_int(p):
    def check():
        s = _autowu(seed=np.int64(3))
        assert s.seed == 3 and type(s.seed) is int
        assert s.state_dict()["config"]["class"] == "AutoWU"
    return expect_ok(p, check)


@case("library", "WarmupCosine warmup_epochs given as a string ('1', as read from a text file)")
def warmup_epochs_string(p):
    from autowu import WarmupCosine
    return expect_raise(p, lambda: WarmupCosine(_opt(), 4, 10, warmup_epochs="1"), "warmup_epochs")


@case("library", "ConstantCosine warmup_epochs None")
def const_cosine_warmup_none(p):
    from autowu import ConstantCosine
    return expect_raise(p, lambda: ConstantCosine(_opt(), 4, 10, warmup_epochs=None), "warmup_epochs")


@case("library", "sqrt_scaled_lr with NumPy float32 / int64 arguments")
def sqrt_scaled_lr_numpy(p):
    from autowu import sqrt_scaled_lr

    def check():
        got = sqrt_scaled_lr(np.float32(1e-3), np.int64(1024))
        assert isinstance(got, float) and math.isclose(got, 2e-3, rel_tol=1e-6), got
    return expect_ok(p, check)


@case("library", "sqrt_scaled_lr with a fractional batch size (256.5)")
def sqrt_scaled_lr_fractional_batch(p):
    from autowu import sqrt_scaled_lr
    return expect_raise(p, lambda: sqrt_scaled_lr(1e-3, 256.5), "batch_size")


@case("library", "decay_lr with a negative cooldown_steps")
def decay_lr_negative_cooldown(p):
    from autowu import decay_lr
    return expect_raise(p, lambda: decay_lr(5, 0, 10, 1.0, -3), "cooldown_steps")


@case("library", "create_scheduler with the name in a list (['baseline'], as from a YAML list)")
def create_scheduler_list_name(p):
    from autowu import create_scheduler
    return expect_raise(p, lambda: create_scheduler(["baseline"], _opt(), steps_per_epoch=4, total_epochs=10),
                        ["schedule", "autowu-cos"])


@case("library", "create_scheduler('autowu_cos'): underscore for dash")
def create_scheduler_underscore_name(p):
    from autowu import create_scheduler
    return expect_raise(p, lambda: create_scheduler("autowu_cos", _opt(), steps_per_epoch=4, total_epochs=10),
                        ["autowu_cos", "autowu-cos"])


@case("library", "create_scheduler('baseline', warmup=...) with AutoWU's argument name")
def create_scheduler_foreign_kwarg(p):
    from autowu import create_scheduler
    return expect_raise(p, lambda: create_scheduler("baseline", _opt(), steps_per_epoch=4, total_epochs=10,
                                                    warmup="exp"), "warmup")


@case("library", "AutoWU min_lr / max_lr whose ratio overflows (1e-300, 1e300): an infinite LR")
def autowu_lr_ratio_overflow(p):
    return expect_raise(p, lambda: _autowu(min_lr=1e-300, max_lr=1e300), "max_lr")


@case("library", "AutoWU rollback='no' (a string)")
def autowu_rollback_string(p):
    return expect_raise(p, lambda: _autowu(rollback="no", model=torch.nn.Linear(2, 1)), "rollback")


@case("library", "AutoWU rollback=True with a model that is not a module")
def autowu_rollback_model_not_module(p):
    return expect_raise(p, lambda: _autowu(rollback=True, model="resnet50"), "model")


@case("library", "AutoWU max_overshoot=float('inf')")
def autowu_max_overshoot_inf(p):
    return expect_raise(p, lambda: _autowu(max_overshoot=float("inf")), "max_overshoot")


@case("library", "a param group whose lr_scale is a string")
def lr_scale_string(p):
    from autowu import WarmupCosine
    m = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": m.parameters(), "lr_scale": "0.5"}], lr=0.1)
    return expect_raise(p, lambda: WarmupCosine(opt, 4, 10), "lr_scale")


# -- the loss AutoWU is given ------------------------------------------------------------------------------------------
@case("library", "AutoWU.step(loss, metrics=another value): two losses")
def autowu_loss_and_metrics(p):
    s = _autowu()
    return expect_raise(p, lambda: s.step(1.0, metrics=2.0), "metrics")


@case("library", "AutoWU.step with a sparse tensor loss")
def autowu_sparse_loss(p):
    s = _autowu()
    return expect_raise(p, lambda: s.step(torch.tensor([1.5]).to_sparse()), ["loss", "sparse"])


@case("library", "AutoWU.step with a 0-d NumPy array loss (np.mean of a batch)")
def autowu_numpy_0d_loss(p):
    def check():
        s = _autowu()
        s.step(np.array(1.5))
        assert s.last_step == 1 and len(s.pending) == 1 and float(s.pending.items[0]) == 1.5
    return expect_ok(p, check)


@case("library", "AutoWU.step with a loss that requires grad: no graph is kept")
def autowu_loss_requires_grad(p):
    def check():
        s = _autowu()
        w = torch.ones((), requires_grad=True)
        s.step(w * 1.5)
        kept = s.pending.items[0]
        assert isinstance(kept, torch.Tensor) and not kept.requires_grad and kept.grad_fn is None, kept
    return expect_ok(p, check)


@case("library", "AutoWU.step with a 1-element 1-d tensor loss (shape (1,))")
def autowu_one_element_vector_loss(p):
    def check():
        s = _autowu()
        s.step(torch.tensor([1.5]))
        assert tuple(s.pending.items[0].shape) == () and float(s.pending.items[0]) == 1.5
    return expect_ok(p, check)


@case("library", "AutoWU losses of mixed kinds in one epoch (float, fp16, fp64 tensors, np.float32)")
def autowu_mixed_loss_kinds(p):
    def check():
        s = _autowu(variant="paper")
        for v in (1.0, torch.tensor(0.9, dtype=torch.float16), torch.tensor(0.8, dtype=torch.float64),
                  np.float32(0.7)):
            s.step(v)
        tests = [h for h in s.history if h["type"] == "test"]
        assert len(tests) == 1 and tests[0]["step"] == 4, s.history
        assert np.allclose(s.losses, [1.0, 0.9, 0.8, 0.7], atol=1e-3), s.losses
    return expect_ok(p, check)


# -- order of calls, end of the schedule -------------------------------------------------------------------------------
def _past_the_end(sched, total: int, extra: int, step) -> None:
    """Step ``sched`` to its end, then ``extra`` more times: one warning naming total_steps, the LR and the step
    count unchanged by the extra steps (a run that miscounts its steps still ends with its evaluation and save)."""
    import warnings
    for _ in range(total):
        step()
    lr, count = sched.get_last_lr(), sched.last_epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(extra):
            step()
    said = [str(w.message) for w in caught if "total_steps" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert sched.get_last_lr() == lr and sched.last_epoch == count == total, (sched.get_last_lr(), lr)


@case("library", "WarmupCosine stepped more times than total_steps (step per micro-batch)")
def warmupcosine_steps_past_end(p):
    from autowu import WarmupCosine
    s = _stepped(WarmupCosine(_opt(), 2, 2, warmup_epochs=0))
    return expect_ok(p, lambda: _past_the_end(s, 4, 2, s.step))


@case("library", "AutoWU (official variant) stepped past its last step")
def autowu_official_steps_past_end(p):
    s = _autowu(spe=2, epochs=2)
    return expect_ok(p, lambda: _past_the_end(s, 4, 6, lambda: s.step(1.0)))


@case("library", "AutoWU (paper variant) stepped past its last step")
def autowu_paper_steps_past_end(p):
    s = _autowu(spe=2, epochs=2, variant="paper")
    return expect_ok(p, lambda: _past_the_end(s, 4, 1, lambda: s.step(1.0)))


@case("library", "AutoLR stepped past its last step")
def autolr_steps_past_end(p):
    s, model, opt, x, y = _autolr(spe=2, epochs=1)
    return expect_ok(p, lambda: _past_the_end(s, 2, 1, lambda: _autolr_steps(s, model, opt, x, y, 1)))


@case("resume", "AutoWU state_dict taken after the last step loads back")
def autowu_state_after_last_step(p):
    def check():
        s = _autowu(spe=2, epochs=2, variant="paper")
        for _ in range(4):
            s.step(1.0)
        t = _autowu(spe=2, epochs=2, variant="paper")
        t.load_state_dict(s.state_dict())
        assert t.last_step == 4 and t.get_last_lr() == s.get_last_lr() == [0.0]
    return expect_ok(p, check)


@case("library", "RangeTestCosine.step() before prepare(): the range test never ran")
def range_test_step_before_prepare(p):
    s = _stepped(_range_test())
    return expect_raise(p, s.step, "prepare")


@case("library", "RangeTestCosine with num_iter=0")
def range_test_zero_iterations(p):
    return expect_raise(p, lambda: _range_test(num_iter=0), "num_iter")


@case("library", "RangeTestCosine with start_lr above end_lr")
def range_test_start_above_end(p):
    return expect_raise(p, lambda: _range_test(start_lr=1.0, end_lr=1e-3), ["start_lr", "end_lr"])


@case("library", "RangeTestCosine with loss_fn=None")
def range_test_loss_fn_none(p):
    return expect_raise(p, lambda: _range_test(loss_fn=None), "loss_fn")


@case("library", "RangeTestCosine.prepare() with batches() that yields nothing")
def range_test_empty_batches(p):
    s = _range_test(batches=lambda: iter(()))
    return expect_raise(p, s.prepare, "batches")


# -- timm and the LRScheduler protocol ---------------------------------------------------------------------------------
@case("library", "timm's loop (step_update per update, step(epoch, metric) per epoch) with the baseline schedule")
def timm_loop_on_baseline(p):
    from autowu import WarmupCosine

    def check():
        s = _stepped(WarmupCosine(_opt(), 4, 10, warmup_epochs=1))
        assert getattr(s, "t_in_epochs", None) is False, "no t_in_epochs (timm's main() reads it)"
        n = 0
        for epoch in range(2):
            for _ in range(4):
                n += 1
                s.step_update(num_updates=n, metric=0.5)
            s.step(epoch + 1, 0.5)
        assert s.last_epoch == 8 and s.get_last_lr() == [s.lr_at(8)], (s.last_epoch, s.get_last_lr())
    return expect_ok(p, check)


@case("resume", "timm's resume call step_update(start_epoch * updates) after load_state_dict, baseline schedule")
def timm_resume_sync_on_baseline(p):
    from autowu import WarmupCosine

    def check():
        a = _stepped(WarmupCosine(_opt(), 4, 10, warmup_epochs=1))
        for _ in range(8):
            a.step()
        b = WarmupCosine(_opt(), 4, 10, warmup_epochs=1)
        b.load_state_dict(a.state_dict())
        b.step_update(2 * 4)  # timm: lr_scheduler.step_update(start_epoch * updates_per_epoch)
        assert b.last_epoch == 8 and b.get_last_lr() == a.get_last_lr()
    return expect_ok(p, check)


@case("library", "get_last_lr() returns a copy: changing it changes neither the schedule nor the optimizer")
def get_last_lr_is_a_copy(p):
    def check():
        s = _autowu()
        lrs = s.get_last_lr()
        lrs[0] = 123.0
        assert s.get_last_lr()[0] != 123.0 and s.optimizer.param_groups[0]["lr"] != 123.0
    return expect_ok(p, check)


@case("library", "AutoWU with a frozen second group (lr 0): it stays 0, group 0 follows the warmup")
def autowu_frozen_group(p):
    def check():
        s = _autowu(opt=_two_groups(0.1, 0.0))
        for _ in range(3):
            s.step(1.0)
        lrs = [g["lr"] for g in s.optimizer.param_groups]
        assert lrs[1] == 0.0 and lrs[0] == s.warmup_lr(3) and s.get_last_lr() == lrs, lrs
    return expect_ok(p, check)


@case("library", "a tensor LR in group 1 of 2: filled in place, ratio to group 0 kept")
def tensor_lr_second_group(p):
    from autowu import WarmupCosine

    def check():
        m = torch.nn.Linear(2, 1)
        lr1 = torch.tensor(0.01)
        opt = torch.optim.Adam([{"params": [m.weight], "lr": 0.1}, {"params": [m.bias], "lr": lr1}], lr=0.1)
        s = _stepped(WarmupCosine(opt, 4, 10, warmup_epochs=1))
        for _ in range(2):
            s.step()
        assert opt.param_groups[1]["lr"] is lr1, "the tensor was replaced"
        assert math.isclose(float(lr1), s.get_last_lr()[0] / 10, rel_tol=1e-6), (float(lr1), s.get_last_lr())
    return expect_ok(p, check)


@case("resume", "load_state_dict into an optimizer with a tensor LR keeps the tensor and sets its value")
def load_state_keeps_tensor_lr(p):
    from autowu import WarmupCosine

    def check():
        a = _stepped(WarmupCosine(torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=torch.tensor(0.01)), 4,
                                  10, warmup_epochs=1))
        for _ in range(3):
            a.step()
        lr = torch.tensor(0.01)
        opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=lr)
        b = WarmupCosine(opt, 4, 10, warmup_epochs=1)
        b.load_state_dict(a.state_dict())
        assert opt.param_groups[0]["lr"] is lr and math.isclose(float(lr), a.get_last_lr()[0], rel_tol=1e-6)
    return expect_ok(p, check)


@case("library", "AutoWU saved whole with torch.save (not its state_dict) and loaded back")
def autowu_pickled_whole(p):
    def check():
        s = _autowu(variant="paper")
        for _ in range(3):
            s.step(1.0)
        buf = io.BytesIO()
        torch.save(s, buf)
        buf.seek(0)
        t = torch.load(buf, weights_only=False)
        for sched in (s, t):
            sched.step(0.9)
        assert t.last_step == s.last_step == 4 and t.get_last_lr() == s.get_last_lr()
    return expect_ok(p, check)


# -- state dicts: wrong, missing, mistyped, from elsewhere -------------------------------------------------------------
def _autowu_state(steps: int = 5, **kw) -> dict:
    s = _autowu(**kw)
    for i in range(steps):
        s.step(1.0 + 0.1 * i)
    return s.state_dict()


@case("resume", "an AutoWU state_dict loaded into WarmupCosine")
def autowu_state_into_warmupcosine(p):
    from autowu import WarmupCosine
    sd = _autowu_state()
    return expect_raise(p, lambda: WarmupCosine(_opt(), 4, 10).load_state_dict(sd), ["AutoWU", "WarmupCosine"])


@case("resume", "a WarmupCosine state_dict loaded into AutoWU")
def warmupcosine_state_into_autowu(p):
    from autowu import WarmupCosine
    sd = WarmupCosine(_opt(), 4, 10).state_dict()
    return _refused_untouched(p, _autowu(), sd, ["WarmupCosine", "AutoWU"])


@case("resume", "a WarmupCosine state_dict loaded into AutoLR")
def warmupcosine_state_into_autolr(p):
    from autowu import WarmupCosine
    sd = WarmupCosine(_opt(), 4, 10).state_dict()
    s = _autolr()[0]
    return expect_raise(p, lambda: s.load_state_dict(sd), ["WarmupCosine", "AutoLR"])


@case("resume", "AutoWU state at step 30 of a 10-epoch run loaded into a 5-epoch scheduler")
def autowu_state_into_fewer_epochs(p):
    sd = _autowu_state(30, spe=4, epochs=10)
    return _refused_untouched(p, _autowu(spe=4, epochs=5), sd, "total_epochs")


@case("resume", "WarmupCosine state of a 10-epoch run loaded into a 20-epoch scheduler (extending the run)")
def warmupcosine_state_into_more_epochs(p):
    from autowu import WarmupCosine
    a = _stepped(WarmupCosine(_opt(), 4, 10))
    for _ in range(5):
        a.step()
    return _refused_untouched(p, _stepped(WarmupCosine(_opt(), 4, 20)), a.state_dict(), "total_epochs")


@case("resume", "AutoWU state saved by a newer version with a setting this version does not have")
def autowu_state_from_newer_version(p):
    sd = _autowu_state()
    sd["config"]["ema_decay"] = 0.9
    return _refused_untouched(p, _autowu(), sd, "ema_decay")


@case("resume", "AutoWU state whose 'pending_reduced' is a string")
def autowu_state_pending_reduced_string(p):
    sd = _autowu_state()
    sd["pending_reduced"] = "one"
    return _refused_untouched(p, _autowu(), sd, "pending_reduced")


@case("resume", "AutoWU state whose 'gp_state' values are strings")
def autowu_state_gp_state_strings(p):
    sd = _autowu_state()
    sd["gp_state"] = {k: "x" for k in sd["gp_state"]}
    return _refused_untouched(p, _autowu(), sd, "gp_state")


@case("resume", "AutoWU (official) state whose official scheduler kind is unknown")
def autowu_state_official_kind_unknown(p):
    sd = _autowu_state()
    sd["official"]["sched"] = {"kind": "polynomial", "n": 0}
    return _refused_untouched(p, _autowu(), sd, "official")


@case("resume", "AutoWU state holding more pending losses than steps taken")
def autowu_state_pending_longer_than_steps(p):
    sd = _autowu_state()
    sd["pending"] = torch.ones(30)
    return _refused_untouched(p, _autowu(), sd, "pending")


@case("resume", "AutoWU state_dict through torch.save / torch.load(weights_only=True) continues exactly")
def autowu_state_weights_only_round_trip(p):
    def check():
        losses = [1.0 - 0.01 * i for i in range(12)]
        a, b = _autowu(variant="paper"), _autowu(variant="paper")
        for v in losses[:6]:
            a.step(torch.tensor(v))
            b.step(torch.tensor(v))
        path = p.path("sched.pt")
        torch.save(b.state_dict(), path)
        c = _autowu(variant="paper")
        c.load_state_dict(torch.load(path, weights_only=True))
        for v in losses[6:]:
            a.step(torch.tensor(v))
            c.step(torch.tensor(v))
        assert c.get_last_lr() == a.get_last_lr() and c.history == a.history
    return expect_ok(p, check)


@case("resume", "WarmupCosine state_dict through JSON (a user's own checkpoint format)")
def warmupcosine_state_json_round_trip(p):
    from autowu import WarmupCosine

    def check():
        a = _stepped(WarmupCosine(_two_groups(), 4, 10, warmup_epochs=1))
        for _ in range(7):
            a.step()
        b = WarmupCosine(_two_groups(), 4, 10, warmup_epochs=1)
        b.load_state_dict(json.loads(json.dumps(a.state_dict())))
        assert b.last_epoch == 7 and b.get_last_lr() == a.get_last_lr()
    return expect_ok(p, check)


@case("resume", "RangeTestCosine state_dict taken before prepare() loads back")
def range_test_state_before_prepare(p):
    def check():
        a = _range_test()
        b = _range_test()
        b.load_state_dict(a.state_dict())
        assert b.last_epoch == 0 and b.found == {}
    return expect_ok(p, check)


@case("resume", "AutoLR.load_state_dict(None)")
def autolr_load_none(p):
    s = _autolr()[0]
    return expect_raise(p, lambda: s.load_state_dict(None), "dict")


@case("resume", "AutoLR state with lr NaN")
def autolr_state_lr_nan(p):
    s, model, opt, x, y = _autolr()
    _autolr_steps(s, model, opt, x, y, 3)
    sd = s.state_dict()
    sd["lr"] = float("nan")
    return _refused_untouched(p, _autolr()[0], sd, "lr")


@case("resume", "AutoLR state with a negative lr")
def autolr_state_lr_negative(p):
    s, model, opt, x, y = _autolr()
    _autolr_steps(s, model, opt, x, y, 3)
    sd = s.state_dict()
    sd["lr"] = -0.1
    return _refused_untouched(p, _autolr()[0], sd, "lr")


@case("resume", "AutoLR state without its 'lr' key: refused and the scheduler untouched")
def autolr_state_missing_lr(p):
    s, model, opt, x, y = _autolr()
    _autolr_steps(s, model, opt, x, y, 3)
    sd = s.state_dict()
    del sd["lr"]
    return _refused_untouched(p, _autolr()[0], sd, "lr")


@case("resume", "AutoLR state whose step is beyond the run (a state of a longer run)")
def autolr_state_step_beyond(p):
    s, model, opt, x, y = _autolr()
    _autolr_steps(s, model, opt, x, y, 3)
    sd = s.state_dict()
    sd["step"] = 10**6
    return _refused_untouched(p, _autolr()[0], sd, "step")


# -- framework/optim.py ------------------------------------------------------------------------------------------------
@case("library", "resolve_optimizer_defaults with opt='adam' (not one of the optimizers)")
def optim_unknown_optimizer(p):
    return expect_raise(p, lambda: _opt_args(opt="adam"), ["adam", "adamp"])


@case("library", "create_optimizer: AdamP with beta2 = 1.0")
def optim_adamp_beta_one(p):
    return expect_raise(p, lambda: _create_opt(opt_betas=[0.9, 1.0]), "betas")


@case("library", "create_optimizer: AdamP with one beta")
def optim_adamp_one_beta(p):
    return expect_raise(p, lambda: _create_opt(opt_betas=[0.9]), "betas")


@case("library", "create_optimizer: AdamP with a negative eps")
def optim_adamp_negative_eps(p):
    return expect_raise(p, lambda: _create_opt(opt_eps=-1e-8), "eps")


@case("library", "create_optimizer: AdamP with a negative weight decay")
def optim_adamp_negative_weight_decay(p):
    return expect_raise(p, lambda: _create_opt(weight_decay=-0.1), "weight_decay")


@case("library", "create_optimizer: AdamP with weight decay NaN")
def optim_adamp_nan_weight_decay(p):
    return expect_raise(p, lambda: _create_opt(weight_decay=float("nan")), "weight_decay")


@case("library", "create_optimizer: AdamP with a negative delta")
def optim_adamp_negative_delta(p):
    return expect_raise(p, lambda: _create_opt(adamp_delta=-0.1), "delta")


@case("library", "create_optimizer: LAMB with a negative weight decay")
def optim_lamb_negative_weight_decay(p):
    return expect_raise(p, lambda: _create_opt(opt="lamb", weight_decay=-0.1), "weight_decay")


@case("library", "create_optimizer: LAMB with betas as a string ('0.9,0.99')")
def optim_lamb_betas_string(p):
    return expect_raise(p, lambda: _create_opt(opt="lamb", opt_betas="0.9,0.99"), "betas")


@case("library", "create_optimizer: SGD with momentum 1.5")
def optim_sgd_momentum_above_one(p):
    return expect_raise(p, lambda: _create_opt(opt="sgd", momentum=1.5), "momentum")


@case("library", "create_optimizer with a negative lr")
def optim_negative_lr(p):
    return expect_raise(p, lambda: _create_opt(lr=-1e-3), "lr")


@case("library", "create_optimizer for a model whose every parameter is frozen")
def optim_frozen_model(p):
    m = torch.nn.Linear(2, 1)
    for q in m.parameters():
        q.requires_grad_(False)
    return expect_raise(p, lambda: _create_opt(model=m), "requires_grad")


@case("library", "scaled_lr with an unknown rule ('log')")
def optim_scaled_lr_unknown_rule(p):
    from framework.optim import scaled_lr
    return expect_raise(p, lambda: scaled_lr(1e-3, 256, 256, "log"), ["log", "sqrt"])


@case("library", "scaled_lr linear with batch size 0")
def optim_scaled_lr_zero_batch(p):
    from framework.optim import scaled_lr
    return expect_raise(p, lambda: scaled_lr(1e-3, 0, 256, "linear"), "batch_size")


@case("library", "effective_lr of a Schedule-Free group is the LR the coming step uses (its own warmup)")
def effective_lr_schedulefree(p):
    from framework.optim import effective_lr

    def check():
        from schedulefree import AdamWScheduleFree
        m = torch.nn.Linear(2, 1)
        opt = AdamWScheduleFree(m.parameters(), lr=0.01, warmup_steps=4)
        opt.train()
        for _ in range(6):
            before = effective_lr(opt.param_groups[0])
            m(torch.ones(1, 2)).sum().backward()
            opt.step()
            opt.zero_grad()
            used = opt.param_groups[0]["scheduled_lr"]
            assert math.isclose(before, used, rel_tol=1e-12), (before, used)
    return expect_ok(p, check)


@case("library", "effective_lr of a Prodigy group is d * lr, the step size it uses")
def effective_lr_prodigy(p):
    from framework.optim import effective_lr

    def check():
        from prodigyopt import Prodigy
        opt = Prodigy(torch.nn.Linear(2, 1).parameters(), lr=0.5)
        g = opt.param_groups[0]
        assert math.isclose(effective_lr(g), g["d"] * 0.5, rel_tol=1e-12), (effective_lr(g), g["d"])
    return expect_ok(p, check)


@case("library", "effective_lr of a plain group with a tensor LR is a float")
def effective_lr_tensor(p):
    from framework.optim import effective_lr

    def check():
        got = effective_lr({"lr": torch.tensor(0.25)})
        assert type(got) is float and got == 0.25, got
    return expect_ok(p, check)


@case("library", "resolve_optimizer_defaults gives each run its own betas list (OPT_DEFAULTS unchanged)")
def optim_defaults_not_aliased(p):
    from framework.optim import OPT_DEFAULTS

    def check():
        a = _opt_args()
        a.opt_betas[0] = 0.5
        assert OPT_DEFAULTS["adamp"]["opt_betas"] == [0.9, 0.999], OPT_DEFAULTS["adamp"]
    return expect_ok(p, check)


# -- framework/checkpoint.py used directly -----------------------------------------------------------------------------
@case("library", "load_checkpoint given a run directory instead of its last.pt")
def checkpoint_load_directory(p):
    from framework.checkpoint import load_checkpoint
    d = p.path("run")
    d.mkdir()
    return expect_raise(p, lambda: load_checkpoint(str(d)), ["directory", "last.pt"])


@case("library", "load_checkpoint given a model's own weights file (torch.save(model.state_dict()))")
def checkpoint_load_weights_file(p):
    from framework.checkpoint import load_checkpoint
    path = p.path("model.pt")
    torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    return expect_raise(p, lambda: load_checkpoint(str(path)), ["model.pt", "optimizer"])


@case("library", "load_resumable with a pathlib.Path")
def checkpoint_load_resumable_pathlib(p):
    from framework.checkpoint import CHECKPOINT_KEYS, load_resumable

    def check():
        path = p.path("last.pt")
        torch.save({k: 0 for k in CHECKPOINT_KEYS}, path)
        ckpt, source, notes = load_resumable(path)
        assert sorted(ckpt) == sorted(CHECKPOINT_KEYS) and str(source) == str(path) and notes == []
    return expect_ok(p, check)
