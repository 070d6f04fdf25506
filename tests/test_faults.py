"""Faults survived (issue 13, BENCHMARKS.md "Reliability"): a kill mid-video, a killed and restarted predict,
a kill during a checkpoint write, and the consistency fixes of the command line (predict/evaluate
--sequences, recvos models, the config-typo hint)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recvos.cli.main import main
from recvos.data.masks import read_mask
from recvos.data.synthetic import write_synthetic_dataset, write_synthetic_video
from recvos.errors import RecvosError

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds"), num_videos=3, num_frames=3, size=(40, 56))


def predict(*argv) -> int:
    return main(["predict", *map(str, argv), "--no-progress"])


# -------------------------------------------------------------------------- segment: interrupted, resumed
class Interrupt:
    """A progress bar that stops the run (as Ctrl-C would) after ``n`` masks."""

    def __init__(self, n: int) -> None:
        self.n = n

    def update(self, k: int = 1) -> None:
        self.n -= k
        if self.n == 0:
            raise KeyboardInterrupt


def test_resume_continues_from_the_last_written_mask(tmp_path, ckpt):
    from recvos.inference.segmenter import load_model
    from recvos.inference.video import segment_to_folder

    path = write_synthetic_video(tmp_path / "v.mp4", num_frames=10, size=(48, 64), masks_dir=tmp_path / "gt")
    seg = load_model(ckpt)
    first = tmp_path / "gt" / "00000.png"
    full = tmp_path / "full"
    segment_to_folder(seg, path, full, mask=first)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_to_folder(seg, path, out, mask=first, progress=Interrupt(4))
    assert len(list(out.glob("*.png"))) == 4
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rep = segment_to_folder(seg, path, out, mask=first, resume=True)
    assert rep.frames == 6  # only the frames after the last written one
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(10)]
    for name, mtime in before.items():  # written before the interruption: untouched, as an uninterrupted run
        assert (out / name).stat().st_mtime_ns == mtime
        np.testing.assert_array_equal(read_mask(out / name), read_mask(full / name))
    with pytest.raises(RecvosError, match="pick one"):
        segment_to_folder(seg, path, out, mask=first, resume=True, overwrite=True)
    with pytest.raises(RecvosError, match="overlay"):
        segment_to_folder(seg, path, out, mask=first, resume=True, overlay=tmp_path / "o.mp4")


@pytest.mark.slow
def test_sigkill_mid_video_then_resume(tmp_path, ckpt):
    """`recvos segment` killed with SIGKILL half-way: every mask on disk is a complete PNG, identical to an
    uninterrupted run; --resume writes the rest, one mask per frame."""
    n = 60
    path = write_synthetic_video(tmp_path / "v.mp4", num_frames=n, size=(48, 64), masks_dir=tmp_path / "gt")
    mask = tmp_path / "gt" / "00000.png"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}

    def cmd(out, *extra):
        return [sys.executable, "-m", "recvos", "segment", str(path), "--mask", str(mask), "-o", str(out),
                "--model", str(ckpt), "--no-progress", "--threads", "1", *extra]  # fmt: skip

    full = tmp_path / "full"
    subprocess.run(cmd(full), env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < n // 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < n, "the run was not killed half-way"
    for p in written:  # complete PNGs, identical to the uninterrupted run up to the kill
        np.testing.assert_array_equal(read_mask(p), read_mask(full / p.name))
    r = subprocess.run(cmd(out, "--resume"), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming after frame" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(n)]  # no temp file left
    for p in written:
        np.testing.assert_array_equal(read_mask(p), read_mask(full / p.name))


# -------------------------------------------------------------------------- predict: killed and restarted
def test_predict_resume_skips_finished_sequences(tmp_path, dataset, ckpt, capsys):
    out = tmp_path / "res"
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt) == 0
    seqs = sorted(p.name for p in out.iterdir())
    # as after a kill during the last sequence: one mask missing, a stale temporary file
    (out / seqs[-1] / "00002.png").unlink()
    (out / seqs[-1] / ".00002.png.x1y2.tmp").write_bytes(b"\x89PNG half")
    capsys.readouterr()
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt) == 2
    assert "--resume" in capsys.readouterr().err
    done = {s: {p.name: p.stat().st_mtime_ns for p in (out / s).iterdir()} for s in seqs[:-1]}
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt, "--resume") == 0
    assert "predicted 1 sequences, 3 frames" in capsys.readouterr().out
    for s, files in done.items():  # finished sequences untouched
        assert {p.name: p.stat().st_mtime_ns for p in (out / s).iterdir()} == files
    assert sorted(p.name for p in (out / seqs[-1]).iterdir()) == ["00000.png", "00001.png", "00002.png"]


@pytest.mark.slow
def test_predict_sigkill_then_resume(tmp_path, ckpt):
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=6, num_frames=12, size=(48, 64))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "recvos", "predict", "--dataset", "folder", "--root", str(root), "-o", str(out),
           "--model", str(ckpt), "--no-progress", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*/*.png"))) < 30:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [d for d in sorted(out.iterdir()) if len(list(d.glob("*.png"))) == 12]
    assert 0 < len(finished) < 6
    stamps = {d.name: sorted(p.stat().st_mtime_ns for p in d.glob("*.png")) for d in finished}
    r = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"predicted {6 - len(finished)} sequences" in r.stdout
    for d in sorted(out.iterdir()):
        assert sorted(p.name for p in d.iterdir()) == [f"{i:05d}.png" for i in range(12)]
    for name, st in stamps.items():
        assert sorted(p.stat().st_mtime_ns for p in (out / name).glob("*.png")) == st


# -------------------------------------------------------------------------- train: killed during a checkpoint
def test_checkpoint_write_killed_keeps_the_previous_one(tmp_path, monkeypatch):
    """A crash mid-write (here: torch.save dies after writing part of the file) leaves the previous checkpoint
    in place and loadable, and no temporary file (a SIGKILL leaves one, which resuming removes)."""
    from recvos.training.checkpoint import CheckpointManager, load_training_checkpoint

    mgr = CheckpointManager(tmp_path, keep_last=3)
    mgr.save({"step": 1, "state_dict": {"w": torch.ones(3)}}, 1)
    mgr.save_best(mgr.path_for(1))
    real = torch.save

    def dies(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise SystemExit("killed")  # not an Exception: nothing may catch it and carry on

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(SystemExit):
        mgr.save({"step": 2, "state_dict": {"w": torch.zeros(3)}}, 1)  # overwrite step 1 in place
    monkeypatch.setattr(torch, "save", real)
    ckpt = load_training_checkpoint(mgr.path_for(1))
    assert ckpt["step"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    assert load_training_checkpoint(mgr.best_path)["step"] == 1
    assert mgr.latest()[0]["step"] == 1 and sorted(p.name for p in mgr.dir.iterdir()) == [
        "best.pt",
        "step_00000001.pt",
    ]


@pytest.mark.slow
def test_sigkill_during_checkpoint_write(tmp_path):
    """A real SIGKILL while a large checkpoint is being written: the previous file stays loadable."""
    from recvos.training.checkpoint import load_training_checkpoint

    target = tmp_path / "ckpt.pt"
    script = (
        "import sys, torch\n"
        "from recvos.training.checkpoint import atomic_save\n"
        "atomic_save({'step': 1, 'state_dict': {'w': torch.ones(4)}}, sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "atomic_save({'step': 2, 'state_dict': {'w': torch.zeros(64, 1024, 1024)}}, sys.argv[1])\n"  # 256 MB: takes a while
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".ckpt.pt.") for p in tmp_path.iterdir()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = load_training_checkpoint(target)
    assert ckpt["step"] in (1, 2)  # the old one, or the new one if the kill came after the rename
    if ckpt["step"] == 1:
        assert any(p.name.startswith(".ckpt.pt.") for p in tmp_path.iterdir())  # it was killed mid-write


# -------------------------------------------------------------------------- command-line consistency
def test_sequences_take_spaces_or_commas_in_predict_and_evaluate(tmp_path, dataset, ckpt, capsys):
    from recvos.cli.options import sequence_names

    assert sequence_names(["a,b", "c", "a"]) == ["a", "b", "c"]
    seqs = sorted(p.name for p in (dataset / "JPEGImages").iterdir())
    out = tmp_path / "res"
    assert predict("--dataset", "folder", "--root", dataset, "-o", out, "--model", ckpt, "--sequences", f"{seqs[0]},{seqs[1]}") == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == seqs[:2]
    capsys.readouterr()
    gt = dataset / "Annotations"
    assert main(["evaluate", "--gt", str(gt), "--pred", str(out), "--sequences", seqs[0], seqs[1], "--workers", "1"]) == 0  # fmt: skip
    spaced = capsys.readouterr().out
    assert main(["evaluate", "--gt", str(gt), "--pred", str(out), "--sequences", f"{seqs[0]},{seqs[1]}", "--workers", "1"]) == 0  # fmt: skip
    assert capsys.readouterr().out == spaced and seqs[1] in spaced and seqs[2] not in spaced


def test_predict_checks_before_the_model(tmp_path, dataset, monkeypatch, capsys):
    import recvos.inference.segmenter as segmenter

    monkeypatch.setattr(segmenter, "load_model", lambda *a, **k: pytest.fail("model loaded before the error"))
    base = ["--dataset", "folder", "--root", dataset, "-o", tmp_path / "r"]
    for extra, needle in [
        (["--threads", "0"], "--threads 0"),
        (["--max-size", "2"], "--max-size"),
        (["--online-steps", "-1"], "--online-steps -1"),
        (["--sequences", "nope"], "nope"),
        (["--resume", "--overwrite"], "pick one"),
    ]:
        assert predict(*base, *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_models_lists_the_shipped_weights(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default_oneshot" in out and "default_zeroshot" in out and "--random-weights" in out
    from recvos.models.loading import read_manifest

    # the decoder width of each shipped VOS model is shown (the one-shot default changed width once)
    for e in read_manifest():
        if e["kind"] != "interactive":
            row = next(line for line in out.splitlines() if line.startswith(e["name"] + " "))
            assert f"width {e['architecture']['hidden_size']}" in row, row


def test_config_typo_hint_names_the_real_key():
    from recvos.training.config import load_config

    with pytest.raises(RecvosError, match=r"did you mean optim\.lr\b"):
        load_config(None, ["optim.learning_rate=1e-3"])
    with pytest.raises(RecvosError, match="train.batch_size"):
        load_config(None, ["train.bs=4"])
