"""`torchrun ... recvos predict` (issue 14): the split across ranks, rank 0's wait and report, results identical
to one process, a rank that fails (the others finish; --resume completes the rest), bad combinations."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from recvos.cli.main import main
from recvos.data.synthetic import write_synthetic_dataset
from recvos.inference.dataset import shard_names
from recvos.inference.outputs import RunReport, merge_reports
from recvos.inference.ranks import (
    STATUS_DIR,
    RankStatus,
    describe_ranks,
    split_by_frames,
    wait_for_ranks,
    write_status,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- the split
def test_split_covers_every_sequence_once_and_balances_frames():
    rng = random.Random(0)
    counts = {f"v{i:03d}": rng.randint(1, 200) for i in range(37)}
    for world in (1, 2, 3, 8, 37, 50):
        shares = split_by_frames(counts, world)
        flat = [n for s in shares for n in s]
        assert len(shares) == world and sorted(flat) == sorted(counts) and len(flat) == len(set(flat))
        loads = [sum(counts[n] for n in s) for s in shares]
        assert max(loads) - min(loads) <= max(counts.values())  # greedy, longest first
        assert all(s == sorted(s) for s in shares)
    shuffled = dict(rng.sample(sorted(counts.items()), len(counts)))
    assert split_by_frames(shuffled, 4) == split_by_frames(counts, 4)  # every rank computes the same split
    assert split_by_frames({"a": 3}, 3) == [["a"], [], []]


def test_shards_then_ranks_partition_the_dataset():
    """--shard i/n under torchrun: the ranks split the shard, so shards x ranks cover each sequence once."""
    names = [f"v{i}" for i in range(23)]
    parts = [
        share for i in range(3) for share in split_by_frames(dict.fromkeys(shard_names(names, i, 3), 1), 2)
    ]
    flat = [n for p in parts for n in p]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))


def test_merged_report_adds_frames_and_takes_the_slowest_rank():
    m = merge_reports([RunReport(10, 2.0, 1.0, 2), RunReport(30, 3.0, 0.5, 1)])
    assert (m.frames, m.seconds, m.finetune_seconds, m.sequences) == (40, 3.0, 1.0, 3)
    assert m.fps == pytest.approx(40 / 3)
    assert merge_reports([]).frames == 0


# -------------------------------------------------------------------------------------- rank 0's wait
def test_wait_gives_up_on_silent_ranks_and_says_why(tmp_path):
    run = "run-a"
    write_status(
        tmp_path, RankStatus(0, run, ["a"], done=1, finished=True, report={"frames": 3, "seconds": 1.0})
    )
    write_status(tmp_path, RankStatus(1, run, ["b", "c"], done=1, finished=True, error="c: bad frame"))
    write_status(tmp_path, RankStatus(2, run, ["d", "e"], done=1))  # alive once, then silent
    write_status(tmp_path, RankStatus(3, "an-earlier-run", ["f"], done=1, finished=True))  # stale: ignored
    seen = []
    t0 = time.monotonic()
    statuses = wait_for_ranks(tmp_path, run, 4, timeout=0.5, poll=0.05, on_progress=seen.append)
    assert 0.5 <= time.monotonic() - t0 < 5
    assert [s is not None and s.finished for s in statuses] == [True, True, False, False]
    assert statuses[3] is None and seen[-1] == 3
    notes = describe_ranks(statuses, 0.5)
    assert notes == [
        "rank 1 failed on c: bad frame",
        "rank 2 went silent after 1 of 2 sequences (no word for 0.5 s)",
        "rank 3 never reported (no word for 0.5 s)",
    ]


def test_wait_returns_as_soon_as_every_rank_finished(tmp_path):
    for r in range(3):
        write_status(tmp_path, RankStatus(r, "x", [], finished=True))
    t0 = time.monotonic()
    assert all(s is not None for s in wait_for_ranks(tmp_path, "x", 3, timeout=60))
    assert time.monotonic() - t0 < 5


def test_rank_timeout_must_be_positive(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=1, num_frames=2, size=(32, 32))
    argv = [
        "predict",
        "--dataset",
        "folder",
        "--root",
        str(root),
        "-o",
        str(tmp_path / "r"),
        "--rank-timeout",
        "0",
    ]
    assert main(argv) == 2
    assert "--rank-timeout 0: must be more than 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- with 2 processes
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds"), num_videos=5, num_frames=3, size=(40, 56))


def torchrun(*argv: object) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m recvos predict ...`` on CPU (gloo), with this tree's sources."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(_free_port()), "-m", "recvos", "predict", *map(str, argv), "--no-progress", "--threads", "1"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def predict_here(*argv: object) -> int:
    """One process, in this one, with one thread (as each rank) so that the masks can be compared bytewise."""
    threads = torch.get_num_threads()
    try:
        return main(["predict", *map(str, argv), "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(tmp_path, dataset, ckpt, capsys):
    common = ("--dataset", "folder", "--root", dataset, "--model", ckpt)
    assert predict_here(*common, "-o", tmp_path / "one") == 0
    capsys.readouterr()
    r = torchrun(*common, "-o", tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert len(one) == 15 and two == one  # byte-equal PNGs, nothing else (no status folder left)
    assert r.stdout.count("predicted 5 sequences, 15 frames") == 1  # rank 0 alone prints the summary
    assert "ERROR" not in r.stderr and "rank 1" not in r.stderr  # rank 1 said nothing


@pytest.mark.slow
def test_two_ranks_zip_once_with_every_sequence(tmp_path, dataset, ckpt):
    root = tmp_path / "ytvos"
    for kind in ("JPEGImages", "Annotations"):
        shutil.copytree(dataset / kind, root / "valid" / kind)
    for ann in (root / "valid" / "Annotations").iterdir():  # YouTube-VOS: the first frame's mask only
        for p in sorted(ann.iterdir())[1:]:
            p.unlink()
    common = ("--dataset", "youtube-vos", "--root", root, "--split", "valid", "--model", ckpt)
    common += ("--format", "youtube-vos-zip")
    assert predict_here(*common, "-o", tmp_path / "one") == 0
    r = torchrun(*common, "-o", tmp_path / "two")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["Annotations", "submission.zip"]
    zips = []
    for run in ("one", "two"):
        with zipfile.ZipFile(tmp_path / run / "submission.zip") as zf:
            zips.append({n: zf.read(n) for n in zf.namelist()})
    assert len(zips[0]) == 15 and zips[1] == zips[0]


@pytest.mark.slow
def test_a_failing_rank_others_finish_resume_completes(tmp_path, dataset, ckpt):
    """A frame that cannot be decoded stops rank 1 at its first sequence; rank 0 finishes its own, names the
    missing ones and exits non-zero; once the frame is repaired, --resume redoes only those."""
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    names = sorted(p.name for p in (root / "JPEGImages").iterdir())
    zero, one = split_by_frames(dict.fromkeys(names, 3), 2)
    bad = sorted((root / "JPEGImages" / one[0]).iterdir())[1]
    good = bad.read_bytes()
    bad.write_bytes(good[:100])  # truncated
    out = tmp_path / "res"
    common = ("--dataset", "folder", "--root", root, "--model", ckpt, "-o", out)
    r = torchrun(*common)
    assert r.returncode != 0
    err = r.stderr
    assert f"{len(one)} of 5 sequence(s) have no complete results: {', '.join(one)}" in err
    assert f"rank 1 failed on {one[0]}: {bad}" in err and "--resume" in err
    assert "predicted" not in r.stdout
    for n in zero:  # the other rank finished its sequences
        assert len(list((out / n).glob("*.png"))) == 3
    assert not (out / STATUS_DIR).exists()
    stamps = {n: [p.stat().st_mtime_ns for p in sorted((out / n).iterdir())] for n in zero}

    bad.write_bytes(good)
    r = torchrun(*common, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"predicted {len(one)} sequences, {3 * len(one)} frames" in r.stdout
    assert f"skipped {len(zero)} finished sequence(s)" in r.stderr
    for n, st in stamps.items():  # finished sequences untouched
        assert [p.stat().st_mtime_ns for p in sorted((out / n).iterdir())] == st
    assert predict_here("--dataset", "folder", "--root", root, "--model", ckpt, "-o", tmp_path / "ref") == 0
    assert files(out) == files(tmp_path / "ref")


def _rank(rank: int, port: int, argv: list[str], out: str) -> None:
    """A rank as torchrun starts it (its environment), running the CLI in-process; writes its exit code."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    code = main(
        [*argv, "-o", f"{out}/res{rank}", "--no-progress"]
    )  # a folder per rank: not one shared folder
    Path(out, f"rc{rank}").write_text(str(code))


@pytest.mark.slow
def test_ranks_that_do_not_share_the_results_folder_all_refuse(tmp_path, dataset, ckpt, capfd):
    argv = ["predict", "--dataset", "folder", "--root", str(dataset), "--model", str(ckpt)]
    mp.spawn(_rank, args=(_free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    assert [(tmp_path / f"rc{r}").read_text() for r in range(2)] == ["2", "2"]
    err = capfd.readouterr().err
    assert err.count("rank(s) 1 cannot see the files rank 0 writes there") == 2
    assert not list(tmp_path.glob("res*/synthetic*"))  # nothing was segmented


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    from recvos.devices import resolve_device
    from recvos.errors import RecvosError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", 1) == torch.device("cuda", 1)
    with pytest.raises(RecvosError, match="LOCAL_RANK 2 but 2 GPU"):
        resolve_device("cuda", 2)
