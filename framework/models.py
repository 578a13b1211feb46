"""Models by name through timm's registry: the paper's CIFAR networks and two Fashion-MNIST networks are registered
here (``import framework.models`` makes ``timm.create_model('wrn28_10')`` work); ImageNet models (resnet50,
efficientnet_b0, vit_small_patch16_224) are timm's own. Nothing is ever downloaded (``pretrained=False``).

- ``cifar_resnet18``: ResNet-18 for 32x32 inputs (He et al. 2016 Section 4.2 style stem): 3x3 stride-1 stem conv, no
  max-pool, BasicBlocks [2, 2, 2, 2]; CIFAR-10 row of Table 1 (Kim et al. 2021).
- ``wrn28_10``: Wide-ResNet-28-10 (Zagoruyko & Komodakis 2016), pre-activation blocks, widths 160/320/640,
  dropout 0 by default; CIFAR-100 row of Table 1.
- ``fmnist_cnn``: the 4-layer network of the AutoLR paper's Appendix G (two 3x3 convs 32/64, max-pool, dropout 0.25,
  fc 9216->128, dropout 0.5, fc 128->classes: the pytorch/examples MNIST net its footnote 10 points to).
- ``fmnist_resnet``: a small ResNet for 1x28x28 inputs with BatchNorm, sized to train on a 2-core CPU
  (see scripts/bench_loader.py for the input side).
- ``fmnist_resnet_s2``: ``fmnist_resnet`` with a stride-2 stem (28 -> 14 -> 7 -> 4): ~4x cheaper, the
  convolutional candidate of the proxy screen (results/proxy_screen.md).
- ``fmnist_mlp``: 784-512-512-10 with BatchNorm, the proxy of the 200-epoch paper-regime table
  (results/paper_regime_protocol.md says why).
"""
from __future__ import annotations

import argparse

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from .seeding import seed_everything
from .engine import emulate_bf16

__all__ = ["create_model", "WideResNet", "FashionCNN", "SmallResNet", "MLP", "OUR_MODELS", "unknown_model"]

OUR_MODELS: list[str] = []  # the names this module registers with timm (filled by @_register, in file order)


def _register(fn):
    """timm's ``register_model``, and the name into :data:`OUR_MODELS` (the one list of our models)."""
    OUR_MODELS.append(fn.__name__)
    return register_model(fn)


def unknown_model(name: str) -> str:
    """The message for a ``--model`` that timm does not know, with the closest names."""
    import difflib
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)  # ours are registered there
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
    return f"--model {name!r} is not a timm model nor one of ours ({', '.join(OUR_MODELS)}): {hint}"


def create_model(args: argparse.Namespace, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """``timm.create_model(args.model, ...)`` with the dataset's classes and channels; ``--drop-path`` is passed only
    when set (models without stochastic depth reject a non-zero value). ``img_size`` goes to models that take one
    (ViTs); convolutional nets are size-agnostic."""
    kwargs: dict = {"num_classes": num_classes, "in_chans": in_chans}
    if getattr(args, "drop_path", None) is not None:
        kwargs["drop_path_rate"] = args.drop_path
    if args.model.startswith(("vit_", "deit_")) or args.model in SIZED_MODELS:
        kwargs["img_size"] = img_size
    try:
        return timm.create_model(args.model, pretrained=False, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(unknown_model(args.model)) from e
        raise


SIZED_MODELS = ("fmnist_cnn", "fmnist_mlp")  # ours whose layers are sized for the image (they take img_size)


def check_input(model: nn.Module, name: str, in_chans: int, img_size: int, device: torch.device) -> None:
    """Raise ConfigError unless ``model`` takes ``in_chans``-channel ``img_size`` images: one forward pass of a
    single zero image in eval mode without gradients (no running statistics, no random draws change), so a size the
    model cannot take is refused before the run directory is touched, not at the first training step."""
    from .config import ConfigError
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, img_size, img_size, device=device))
    except (RuntimeError, ValueError, AssertionError, IndexError, TypeError) as e:
        reason = " ".join(str(e).split())[:300]
        raise ConfigError(f"--model {name} cannot take {in_chans}-channel {img_size}x{img_size} images (--img-size "
                          f"{img_size}, --in-chans {in_chans}): {type(e).__name__}: {reason}; choose an image size "
                          "or a model that fit together") from None
    finally:
        model.train(training)


def build_model(args: argparse.Namespace, num_classes: int, in_chans: int, img_size: int, device: torch.device,
                sync_bn: bool = False) -> nn.Module:
    """The model as a run trains it: weights from ``args.seed`` (identical on every rank), SyncBatchNorm when
    ``sync_bn``, on ``device``, in channels_last when asked, its convolutions and linear layers made fast under CPU
    bf16 autocast (:func:`framework.engine.emulate_bf16`). train.py and scripts/bench_throughput.py use it."""
    seed_everything(args.seed)
    model = create_model(args, num_classes, in_chans, img_size)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if getattr(args, "amp", None) == "bf16" and device.type == "cpu":
        emulate_bf16(model)  # bf16's numbers at fp32 speed on a CPU without bf16 kernels
    return model


def _unused_cfg(kwargs: dict) -> dict:
    """Drop the pretrained-config keys timm passes to every entrypoint (our models have no weights to load)."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights (this project trains from scratch)")


# -- CIFAR ResNet-18 ---------------------------------------------------------------------------------------------
@_register
def cifar_resnet18(pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 for 32x32 images: timm's ResNet with BasicBlocks [2, 2, 2, 2], its 7x7/2 stem and max-pool
    replaced by one 3x3 stride-1 conv (the usual CIFAR variant; the network of the paper's CIFAR-10 rows)."""
    _no_pretrained("cifar_resnet18", pretrained)
    kwargs = _unused_cfg(kwargs)
    in_chans = kwargs.pop("in_chans", 3)
    model = ResNet(block=BasicBlock, layers=(2, 2, 2, 2), in_chans=in_chans, zero_init_last=False, **kwargs)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


# -- Wide-ResNet-28-10 -------------------------------------------------------------------------------------------
class _WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, plus the identity or a 1x1 conv
    shortcut taken from the pre-activated input when the shape changes (Zagoruyko & Komodakis 2016, Fig. 1d)."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float, drop_path: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.drop_rate > 0:
            o = F.dropout(o, p=self.drop_rate, training=self.training)
        return shortcut + self.drop_path(self.conv2(o))


class WideResNet(nn.Module):
    """WRN-depth-k: a 16-channel 3x3 stem, three groups of (depth-4)/6 pre-activation blocks with 16k/32k/64k
    channels (strides 1, 2, 2), BN-ReLU, global average pooling, linear classifier."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 100, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide-ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        blocks, cin, total, idx = [], 16, 3 * n, 0
        for g, (w, stride) in enumerate(zip(widths, (1, 2, 2))):
            for b in range(n):
                blocks.append(_WideBlock(cin, w, stride if b == 0 else 1, drop_rate, drop_path_rate * idx / total))
                cin, idx = w, idx + 1
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@_register
def wrn28_10(pretrained: bool = False, **kwargs) -> WideResNet:
    """Wide-ResNet-28-10 (36.5M parameters), the network of the paper's CIFAR-100 rows."""
    _no_pretrained("wrn28_10", pretrained)
    return WideResNet(depth=28, widen=10, **_unused_cfg(kwargs))


# -- Fashion-MNIST networks --------------------------------------------------------------------------------------
def _no_drop_path(name: str, kwargs: dict) -> dict:
    if kwargs.pop("drop_path_rate", 0.0):
        raise ValueError(f"{name} has no residual branches: --drop-path does not apply (leave it unset)")
    return kwargs


class FashionCNN(nn.Module):
    """conv3x3(32)-ReLU-conv3x3(64)-ReLU-maxpool2-dropout(0.25)-fc(128)-ReLU-dropout(0.5)-fc(classes) for 28x28:
    the 4-layer net of AutoLR (Appendix G.1/G.2, the pytorch/examples MNIST model), returning logits."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, drop_rate: float = 0.25):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.drop1 = nn.Dropout(drop_rate)
        side = (img_size - 4) // 2
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.drop2 = nn.Dropout(2 * drop_rate)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.drop1(x), 1)))
        return self.fc2(self.drop2(x))


@_register
def fmnist_cnn(pretrained: bool = False, **kwargs) -> FashionCNN:
    """AutoLR's Fashion-MNIST network (Appendix G.2), 1.2M parameters at 28x28."""
    _no_pretrained("fmnist_cnn", pretrained)
    return FashionCNN(**_no_drop_path("fmnist_cnn", _unused_cfg(kwargs)))


class SmallResNet(nn.Module):
    """A CPU-sized ResNet for 28x28: 3x3 stem (``widths[0]`` channels, stride 1), then one timm BasicBlock per
    width with stride 2 (28 -> 14 -> 7), global average pooling, linear classifier. BatchNorm throughout."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 10, in_chans: int = 1,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, stem_stride: int = 1):
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            down = nn.Sequential(nn.Conv2d(cin, w, 1, 2, bias=False), nn.BatchNorm2d(w))
            dp = DropPath(drop_path_rate * i / max(len(widths) - 2, 1)) if drop_path_rate > 0 else None
            blocks.append(BasicBlock(cin, w, stride=2, downsample=down, drop_path=dp))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.drop_rate = drop_rate
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1)
        return self.fc(F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0 else x)


@_register
def fmnist_resnet(pretrained: bool = False, **kwargs) -> SmallResNet:
    """Small ResNet for the project's Fashion-MNIST table (Table 1 shape on a CPU)."""
    _no_pretrained("fmnist_resnet", pretrained)
    return SmallResNet(**_unused_cfg(kwargs))


@_register
def fmnist_resnet_s2(pretrained: bool = False, **kwargs) -> SmallResNet:
    """``fmnist_resnet`` with a stride-2 stem: the blocks see 14x14 and 7x7 maps (~1.6M multiply-adds per image
    against ~5.5M), the convolutional candidate of the proxy screen (results/proxy_screen.md)."""
    _no_pretrained("fmnist_resnet_s2", pretrained)
    return SmallResNet(stem_stride=2, **_unused_cfg(kwargs))


class MLP(nn.Module):
    """Flatten, then ``depth`` x (Linear without bias -> BatchNorm1d -> ReLU) of width ``width``, then a linear
    classifier. The proxy network of results/paper_regime.md: fast enough on a CPU for the paper's 200-epoch budget
    (Linear layers run as bf16 matrix products under ``--amp bf16``), BatchNorm makes each hidden layer's weight
    scale-invariant as in the paper's ResNets (so AdamP's projection applies)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, width: int = 512,
                 depth: int = 2, drop_rate: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [nn.Flatten()]
        cin = in_chans * img_size * img_size
        for _ in range(depth):
            layers += [nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.drop_rate = drop_rate
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0 else x)


@_register
def fmnist_mlp(pretrained: bool = False, **kwargs) -> MLP:
    """784-512-512-10 MLP with BatchNorm for Fashion-MNIST (the 200-epoch paper-regime proxy on a CPU)."""
    _no_pretrained("fmnist_mlp", pretrained)
    return MLP(**_no_drop_path("fmnist_mlp", _unused_cfg(kwargs)))
