"""torchvision ResNets (paper backbones): stem (stride 4), layer1 (f4), layer2 (f8), layer3 (f16), layer4 (f32)."""

from __future__ import annotations

import torch
from torch import nn

from recvos.models.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from recvos.models.backbones.registry import register_backbone
from recvos.models.backbones.weights import TorchvisionWeights

__all__ = ["ResNetBackbone"]


class ResNetBackbone(Backbone):
    """torchvision ``resnet{depth}`` without its pooling and classifier (``fc.*`` keys are dropped on load)."""

    head_prefixes = ("fc.",)

    def __init__(self, depth: int):
        import torchvision.models as tvm

        net = getattr(tvm, f"resnet{depth}")(weights=None)
        expansion = type(net.layer1[0]).expansion  # 1 (BasicBlock) or 4 (Bottleneck)
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


@register_backbone(channels=(64, 128, 256, 512), weights=TorchvisionWeights("ResNet18_Weights"))
def resnet18() -> Backbone:
    return ResNetBackbone(18)


@register_backbone(channels=(64, 128, 256, 512), weights=TorchvisionWeights("ResNet34_Weights"))
def resnet34() -> Backbone:
    return ResNetBackbone(34)


@register_backbone(channels=(256, 512, 1024, 2048), weights=TorchvisionWeights("ResNet50_Weights"))
def resnet50() -> Backbone:
    return ResNetBackbone(50)


@register_backbone(channels=(256, 512, 1024, 2048), weights=TorchvisionWeights("ResNet101_Weights"))
def resnet101() -> Backbone:
    return ResNetBackbone(101)
