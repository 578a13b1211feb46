"""AutoWU as a drop-in for the official class (github.com/kakaobrain/autowu), and its manners in timm and PyTorch.

The equivalence tests replay LR trajectories recorded from the official code (tests/fixtures/official/
trajectories.json: numbers only; how they were recorded is in the file's "recording" field).
"""
import inspect
import json
import math
import pathlib
import re
import warnings

import pytest
import torch

from autowu import AutoWU, create_scheduler

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "official" / "trajectories.json").read_text())
CASES = {c["name"]: c for c in FIXTURE["cases"]}

# Tolerances. Outside GP decisions the LR is arithmetic on the same formulas: 1e-6 relative. The GP test is the
# same model, but the official code runs it in float32 (GPyTorch) and ours in float64 (closed form): P_min agrees to
# 3.3e-3 on these fixtures (the fits use every loss, as no test sees more than 100, so no random subsampling
# differs). The switch LR is the mean over 5 posteriors of the LR at each posterior-mean argmin on a 500-point grid;
# float32 rounding can move one argmin by one grid point, which moves that mean by up to (lr_t/min_lr)^(1/499)/5,
# 0.47% for lr_t/min_lr = 1e5. Hence 1% for the LR set by a GP switch (observed: 3e-7), and every later LR is
# compared relative to it.
LR_REL = 1e-6
P_MIN_ABS = 0.01
SWITCH_LR_REL = 0.01


def make_opt(lr=0.1, groups=1):
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p in params], lr=lr)


def loss_values(case):
    return [float(v) for v in case["losses"]]


def replay(case, steps=None, **extra):
    s = AutoWU(make_opt(), case["steps_per_epoch"], case["total_epochs"], **case["kwargs"], **extra)
    lrs, phases = [s.get_last_lr()[0]], [s.phase]
    for v in loss_values(case)[:steps]:
        s.step(torch.tensor(v, dtype=torch.float32))
        lrs.append(s.get_last_lr()[0])
        phases.append(s.phase)
    return s, lrs, phases


def phase_changes(phases):
    out = [[0, phases[0]]]
    for i, p in enumerate(phases):
        if p != out[-1][1]:
            out.append([i, p])
    return out


@pytest.fixture(autouse=True)
def _no_order_warning():
    """These tests drive the scheduler without an optimizer step; the order warning is tested on its own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        yield


@pytest.mark.parametrize("name", list(CASES))
def test_reproduces_the_official_trajectory(name):
    case = CASES[name]
    steps = case["error"]["step"] if case["error"] else None
    s, lrs, phases = replay(case, steps)
    off = case["lrs"]
    # every GP test: same step, same decision, same votes, P_min close
    tests = [h for h in s.history if h["type"] == "test"]
    assert [(h["step"], h["passed"], h["votes"]) for h in tests] == \
        [(o["step"], o["passed"], o["votes"]) for o in case["tests"]]
    for h, o in zip(tests, case["tests"]):
        assert h["p_min"] == pytest.approx(o["p_min"], abs=P_MIN_ABS)
    # the switch: same step and reason; the LR a GP switch sets (before the next phase's first step) within 1%
    sw = case["switch"]
    switches = [h for h in s.history if h["type"] == "switch"]
    if sw is None:
        assert not switches
    else:
        assert (switches[-1]["step"], switches[-1]["reason"]) == (sw["step"], sw["reason"])
        if sw["reason"] == "gp-test":
            assert switches[-1]["lr"] == pytest.approx(sw["lr"], rel=SWITCH_LR_REL)
    # the LR of every step: 1e-6 relative; from a GP switch on, relative to the LR that switch set
    gp_switch_steps = {h["step"] for h in switches if h["reason"] == "gp-test"}
    scale = 1.0
    for n, (ours, theirs) in enumerate(zip(lrs, off)):  # (where the official code raised, up to that step)
        if n in gp_switch_steps:
            scale = ours / theirs
            assert scale == pytest.approx(1.0, rel=SWITCH_LR_REL)
        assert ours == pytest.approx(theirs * scale, rel=LR_REL, abs=1e-12), f"step {n}"
    assert len(lrs) == len(off) + (1 if case["error"] else 0)
    assert phase_changes(phases[:len(off)]) == case["phase_changes"]


def test_official_gp_switch_into_reduce_on_plateau_raises_there_and_we_go_on():
    """decay_phase_stat='loss' with a GP switch: the official code calls ReduceLROnPlateau.step() without a metric
    (TypeError, recorded in the fixture); we start the plateau schedule without that step and go on."""
    case = CASES["decay_phase_stat_loss_gp_switch"]
    assert case["error"]["type"] == "TypeError" and case["error"]["step"] == case["switch"]["step"]
    s, lrs, _ = replay(case)
    k = case["switch"]["step"]
    assert s.switch["step"] == k and lrs[k] == pytest.approx(case["switch"]["lr"], rel=SWITCH_LR_REL)
    cooldown = math.ceil(0.8 * s.total_steps)
    assert lrs[cooldown - 1] <= lrs[k] and lrs[-2] == 0.0 and len(lrs) == s.total_steps + 1


def test_reduce_on_plateau_halves_the_lr_after_six_flat_decay_epochs():
    s, lrs, _ = replay(CASES["decay_phase_stat_loss_cap"])
    changes = [n for n in range(101, 160) if lrs[n] != lrs[n - 1]]
    assert changes and all(lrs[n] == pytest.approx(lrs[n - 1] * 0.5) for n in changes)


# -- the constructor -------------------------------------------------------------------------------------------

OFFICIAL_SIGNATURE = [("optimizer", inspect.Parameter.empty), ("steps_per_epoch", inspect.Parameter.empty),
                      ("total_epochs", inspect.Parameter.empty), ("min_lr", 1e-5), ("max_lr", 1.0),
                      ("max_warmup_fraction", 0.5), ("warmup_unit", "step"), ("warmup_type", "exp"),
                      ("warmup_only", False), ("immediate_cooldown", False), ("decay_phase_stat", None),
                      ("decay_phase_factor", 1.0), ("cooldown_fraction", 0.2), ("cooldown_type", "cosine"),
                      ("device", torch.device("cpu"))]


def test_signature_is_the_official_one_in_order_with_its_defaults():
    params = list(inspect.signature(AutoWU).parameters.values())
    positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == OFFICIAL_SIGNATURE
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(positional):])


def test_positional_arguments_mean_what_they_mean_officially():
    s = AutoWU(make_opt(), 10, 10, 1e-4, 0.5, 0.3, "step", "linear")
    assert (s.min_lr, s.max_lr, s.max_warmup_fraction, s.warmup_type) == (1e-4, 0.5, 0.3, "linear")
    assert s.warmup_steps == 30 and s.get_last_lr()[0] == 1e-4


def test_aliases_work_alone_and_two_names_for_one_setting_is_an_error():
    s = AutoWU(make_opt(), 10, 10, eta_min=1e-4, eta_max=0.5, rho_w=0.3, warmup="linear", decay="cosine")
    assert (s.min_lr, s.max_lr, s.max_warmup_fraction, s.warmup_type, s.immediate_cooldown) == \
        (1e-4, 0.5, 0.3, "linear", True)
    for official, alias in [({"min_lr": 1e-4}, {"eta_min": 1e-4}), ({"max_lr": 0.5}, {"eta_max": 0.5}),
                            ({"max_warmup_fraction": 0.3}, {"rho_w": 0.3}), ({"warmup_type": "exp"}, {"warmup": "exp"}),
                            ({"immediate_cooldown": False}, {"decay": "cosine"})]:
        with pytest.raises(TypeError, match=f"{next(iter(official))}=.*{next(iter(alias))}=.*give only one"):
            AutoWU(make_opt(), 10, 10, **official, **alias)
    with pytest.raises(TypeError, match="two names"):
        AutoWU(make_opt(), 10, 10, 1e-4, eta_min=1e-4)  # positional min_lr and the alias


def test_default_decay_is_the_official_codes_constant_then_cosine():
    """Finding 2: no keywords = immediate_cooldown=False. The LR at step 71 of 100 after a cap switch at 50."""
    s = AutoWU(make_opt(), 10, 10)
    assert s.decay == "const-cosine" and s.immediate_cooldown is False
    for _ in range(71):
        s.step(3.0)  # flat: no GP switch, the cap at 50
    assert s.switch["reason"] == "max-warmup"
    assert s.get_last_lr()[0] == pytest.approx(1e-5 * 1e5 ** (49 / 50))  # constant since the cap: 0.794
    assert s.phase == "decay"


def test_official_attributes():
    opt = make_opt()
    s = AutoWU(opt, 5, 4, immediate_cooldown=True)
    assert (s.last_step, s.min_lr, s.max_lr, s.total_steps, s.phase) == (0, 1e-5, 1.0, 20, "warmup")
    assert s.scheduler.get_last_lr() == s.get_last_lr() == [opt.param_groups[0]["lr"]]
    seen = []
    for _ in range(20):
        s.step(1.0)
        seen.append(s.phase)
    assert s.last_step == 20 and seen[0] == "warmup" and seen[-1] == "final" and set(seen) == {"warmup", "final"}
    c = AutoWU(make_opt(), 5, 4)
    for _ in range(20):
        c.step(1.0)
        seen.append(c.phase)
    assert "decay" in seen


def test_cap_at_an_epoch_end_switches_untested_officially_and_tested_in_the_paper_variant():
    """Finding 3: the same losses; the official code stops at the cap W = 100 (an epoch end) without a test and
    decays from max_lr / gamma; the paper's reading runs the test there, passes its third and decays from eta_{t*}."""
    case = CASES["u_shaped_late_minimum"]
    official, _, _ = replay(case)
    assert official.switch["reason"] == "max-warmup" and official.switch["step"] == 100
    assert official.switch["lr"] == pytest.approx(1e-5 * 1e5 ** (99 / 100))
    assert [h["step"] for h in official.history if h["type"] == "test"][-1] == 90
    paper, _, _ = replay(case, variant="paper")
    assert paper.switch["reason"] == "gp-test" and paper.switch["step"] == 100
    assert paper.switch["lr"] == pytest.approx(paper.warmup_lr(paper.switch["t_star"]))


def test_paper_variant_refuses_official_only_options():
    for kwargs in (dict(warmup_unit="epoch"), dict(warmup_only=True), dict(decay_phase_stat="loss"),
                   dict(decay_phase_factor=0.5), dict(cooldown_type="half_cosine")):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))}=.*variant='official'"):
            AutoWU(make_opt(), 10, 10, variant="paper", **kwargs)


def test_create_scheduler_keeps_the_papers_reading():
    for name in ("autowu-cos", "autowu-const-cos"):
        s = create_scheduler(name, make_opt(), steps_per_epoch=10, total_epochs=20)
        assert s.variant == "paper"


@pytest.mark.parametrize("source, decay_sched", [("README", "cos"), ("README", "const-cos"),
                                                 ("train.py", "cos"), ("train.py", "const-cos")])
def test_official_readme_snippet_and_train_py_calls(source, decay_sched):
    """The official README's two constructor calls (verbatim apart from the data set-up) and the official
    train.py's: its sched_config for both --decay-sched values; then step(loss) and get_last_lr()[0] as they call
    them."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    train_loader = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total_epochs = 6
    if source == "README" and decay_sched == "cos":
        scheduler = AutoWU(optimizer,
                           len(train_loader),  # the number of steps in one epoch
                           total_epochs,  # total number of epochs
                           immediate_cooldown=True,
                           cooldown_type='cosine',
                           device=device)
    elif source == "README":
        scheduler = AutoWU(optimizer,
                           len(train_loader),  # the number of steps in one epoch
                           total_epochs,  # total number of epochs
                           immediate_cooldown=False,
                           cooldown_type='cosine',
                           cooldown_fraction=0.2,  # fraction of cosine decay at the end
                           device=device)
    else:
        sched_config = dict(steps_per_epoch=len(train_loader), total_epochs=total_epochs)
        if decay_sched == "cos":
            sched_config.update(immediate_cooldown=True, cooldown_type="cosine")
        else:
            sched_config.update(immediate_cooldown=False, cooldown_fraction=0.2, cooldown_type="cosine")
        scheduler = AutoWU(optimizer, device=device, **sched_config)
    logged = []
    for _ in range(total_epochs):
        for inputs, targets in train_loader:
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step(loss)
            logged.append(scheduler.get_last_lr()[0])
    assert scheduler.decay == ("cosine" if decay_sched == "cos" else "const-cosine")
    assert scheduler.immediate_cooldown == (decay_sched == "cos") and scheduler.last_step == 24
    assert logged[-2] == 0.0  # the official cosine gives the last step LR 0
    assert all(math.isfinite(v) and v >= 0 for v in logged) and scheduler.phase == "final"


# -- bad input (issue 12, scheduler library) -------------------------------------------------------------------

@pytest.mark.parametrize("bad, what", [
    ("2.5", "str"), (True, "bool"), (2, "int"), (2 + 0j, "complex"), (torch.tensor(2), "torch.int64"),
    (torch.tensor(True), "torch.bool"), (torch.tensor(1 + 1j), "complex"), (torch.empty((), device="meta"), "meta"),
])
def test_step_rejects_what_is_not_a_loss(bad, what):
    s = AutoWU(make_opt(), 10, 10)
    with pytest.raises(ValueError, match=what):
        s.step(bad)
    assert s.last_step == 0 and s._epoch_losses == []


def test_an_int_loss_says_what_timm_users_should_call():
    with pytest.raises(ValueError, match=r"step_update\(num_updates, metric=loss\)"):
        AutoWU(make_opt(), 10, 10).step(3)


def test_huge_finite_losses_stay_finite():
    for loss in (1e308, torch.tensor(1e300, dtype=torch.float64)):
        s = AutoWU(make_opt(), 5, 10)
        for _ in range(5):
            s.step(loss)
        assert s.losses.tolist() == [float(loss)] * 5 and s.switch is None


@pytest.mark.parametrize("seed", [-1, "abc", 1.5, True])
def test_seed_is_checked_by_name(seed):
    with pytest.raises(ValueError, match="seed"):
        AutoWU(make_opt(), 10, 10, seed=seed)


def test_load_state_dict_checks_keys_and_ranges_and_changes_nothing_on_error():
    s = AutoWU(make_opt(), 10, 10)
    for _ in range(7):
        s.step(1.0)
    good = s.state_dict()
    t = AutoWU(make_opt(), 10, 10)
    for _ in range(3):
        t.step(2.0)
    before = (t.last_step, t.get_last_lr(), list(t._epoch_losses))
    losses, history, rng = t.losses.copy(), list(t.history), t.rng.bit_generator.state
    cases = [({}, "'config' .* is missing"), ({**good, "phase": "banana"}, "'phase' is 'banana'"),
             ({k: v for k, v in good.items() if k != "config"}, "'config' .* is missing"),
             ({**good, "rng": {"bit_generator": "PCG64", "state": "x"}}, "'rng' is not usable"),
             ({**good, "history": [{"no": "type"}]}, "'history' is not usable"),
             ({**good, "history": ["switch"]}, "'history' is not usable"),
             ({**good, "step": 101}, r"'step' is 101, expected an integer in \[0, 100\]"),
             ({**good, "step": -1}, "'step'"), ({**good, "losses": [1.0]}, "'losses'"),
             ({**good, "decay_start_lr": float("nan")}, "'decay_start_lr'"),
             ({k: v for k, v in good.items() if k != "rng"}, "'rng' is missing"),
             ({**good, "gp_state": {}}, "'gp_state'"), ("not a dict", "expected the dict")]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            t.load_state_dict(bad)
        assert (t.last_step, t.get_last_lr(), list(t._epoch_losses)) == before
        assert t.losses.tolist() == losses.tolist() and t.history == history and t.rng.bit_generator.state == rng
    t.load_state_dict(good)
    assert t.last_step == 7


# -- timm ------------------------------------------------------------------------------------------------------

def test_timm_calls_step_update_with_the_loss_and_step_at_epoch_ends():
    """timm's train.py: step_update(num_updates=..., metric=loss) after each update, step(epoch + 1, metric) at each
    epoch end. The epoch-end call is a no-op; the trajectory is the one step(loss) gives."""
    losses = [3.0 - 0.01 * t for t in range(40)]
    ref = AutoWU(make_opt(), 5, 8)
    for v in losses:
        ref.step(v)
    s = AutoWU(make_opt(), 5, 8)
    lrs = []
    num_updates = 0
    for epoch in range(8):
        for i in range(5):
            num_updates += 1
            s.step_update(num_updates=num_updates, metric=losses[epoch * 5 + i])
            lrs.append(s.get_last_lr()[0])
        s.step(epoch + 1, 0.5)  # eval metric: ignored
        s.step(epoch + 1)
        assert s.last_step == num_updates
    assert s.get_last_lr() == ref.get_last_lr() and s.history == ref.history


def test_timm_train_py_resume_calls_are_no_ops_and_the_run_continues_exactly():
    """timm's main(): logs ``lr_scheduler.t_in_epochs``, then after a resume calls ``step_update(start_epoch *
    updates_per_epoch)`` (sched_on_updates) or ``step(start_epoch)`` without a metric (issue 22: both raised)."""
    losses = [3.0 - 0.01 * t for t in range(40)]
    ref = AutoWU(make_opt(), 5, 8)
    for v in losses:
        ref.step(v)
    first = AutoWU(make_opt(), 5, 8)
    assert first.t_in_epochs is False
    for n in range(1, 16):
        first.step_update(num_updates=n, metric=losses[n - 1])
    for resync in (lambda s: s.step_update(15), lambda s: s.step(3)):
        s = AutoWU(make_opt(), 5, 8)
        s.load_state_dict(first.state_dict())
        lr = s.get_last_lr()
        resync(s)
        assert s.last_step == 15 and s.get_last_lr() == lr
        for n in range(16, 41):
            s.step_update(num_updates=n, metric=losses[n - 1])
        assert s.get_last_lr() == ref.get_last_lr() and s.history == ref.history
    with pytest.raises(ValueError, match="metric=<the loss"):
        s.step_update(39)  # not the restored count: still an error


def test_timm_misuse_is_explained():
    s = AutoWU(make_opt(), 5, 8)
    with pytest.raises(ValueError, match="metric=<the loss"):
        s.step_update(1)
    with pytest.raises(ValueError, match="counted 0 updates"):
        s.step_update(5, metric=1.0)
    s.step_update(1, metric=1.0)
    with pytest.raises(ValueError, match="updates_per_epoch"):
        s.step(1, 0.3)  # an epoch end where AutoWU has counted 0.2 epochs


# -- PyTorch ---------------------------------------------------------------------------------------------------

def test_torchs_order_warning():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = AutoWU(opt, 5, 4)
    with pytest.warns(UserWarning, match=r"before `optimizer.step\(\)`"):
        s.step(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = AutoWU(opt, 5, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        s.step(1.0)
        opt.step()
        s.step(1.0)


def test_sequential_and_chained_schedulers_are_refused_with_advice():
    opt = make_opt()
    with pytest.raises(TypeError, match="inside SequentialLR.*Use AutoWU alone"):
        torch.optim.lr_scheduler.SequentialLR(opt, [AutoWU(opt, 5, 4), torch.optim.lr_scheduler.ConstantLR(opt)],
                                              milestones=[10])
    opt = make_opt()
    chained = torch.optim.lr_scheduler.ChainedScheduler([AutoWU(opt, 5, 4), torch.optim.lr_scheduler.ConstantLR(opt)])
    with pytest.raises(TypeError, match="inside ChainedScheduler.*scheduler.step\\(loss\\)"):
        chained.step()


@pytest.mark.parametrize("name, stop", [("decay_phase_stat_loss_cap", 123), ("warmup_unit_epoch", 42),
                                        ("half_cosine", 170), ("warmup_only", 97)])
def test_official_variant_resumes_exactly(name, stop, tmp_path):
    """Mid decay-epoch with pending plateau losses, mid warmup epoch, inside the half cosine, after a warmup_only
    reset: a state saved, loaded with torch.load(weights_only=True) into a fresh scheduler, continues identically."""
    case = CASES[name]
    _, ref, _ = replay(case)
    a, _, _ = replay(case, stop)
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = AutoWU(make_opt(), case["steps_per_epoch"], case["total_epochs"], **case["kwargs"])
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    lrs = [b.get_last_lr()[0]]
    for v in loss_values(case)[stop:]:
        b.step(torch.tensor(v, dtype=torch.float32))
        lrs.append(b.get_last_lr()[0])
    assert lrs == ref[stop:]


def test_errors_name_the_argument_as_it_was_given():
    with pytest.raises(ValueError, match=r"^max_warmup_fraction=1.5 must be in \(0, 1\)"):
        AutoWU(make_opt(), 10, 10, max_warmup_fraction=1.5)
    with pytest.raises(ValueError, match=r"^rho_w=1.5 must be in \(0, 1\)"):
        AutoWU(make_opt(), 10, 10, rho_w=1.5)
    with pytest.raises(ValueError, match="^max_lr=1e-06 must be greater than min_lr=1e-05"):
        AutoWU(make_opt(), 10, 10, max_lr=1e-6)
    with pytest.raises(ValueError, match="^eta_min=-1"):
        AutoWU(make_opt(), 10, 10, eta_min=-1.0)


# -- issue 22: parameter groups and tensor LRs -------------------------------------------------------------------

def test_a_tensor_lr_is_filled_in_place_as_torchs_schedulers_do():
    p = torch.nn.Parameter(torch.ones(2))
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam([p], lr=lr)
    s = AutoWU(opt, 5, 4)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(s.get_last_lr()[0])
    p.sum().backward()
    opt.step()
    s.step(1.0)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(s.get_last_lr()[0])


def test_a_group_added_after_the_scheduler_is_an_error_not_a_frozen_lr():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([a], lr=0.1)
    s = AutoWU(opt, 5, 4)
    opt.add_param_group({"params": [b], "lr": 0.1})
    with pytest.raises(ValueError, match="2 param groups but AutoWU was built for 1"):
        s.step(1.0)


@pytest.mark.parametrize("group", [{"lr_scale": -1.0}, {"lr": -0.1}, {"lr_scale": float("nan")}])
def test_a_negative_lr_or_lr_scale_is_refused(group):
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], **group}], lr=0.1)
    with pytest.raises(ValueError, match="param group 1 has lr="):
        AutoWU(opt, 5, 4)


def test_a_state_without_its_config_is_refused_by_every_schedule():
    """Issue 22: a state_dict without 'config' loaded into a scheduler of another shape."""
    from autowu.schedules import WarmupCosine
    s = WarmupCosine(make_opt(), 10, 10)
    state = s.state_dict()
    del state["config"]
    with pytest.raises(ValueError, match="'config' .* is missing"):
        WarmupCosine(make_opt(), 20, 10).load_state_dict(state)


def test_a_state_from_an_older_version_without_a_setting_is_checked_not_skipped():
    """Issue 22: a state lacking a setting skipped its check. Now it passes only with the value the older version
    implied (test_every = an epoch's steps: the paper's cadence), and is refused, naming the setting, otherwise."""
    s = AutoWU(make_opt(), 10, 10)
    for _ in range(3):
        s.step(1.0)
    old = s.state_dict()
    del old["config"]["test_every"]
    AutoWU(make_opt(), 10, 10).load_state_dict(old)  # the paper's cadence: as the old version behaved
    with pytest.raises(ValueError, match="saved without the setting 'test_every'.*test_every=5"):
        AutoWU(make_opt(), 10, 10, test_every=5).load_state_dict(old)
    del old["config"]["eta_min"]  # never optional
    with pytest.raises(ValueError, match="saved without the setting 'eta_min'"):
        AutoWU(make_opt(), 10, 10).load_state_dict(old)
