"""`recvos predict` over datasets: layout, annotation resolution, later objects, shards, the YouTube-VOS zip."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recvos.cli.main import main
from recvos.data.datasets import open_dataset
from recvos.data.masks import read_mask, write_mask
from recvos.data.synthetic import write_synthetic_dataset
from recvos.errors import RecvosError
from recvos.inference.dataset import parse_shard, prompt_sequence, shard_names
from recvos.inference.segmenter import Segmenter
from recvos.models.factory import build_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds"), num_videos=5, num_frames=3, size=(40, 56))


def predict(*argv) -> int:
    return main(["predict", *map(str, argv), "--no-progress"])


def frames_of(root: Path, seq: str) -> list[str]:
    return sorted(p.stem for p in (root / "JPEGImages" / seq).iterdir())


def test_predict_writes_every_frame_at_mask_size(tmp_path, dataset, ckpt, capsys):
    out = tmp_path / "res"
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt) == 0
    seqs = sorted(p.name for p in (dataset / "JPEGImages").iterdir())
    assert sorted(p.name for p in out.iterdir()) == seqs
    for seq in seqs:
        assert sorted(p.stem for p in (out / seq).glob("*.png")) == frames_of(dataset, seq)
        first = read_mask(out / seq / "00000.png")
        np.testing.assert_array_equal(first, read_mask(dataset / "Annotations" / seq / "00000.png"))
    assert "predicted 5 sequences, 15 frames" in capsys.readouterr().out


def test_predict_with_flip_runs_the_segmenter_with_flip(tmp_path, dataset, ckpt, monkeypatch):
    import recvos.inference.segmenter as segmenter

    made = []
    real = segmenter.load_model

    def spy(*a, **kw):
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(segmenter, "load_model", spy)
    out = tmp_path / "res"
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt, "--flip") == 0
    assert len(made) == 1 and made[0].flip
    assert len(list(out.rglob("*.png"))) == 15


def test_outputs_follow_the_annotation_resolution(tmp_path, ckpt):
    """Frames at half the mask size (like the shared DAVIS-2016 copy): outputs at the mask size."""
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=1, num_frames=3, size=(48, 64))
    for p in (root / "JPEGImages").rglob("*.png"):
        Image.open(p).resize((32, 24), Image.BICUBIC).save(p)
    out = tmp_path / "res"
    assert (
        predict("--dataset", "davis2017", "--root", root, "--split", "val", "-o", out, "--model", ckpt) == 0
    )
    pngs = list(out.rglob("*.png"))
    assert len(pngs) == 3 and all(read_mask(p).shape == (48, 64) for p in pngs)


def test_objects_appearing_later_use_only_their_first_mask(tmp_path, ckpt):
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=1, num_frames=4, size=(40, 56))
    seq_name = sorted(p.name for p in (root / "Annotations").iterdir())[0]
    ann = root / "Annotations" / seq_name
    for t in (0, 1):  # object 2 first appears at frame 2
        m = read_mask(ann / f"{t:05d}.png")
        write_mask(ann / f"{t:05d}.png", np.where(m == 2, 0, m))
    seq = open_dataset("folder", root)[seq_name]
    assert seq.first_frame == {1: 0, 2: 2}
    loaded = []
    original = seq.load_mask
    seq.load_mask = lambda i: loaded.append(i) or original(i)
    seg = Segmenter(build_model("rvos-t", hidden_size=16))
    state = seg.init_state([seq.load_frame(i) for i in range(4)])
    prompt_sequence(seg, state, seq)
    assert loaded == [0, 2]  # later ground truth is never read
    out = {t: (ids, ids_map) for t, ids, ids_map in seg.propagate(state)}
    assert out[0][0] == [1] and out[1][0] == [1] and out[2][0] == [1, 2]
    np.testing.assert_array_equal(out[2][1] == 2, read_mask(ann / "00002.png") == 2)


def test_shards_partition_the_dataset(tmp_path, dataset, ckpt):
    names = [f"v{i}" for i in range(11)]
    for n in (1, 2, 3, 4, 11, 12):
        parts = [shard_names(names, i, n) for i in range(n)]
        flat = [x for p in parts for x in p]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert shard_names(names[::-1], 0, 3) == shard_names(names, 0, 3)  # deterministic in any order
    out = tmp_path / "res"
    seen = []
    for i in range(3):
        assert (
            predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt, "--shard", f"{i}/3")
            == 0
        )
        now = sorted(p.name for p in out.iterdir())
        seen.append(set(now) - set().union(*seen) if seen else set(now))
    assert sum(len(s) for s in seen) == 5 and set().union(*seen) == {
        p.name for p in (dataset / "JPEGImages").iterdir()
    }
    assert all(seen)


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "a/b", "1", "0/0"):
        with pytest.raises(RecvosError, match="--shard"):
            parse_shard(bad)


def test_existing_results_need_overwrite(tmp_path, dataset, ckpt, capsys):
    out = tmp_path / "res"
    args = (
        "--dataset",
        "folder",
        "--root",
        dataset,
        "-o",
        out,
        "--model",
        ckpt,
        "--sequences",
        "synthetic000",
    )
    assert predict(*args) == 0
    assert predict(*args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert predict(*args, "--overwrite") == 0


def test_youtube_vos_zip_holds_annotated_frames_only(tmp_path, ckpt):
    src = write_synthetic_dataset(tmp_path / "src", num_videos=2, num_frames=4, size=(40, 56))
    root = tmp_path / "ytvos"
    meta = {"videos": {}}
    for seq in sorted(p.name for p in (src / "JPEGImages").iterdir()):
        vid = f"vid_{seq[-1]}"
        shutil.copytree(src / "JPEGImages" / seq, root / "valid" / "JPEGImages" / vid)
        (root / "valid" / "Annotations" / vid).mkdir(parents=True)
        shutil.copy(
            src / "Annotations" / seq / "00000.png", root / "valid" / "Annotations" / vid / "00000.png"
        )
        frames = ["00000", "00002"]  # the frames to be evaluated (YouTube-VOS: every 5th)
        meta["videos"][vid] = {
            "objects": {"1": {"category": "x", "frames": frames}, "2": {"category": "y", "frames": frames}}
        }
    (root / "valid" / "meta.json").write_text(json.dumps(meta))
    out = tmp_path / "res"
    assert (
        predict(
            "--dataset",
            "youtube-vos",
            "--root",
            root,
            "--split",
            "valid",
            "-o",
            out,
            "--model",
            ckpt,
            "--format",
            "youtube-vos-zip",
        )
        == 0
    )
    with zipfile.ZipFile(out / "submission.zip") as zf:
        names = sorted(zf.namelist())
    assert names == sorted(f"Annotations/{v}/{f}.png" for v in meta["videos"] for f in ("00000", "00002"))
    (out / "submission.zip").unlink()
    assert predict("--dataset", "youtube-vos", "--root", root, "-o", out, "--zip-only") == 0
    assert (out / "submission.zip").is_file()


@pytest.mark.shared
def test_davis2016_outputs_are_854x480(tmp_path, davis2016_root, ckpt):
    out = tmp_path / "res"
    assert (
        predict(
            "--dataset",
            "davis2016",
            "--root",
            davis2016_root,
            "-o",
            out,
            "--model",
            ckpt,
            "--sequences",
            "blackswan",
            "--max-size",
            64,
        )
        == 0
    )
    pngs = sorted((out / "blackswan").glob("*.png"))
    assert len(pngs) == len(list((davis2016_root / "JPEGImages" / "240p" / "blackswan").glob("*.jpg")))
    with Image.open(pngs[0]) as im:
        assert im.size == (854, 480)
