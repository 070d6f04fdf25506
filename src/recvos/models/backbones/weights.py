"""Where ImageNet weights come from: local files only, nothing is ever downloaded."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from recvos.errors import RecvosError

__all__ = ["WeightsSource", "TorchvisionWeights", "read_state_file"]


class WeightsSource(ABC):
    """The ImageNet weights of one registered backbone."""

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the weights come from, e.g. "torchvision file in the torch hub cache"."""

    @abstractmethod
    def path(self) -> Path | None:
        """The file, present or where it must be put; None when that is unknown (package not installed)."""

    @abstractmethod
    def load(self, backbone: str) -> dict[str, torch.Tensor]:
        """The state dict (of the backbone or its source classifier); :class:`RecvosError` if unavailable."""

    def location(self) -> str:
        """The file, or how to get it."""
        return str(self.path())

    def available(self) -> bool:
        path = self.path()
        return path is not None and path.is_file()


@dataclass(frozen=True)
class TorchvisionWeights(WeightsSource):
    """torchvision's ``<enum>.IMAGENET1K_V1`` file, read from ``<torch.hub.get_dir()>/checkpoints`` if there."""

    enum: str  # e.g. "ResNet18_Weights"

    @property
    def description(self) -> str:
        return "torchvision file in the torch hub cache"

    def path(self) -> Path:
        import torchvision.models as tvm

        url = getattr(tvm, self.enum).IMAGENET1K_V1.url
        return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]

    def load(self, backbone: str) -> dict[str, torch.Tensor]:
        path = self.path()
        if not path.is_file():
            raise RecvosError(
                f"{path}: ImageNet weights for {backbone} are not in the torch hub cache and recvos never "
                f"downloads; copy torchvision's {path.name} there (or pass backbone_weights=PATH, or None for "
                f"random init)"
            )
        return torch.load(path, map_location="cpu", weights_only=True)


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``'d state dict (or ``{"state_dict": ...}``) read with ``weights_only=True``."""
    if not path.is_file():
        raise RecvosError(f"{path}: backbone weights file not found; pass an existing state-dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise RecvosError(
            f"{path}: cannot read a state dict ({type(e).__name__}: {e}); pass a torch.save'd state dict"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RecvosError(
            f"{path}: not a state dict (a mapping of names to tensors); pass a torch.save'd state dict"
        )
    return dict(obj)
