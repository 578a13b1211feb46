"""framework/models.py: our networks are in timm's registry, have the published shapes and sizes, and
create_model builds timm's own models from train.py's arguments."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch

import framework.models  # noqa: F401  (registers the models)
from framework.models import create_model

OURS = {"cifar_resnet18": (3, 32), "wrn28_10": (3, 32), "fmnist_cnn": (1, 28), "fmnist_resnet": (1, 28),
        "fmnist_resnet_s2": (1, 28), "fmnist_mlp": (1, 28)}  # (channels, side) of every model we register


def test_every_registered_model_is_covered():
    assert sorted(OURS) == sorted(framework.models.OUR_MODELS)


def test_the_stride_2_stem_works_at_14x14():
    from framework.models import SmallResNet
    m = timm.create_model("fmnist_resnet_s2", num_classes=10, in_chans=1).eval()
    assert isinstance(m, SmallResNet) and m.stem[0].stride == (2, 2)
    assert m.stem(torch.randn(2, 1, 28, 28)).shape == (2, 16, 14, 14)


def args(model: str, drop_path=None) -> argparse.Namespace:
    return argparse.Namespace(model=model, drop_path=drop_path)


@pytest.mark.parametrize("name", sorted(OURS))
def test_registered_in_timm_and_output_shape(name):
    assert name in timm.list_models()
    in_chans, size = OURS[name]
    model = timm.create_model(name, num_classes=7, in_chans=in_chans).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_published_sizes():
    # WRN-28-10 on CIFAR-100: 36.5M parameters (Zagoruyko & Komodakis 2016, Table 1)
    assert 36.4e6 < n_params(timm.create_model("wrn28_10", num_classes=100)) < 36.6e6
    # CIFAR ResNet-18: 11.17M parameters for 10 classes
    assert 11.1e6 < n_params(timm.create_model("cifar_resnet18", num_classes=10)) < 11.2e6
    # the paper-regime proxy: 784 -> 512 -> 512 (no bias before BatchNorm) -> 10
    assert n_params(timm.create_model("fmnist_mlp", num_classes=10)) == 784 * 512 + 2 * 512 + 512 * 512 + 2 * 512 + \
        5130
    # the pytorch/examples MNIST net of AutoLR Appendix G: 32/64 3x3 convs, fc 9216->128->10
    assert n_params(timm.create_model("fmnist_cnn", num_classes=10)) == 320 + 18_496 + 9216 * 128 + 128 + 1290


def test_cifar_resnet18_keeps_resolution_in_the_stem():
    model = timm.create_model("cifar_resnet18", num_classes=10).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 32, 32))
    assert feats.shape == (1, 512, 4, 4)  # 32 -> 32 -> 16 -> 8 -> 4: no stride-2 stem, no max-pool


def test_create_model_passes_dataset_shape_and_drop_path():
    m = create_model(args("wrn28_10", drop_path=0.1), num_classes=5, in_chans=3, img_size=32)
    assert m.fc.out_features == 5 and any(type(x).__name__ == "DropPath" for x in m.modules())
    vit = create_model(args("vit_small_patch16_224", drop_path=0.1), num_classes=3, in_chans=3, img_size=32)
    with torch.no_grad():
        assert vit.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    r50 = create_model(args("resnet50"), num_classes=4, in_chans=1, img_size=64)
    with torch.no_grad():
        assert r50.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 4)


def test_bad_requests_are_clear_errors():
    with pytest.raises(ValueError, match="not a timm model"):
        create_model(args("no_such_net"), num_classes=10, in_chans=3, img_size=32)
    with pytest.raises(ValueError, match="--drop-path does not apply"):
        create_model(args("fmnist_cnn", drop_path=0.1), num_classes=10, in_chans=1, img_size=28)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("wrn28_10", pretrained=True)


def test_fmnist_resnet_learns_synthetic_data():
    from framework.datasets import SyntheticImages
    torch.manual_seed(0)
    x, y = SyntheticImages(128, 10, 1, 28, seed=0).tensors()
    x = (x.float() / 255 - 0.5) / 0.25
    model = create_model(args("fmnist_resnet"), num_classes=10, in_chans=1, img_size=28)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# -- bf16 on a CPU without bf16 kernels (framework.engine.emulate_bf16) ---------------------------------------
def _emulated(model, monkeypatch):
    import framework.engine as engine
    monkeypatch.setattr(engine, "cpu_bf16_native", lambda: False)  # also on a CPU with AMX: the same code runs
    monkeypatch.delenv("AUTOWU_BF16", raising=False)
    return engine.emulate_bf16(model)


def _bf16_step(model, x, y):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    return out


@pytest.mark.parametrize("layer", [0, 2], ids=["conv", "linear"])
def test_emulated_bf16_gives_a_bf16_kernels_numbers(monkeypatch, layer):
    """Each output of an emulated bf16 convolution or linear layer is within one bf16 rounding step of PyTorch's
    own bf16 kernel (the sums are fp32 in both; only their order differs), the outputs and the weight gradient are
    bf16 values like the kernel's, and fp32 (no rounding of the operands) is further away."""
    import copy
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(512, 4))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    emu = copy.deepcopy(ref)
    assert _emulated(emu, monkeypatch) == 2
    out_ref, out_emu = _bf16_step(ref, x, y), _bf16_step(emu, x, y)
    assert out_emu.dtype == out_ref.dtype == torch.bfloat16
    inp = x if layer == 0 else ref[:2](x).detach()  # the layer's own input, in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ref[layer](inp).float(), emu[layer](inp).float()
    one_ulp = a.abs() * 2.0 ** -7 + 1e-6
    assert ((b - a).abs() <= one_ulp).all()
    with torch.autocast("cpu", enabled=False):
        unrounded = ref[layer](inp)
    assert (unrounded - a).abs().sum() > (b - a).abs().sum()
    for m in (ref, emu):
        g = m[layer].weight.grad
        assert torch.equal(g, g.bfloat16().float())  # a bf16 kernel's weight gradient, cast to the fp32 weight
    rel = (emu[layer].weight.grad - ref[layer].weight.grad).norm() / ref[layer].weight.grad.norm()
    assert rel < 1e-2


def test_emulated_bf16_changes_nothing_else(monkeypatch):
    """Outside bf16 autocast the patched model computes exactly what it did; the state dict, the classes and a
    deepcopy (AutoLR's rollback snapshots) are unaffected, and the copy's convolutions are its own."""
    import copy
    torch.manual_seed(0)
    model = timm.create_model("fmnist_resnet_s2", num_classes=10, in_chans=1).eval()
    x = torch.randn(4, 1, 28, 28)
    before, keys = model(x), list(model.state_dict())
    n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert _emulated(model, monkeypatch) == n_layers > 0
    assert torch.equal(model(x), before) and list(model.state_dict()) == keys
    twin = copy.deepcopy(model)
    conv = next(m for m in twin.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv._conv_forward.__self__ is conv
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(twin(x), model(x))


def test_emulation_is_left_out_where_bf16_kernels_exist_or_native_is_asked(monkeypatch):
    import framework.engine as engine
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2, 2))
    monkeypatch.setattr(engine, "cpu_bf16_native", lambda: True)
    assert engine.emulate_bf16(model) == 0
    assert "_conv_forward" not in vars(model[0]) and "forward" not in vars(model[1])
    assert engine.bf16_kernels("bf16", torch.device("cpu")) == "native"
    monkeypatch.setattr(engine, "cpu_bf16_native", lambda: False)
    monkeypatch.setenv("AUTOWU_BF16", "native")
    assert engine.emulate_bf16(model) == 0
    assert engine.bf16_kernels("bf16", torch.device("cpu")) == "reference"
    monkeypatch.delenv("AUTOWU_BF16")
    assert engine.bf16_kernels("bf16", torch.device("cpu")) == "emulated"
    assert engine.bf16_kernels("none", torch.device("cpu")) is None
