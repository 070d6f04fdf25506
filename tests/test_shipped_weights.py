"""The weights shipped inside the package: they load, their hash verifies, and they segment real video."""

from __future__ import annotations

import numpy as np
import pytest

from recvos.errors import RecvosError
from recvos.models.loading import default_checkpoint_path, load_checkpoint, read_manifest, sha256_file

SIZE_LIMIT = 25_000_000  # bytes, all shipped weights together


def test_manifest_lists_both_defaults_within_the_size_budget():
    entries = read_manifest()
    kinds = {e["kind"] for e in entries}
    assert {"one-shot", "zero-shot", "interactive"} <= kinds
    total = 0
    for e in entries:
        path = default_checkpoint_path(e["kind"])
        assert sha256_file(path) == e["sha256"]
        total += path.stat().st_size
        for key in ("architecture", "preset", "data", "commit", "metrics"):
            assert key in e
    assert total <= SIZE_LIMIT


@pytest.mark.parametrize("kind", ["one-shot", "zero-shot", "interactive"])
def test_shipped_weights_load_as_the_manifest_says(kind):
    """The file rebuilds the architecture its manifest entry records, for the task of its kind."""
    entry = next(e for e in read_manifest() if e["kind"] == kind)
    model = load_checkpoint(default_checkpoint_path(kind))
    assert model.mode == kind and model.name == entry["architecture"]["model"]
    recorded = {
        k: v for k, v in entry["architecture"].items() if k not in ("model", "class_head", "num_classes")
    }
    assert {k: model.config[k] for k in recorded} == recorded


def test_a_tampered_file_is_rejected(tmp_path):
    import json
    import shutil

    entry = next(e for e in read_manifest() if e["kind"] == "one-shot")
    src = default_checkpoint_path("one-shot")
    dst = tmp_path / entry["file"]
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:  # flip one byte near the end
        f.seek(-100, 2)
        b = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([b[0] ^ 0xFF]))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "recvos-weights/1", "entries": [entry]}))
    with pytest.raises(RecvosError, match="SHA-256"):
        default_checkpoint_path("one-shot", manifest=manifest)


@pytest.mark.slow
def test_default_one_shot_beats_copying_the_first_mask(davis2016_root):
    """On a real DAVIS-2016 val sequence the default is well above the copy-first-mask baseline."""
    from recvos.data.datasets import open_dataset
    from recvos.evaluation.metrics import jaccard
    from recvos.inference.segmenter import load_model

    seq = open_dataset("davis2016", davis2016_root, "val")["blackswan"]
    n = 30
    gt = np.stack([seq.load_mask(i) for i in range(n)]) == 1
    seg = load_model()
    state = seg.init_state((seq.load_frame(i) for i in range(n)), output_size=seq.mask_size)
    seg.add_mask(state, frame_idx=0, mask=seq.load_mask(0))
    pred = np.stack([ids == 1 for _, _, ids in seg.propagate(state)])
    j_model = jaccard(gt[1:], pred[1:]).mean()
    j_copy = jaccard(gt[1:], np.repeat(gt[:1], n - 1, 0)).mean()
    assert j_model > j_copy + 0.1, (j_model, j_copy)


@pytest.mark.shared
def test_shipped_prompt_head_segments_a_real_frame_from_a_box_and_a_click(davis2016_root):
    """On a held-out DAVIS-2016 train frame (never trained on), the shipped head gets the object from its
    box, and from one click at its most interior point, much better than GrabCut does from the box."""
    from recvos.data.datasets import open_dataset
    from recvos.inference.inputs import resize_binary
    from recvos.prompts import iou, mask_from_prompts, next_click, tight_box

    seq = open_dataset("davis2016", davis2016_root, "train")["mallard-fly"]
    frame = seq.load_frame(20)
    gt = resize_binary(seq.load_mask(20) > 0, frame.shape[:2])
    box = tight_box(gt)
    learned = iou(mask_from_prompts(frame, box=box), gt)
    grabcut = iou(mask_from_prompts(frame, box=box, method="grabcut"), gt)
    y, x, _ = next_click(gt)
    clicked = iou(mask_from_prompts(frame, points=[(x, y)]), gt)
    assert learned > 0.75 and clicked > 0.7 and learned > grabcut + 0.3, (learned, clicked, grabcut)
