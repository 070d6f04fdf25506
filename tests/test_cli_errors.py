"""Every mistake a user can make with `recvos segment` is one line, exit code 2, checked before the model loads,
and nothing already written is lost (issue 13: the holes a new-user trial found, each with its test)."""

from __future__ import annotations

import errno
import os
import struct
import subprocess

import av
import numpy as np
import pytest
from PIL import Image

from recvos.cli.main import main
from recvos.data.frames import VideoFrames
from recvos.data.masks import read_mask, write_mask
from recvos.data.synthetic import write_synthetic_video
from recvos.errors import RecvosError

N = 6


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    path = write_synthetic_video(d / "clip.mp4", num_frames=N, size=(48, 64), masks_dir=d / "gt")
    return path, d / "gt"


def run(*argv) -> int:
    return main(["segment", *map(str, argv), "--no-progress"])


def one_line_error(capsys, *needles: str) -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recvos: error: "), cap.err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is loaded: input errors must come before it (it takes seconds)."""
    import recvos.inference.segmenter as segmenter

    def forbidden(*a, **k):
        raise AssertionError("the model was loaded before the input error was reported")

    monkeypatch.setattr(segmenter, "load_model", forbidden)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs as root (root ignores permissions), mode 0555 otherwise."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


# ------------------------------------------------------------------------------------ option values
@pytest.mark.parametrize(
    "option, needle",
    [
        (["--threads", "0"], "--threads 0"),
        (["--memory", "0"], "--memory 0"),
        (["--memory", "65"], "--memory 65"),
        (["--threads", "-1"], "--threads -1"),
        (["--max-size", "1"], "max_size (--max-size) 1"),
        (["--max-size", "-5"], "max_size (--max-size) -5"),
        (["--quality", "--max-size", "360"], "--quality is --max-size 480"),
        (["--online-steps", "-3"], "--online-steps -3"),
        (["--stride", "0"], "--stride 0"),
        (["--start", "99"], "--start 99"),
        (["--end", "0"], "--end 0"),
        (["--flip", "--runtime", "onnxruntime"], "--flip runs each frame and its mirror image"),
    ],
)
def test_bad_option_values_are_one_line_before_the_model(tmp_path, video, no_model, capsys, option, needle):
    path, gt = video
    assert run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out", *option) == 2
    one_line_error(capsys, needle)
    assert not (tmp_path / "out").exists()


def test_max_size_is_checked_in_the_python_api_too(ckpt):
    from recvos.inference.segmenter import Segmenter
    from recvos.models.loading import load_checkpoint

    with pytest.raises(RecvosError, match="at least 16"):
        Segmenter(load_checkpoint(ckpt), max_size=1)


# ------------------------------------------------------------------------------------ input errors first
def test_input_errors_come_before_the_model_and_the_progress_bar(tmp_path, video, no_model, capsys):
    path, gt = video
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing.mp4", "--mask", gt / "00000.png"], "missing.mp4"),
        ([path, "--mask", tmp_path / "missing.png"], "missing.png"),
        ([path], "--zero-shot"),
        ([path, "--masks", tmp_path / "nodir"], "nodir"),
        ([path, "--box", "1,2,30,40", "--frame", "50"], "--frame 50"),
    ]
    for argv, needle in cases:
        # progress bars would go to stderr: the error must be its only line
        assert main(["segment", *map(str, argv), "-o", str(out)]) == 2
        one_line_error(capsys, needle)
    assert not out.exists()


def test_mask_with_ids_above_255_is_refused_up_front(tmp_path, video, no_model, capsys):
    path, _ = video
    ids = np.zeros((48, 64), np.uint16)
    ids[10:20, 10:20] = 300
    Image.fromarray(ids).save(tmp_path / "many.png")  # 16-bit greyscale
    assert run(path, "--mask", tmp_path / "many.png", "-o", tmp_path / "out") == 2
    one_line_error(capsys, "many.png", "300", "255")


def test_mask_ids_above_255_in_the_python_api(ckpt):
    from recvos.inference.segmenter import load_model

    seg = load_model(ckpt)
    frames = [np.zeros((48, 64, 3), np.uint8)] * 2
    state = seg.init_state(frames)
    ids = np.zeros((48, 64), np.int64)
    ids[:5, :5] = 256
    with pytest.raises(RecvosError, match="above 255"):
        seg.add_mask(state, 0, ids)
    with pytest.raises(RecvosError, match="above 255"):
        seg.add_mask(state, 0, {300: ids > 0})


def test_convert_masks(tmp_path, video, ckpt, capsys):
    """`recvos segment` suggested --convert-masks without having it: colour masks now convert with it."""
    path, gt = video
    ids = read_mask(gt / "00000.png")
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    rgb[ids == 1] = (255, 0, 0)
    rgb[ids == 2] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    assert run(path, "--mask", tmp_path / "colour.png", "-o", tmp_path / "a", "--model", ckpt) == 2
    one_line_error(capsys, "colour.png", "--convert-masks")
    out = tmp_path / "b"
    assert run(path, "--mask", tmp_path / "colour.png", "-o", out, "--model", ckpt, "--convert-masks") == 0
    first = read_mask(out / "00000.png")
    assert len(np.unique(first)) == 3 and ((first > 0) == (ids > 0)).all()


def test_untrained_model_names_need_random_weights(tmp_path, video, capsys):
    path, gt = video
    assert run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out", "--model", "rvos-st") == 2
    one_line_error(capsys, "rvos-st", "--random-weights")
    assert not (tmp_path / "out").exists()
    from recvos.models.loading import resolve_model

    with pytest.raises(RecvosError, match="random weights"):
        resolve_model("rvos-t", hidden_size=16)
    assert resolve_model("rvos-t", hidden_size=16, allow_random=True).name == "rvos-t"


def test_zero_shot_with_a_one_shot_model(tmp_path, video, ckpt, capsys):
    path, _ = video
    assert run(path, "--zero-shot", "-o", tmp_path / "out", "--model", ckpt) == 2
    one_line_error(capsys, "one-shot model", "zero-shot")
    assert not (tmp_path / "out").exists()  # the folder created for it is removed again


def test_model_mode_errors_in_the_python_api():
    """Done by the lead (RecurrentVOS.check_mode): each fails with a RecvosError naming the mode and the fix."""
    from recvos.inference.segmenter import Segmenter
    from recvos.models.factory import build_model

    frames = [np.zeros((48, 64, 3), np.uint8)] * 2
    zero = Segmenter(build_model("rvos-s", mode="zero-shot", hidden_size=16, max_objects=2))
    with pytest.raises(RecvosError, match="zero-shot model"):
        zero.add_mask(zero.init_state(frames), 0, np.ones((48, 64), np.int64))
    one = Segmenter(build_model("rvos-t", hidden_size=16))
    with pytest.raises(RecvosError, match="one-shot model and cannot run zero-shot"):
        next(one.propagate(one.init_state(frames), zero_shot=True))


# ------------------------------------------------------------------------------------ output paths
def test_read_only_output_folder(tmp_path, video, readonly_dir, no_model, capsys):
    path, gt = video
    assert run(path, "--mask", gt / "00000.png", "-o", readonly_dir / "out") == 2
    one_line_error(capsys, str(readonly_dir / "out"))
    assert run(path, "--mask", gt / "00000.png", "-o", readonly_dir) == 2
    one_line_error(capsys, str(readonly_dir))


def test_permission_error_is_one_line(tmp_path, video, no_model, monkeypatch, capsys):
    """Injected: creating files fails with EACCES (what a read-only folder gives a normal user)."""
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    path, gt = video
    assert run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out") == 2
    one_line_error(capsys, str(tmp_path / "out"), "Permission denied")


def test_unwritable_overlay_fails_before_any_work(tmp_path, video, readonly_dir, no_model, capsys):
    path, gt = video
    out = tmp_path / "out"
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--overlay", readonly_dir / "ov.mp4") == 2
    one_line_error(capsys, str(readonly_dir))
    assert not list(out.glob("*.png"))
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--overlay", tmp_path / "ov.avi") == 2
    one_line_error(capsys, "ov.avi", ".mp4")


def test_overlay_parent_is_created_like_the_mask_folder(tmp_path, video, ckpt):
    path, gt = video
    ov = tmp_path / "new" / "sub" / "ov.mp4"
    assert (
        run(path, "--mask", gt / "00000.png", "-o", tmp_path / "a" / "b", "--model", ckpt, "--overlay", ov)
        == 0
    )
    with av.open(str(ov)) as c:
        assert sum(1 for _ in c.decode(video=0)) == N


def test_outputs_follow_the_umask(tmp_path, video, ckpt):
    path, gt = video
    old = os.umask(0o022)
    try:
        assert run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out", "--model", ckpt) == 0
    finally:
        os.umask(old)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "out").glob("*.png")}
    assert modes == {0o644}


# ------------------------------------------------------------------------------------ full disk
def full_disk(after: int):
    """PIL's ``Image.save`` that writes half a PNG, then fails with ENOSPC, from the ``after``-th image on."""
    real = Image.Image.save
    calls = [0]

    def save(img, fp, *a, **k):
        calls[0] += 1
        if calls[0] <= after:
            return real(img, fp, *a, **k)
        fp.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path, video, ckpt, monkeypatch, capsys):
    path, gt = video
    out = tmp_path / "out"
    monkeypatch.setattr(Image.Image, "save", full_disk(after=3))
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt) == 2
    one_line_error(capsys, "00003.png", "No space left", "--resume")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]  # no temp file
    assert all(read_mask(p).shape == (48, 64) for p in out.iterdir())
    # space freed: --resume completes the video, one mask per frame
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt, "--resume") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(N)]


@pytest.mark.slow
def test_full_tmpfs(tmp_path, video, ckpt, capsys):
    """A real full disk: a 64 KiB tmpfs (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path, gt = video
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill it, then free room for a few masks
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, max(0, filler.stat().st_size - 3 * 4096))
        out = disk / "out"
        code = run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "No space left" in err[0]
        kept = list(out.iterdir()) if out.is_dir() else []
        assert not [p for p in kept if p.suffix != ".png"]  # no temporary file left
        for p in kept:
            assert read_mask(p).shape == (48, 64)  # complete PNGs
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------------------------ everyday options
def test_frame_range(tmp_path, video, ckpt):
    path, gt = video
    out = tmp_path / "out"
    assert (
        run(
            path,
            "--mask",
            gt / "00001.png",
            "-o",
            out,
            "--model",
            ckpt,
            "--start",
            1,
            "--end",
            6,
            "--stride",
            2,
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["00001.png", "00003.png", "00005.png"]
    np.testing.assert_array_equal(read_mask(out / "00001.png"), read_mask(gt / "00001.png"))


def test_probability_export(tmp_path, video, ckpt):
    path, gt = video
    one = tmp_path / "one.png"
    write_mask(one, read_mask(gt / "00000.png") == 1)
    out, probs = tmp_path / "out", tmp_path / "probs"
    assert run(path, "--mask", one, "-o", out, "--probs", probs, "--model", ckpt) == 0
    assert sorted(p.name for p in (probs / "1").iterdir()) == [f"{i:05d}.png" for i in range(N)]
    for i in range(N):
        p = np.asarray(Image.open(probs / "1" / f"{i:05d}.png"))
        assert p.dtype == np.uint8
        np.testing.assert_array_equal(p >= 128, read_mask(out / f"{i:05d}.png") == 1)


def _rotate_mp4(src, dst):
    """Copy an mp4 with the track's display matrix set to a 90-degree rotation (what phones write)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"tkhd")
    v = data[i + 4]
    off = i + 8 + (8 + 8 + 4 + 4 + 8 if v == 1 else 4 * 5) + 8 + 8
    assert struct.unpack(">9i", data[off : off + 36])[0] == 0x10000  # identity before
    data[off : off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(data)


def test_video_rotation_metadata_is_applied(tmp_path, video, ckpt):
    path, gt = video
    rotated = tmp_path / "phone.mp4"
    _rotate_mp4(path, rotated)
    plain, turned = VideoFrames(path), VideoFrames(rotated)
    assert plain.size == (48, 64) and turned.size == (64, 48)
    a, b = next(iter(plain)), next(iter(turned))
    np.testing.assert_array_equal(b, np.rot90(a, turned.rotation))
    mask = np.ascontiguousarray(np.rot90(read_mask(gt / "00000.png"), turned.rotation))
    write_mask(tmp_path / "m.png", mask)
    assert run(rotated, "--mask", tmp_path / "m.png", "-o", tmp_path / "out", "--model", ckpt) == 0
    assert read_mask(tmp_path / "out" / "00003.png").shape == (64, 48)


# ------------------------------------------------------------------------------------ the command line
def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("recvos ")


def test_every_option_has_help_and_every_command_examples():
    import argparse

    from recvos.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"recvos {name} {action.option_strings[0]} has no help"
        if name in ("segment", "predict", "evaluate", "train"):
            assert p.epilog and "examples:" in p.epilog, f"recvos {name} --help has no examples"
