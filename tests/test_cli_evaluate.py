"""``recvos evaluate``: tables, CSV/JSON/plots, bad input (exit 2, no partial output), DAVIS-2016 reference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from recvos.cli.main import main
from recvos.data.masks import read_mask, write_mask
from recvos.data.synthetic import write_synthetic_dataset
from recvos.evaluation.protocols import evaluate_sequences

# reference values computed with the official DAVIS toolkit (davis2017-evaluation) on DAVIS-2016 val,
# predictions = ground truth rolled by (5, 5) pixels
REFERENCE = {
    "J&F-Mean": 0.880394,
    "J-Mean": 0.762953,
    "J-Recall": 0.906767,
    "J-Decay": 0.023349,
    "F-Mean": 0.997834,
    "F-Recall": 1.0,
    "F-Decay": 0.002144,
}


@pytest.fixture()
def tree(tmp_path):
    """A synthetic DAVIS-2017-style root and shifted predictions for its val sequence."""
    root = write_synthetic_dataset(tmp_path / "ds", num_videos=3, num_frames=6, size=(40, 56))
    pred = tmp_path / "pred"
    for seq in (root / "Annotations").iterdir():
        for f in seq.iterdir():
            write_mask(pred / seq.name / f.name, np.roll(read_mask(f), (2, 1), axis=(0, 1)))
    return root, pred


def test_evaluate_prints_and_writes(tree, tmp_path, capsys):
    root, pred = tree
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--gt",
            str(root),
            "--pred",
            str(pred),
            "--csv",
            str(out / "m.csv"),
            "--json",
            str(out / "m.json"),
            "--plot",
            str(out / "plots"),
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "J&F-Mean" in text and "synthetic002_1" in text and "synthetic002_2" in text
    doc = json.loads((out / "m.json").read_text())
    want = evaluate_sequences(root, pred, workers=1).global_metrics
    assert doc["global"] == pytest.approx(want)
    assert 0 < doc["global"]["J-Mean"] < 1
    assert doc["task"] == "semi-supervised"
    assert [o["object"] for o in doc["objects"]] == [1, 2]
    assert len(doc["objects"][0]["J"]) == 4  # 6 frames minus first and last
    rows = list(csv.DictReader((out / "m.csv").open()))
    assert rows[0]["Sequence"] == "Global" and float(rows[0]["J&F-Mean"]) == pytest.approx(want["J&F-Mean"])
    assert [r["Sequence"] for r in rows[1:]] == ["synthetic002_1", "synthetic002_2"]
    for name in ("per_sequence.png", "j_over_time.png", "j_over_length.png", "by_object_count.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.rglob("*.tmp")]


def test_evaluate_unsupervised_and_annotation_dir(tree, capsys):
    root, pred = tree
    # a plain annotation folder (all three sequences), perfect predictions
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(root / "Annotations"),
                "--pred",
                str(root / "Annotations"),
                "--task",
                "unsupervised",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "unsupervised" in text and "1.000000" in text
    assert "synthetic000_1" in text and "synthetic001_2" in text


@pytest.mark.parametrize("case", ["missing_frame", "missing_sequence", "size", "split", "empty_pred"])
def test_bad_input_exits_2_without_output(tree, tmp_path, capsys, case):
    root, pred = tree
    args = ["evaluate", "--gt", str(root), "--pred", str(pred)]
    want = None
    if case == "missing_frame":
        (pred / "synthetic002" / "00003.png").unlink()
        want = "synthetic002/00003.png"
    elif case == "missing_sequence":
        for f in (pred / "synthetic002").iterdir():
            f.unlink()
        (pred / "synthetic002").rmdir()
        want = "synthetic002"
    elif case == "size":
        write_mask(pred / "synthetic002" / "00002.png", np.zeros((20, 28), np.uint8))
        want = "00002.png"
    elif case == "split":
        args += ["--split", "bogus"]
        want = "bogus"
    elif case == "empty_pred":
        empty = tmp_path / "empty"
        empty.mkdir()
        args[args.index(str(pred))] = str(empty)
        want = "synthetic002"
    out = tmp_path / "out"
    rc = main([*args, "--csv", str(out / "m.csv"), "--json", str(out / "m.json"), "--plot", str(out / "p")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recvos: error:") and want in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_reference_values_davis2016(davis2016_root, tmp_path, capsys):
    """`recvos evaluate` reproduces the official toolkit on DAVIS-2016 val, GT shifted by (5, 5)."""
    import cv2

    pred = tmp_path / "pred"
    names = (davis2016_root / "ImageSets" / "2016" / "val.txt").read_text().split()
    assert len(names) == 20
    for seq in names:
        (pred / seq).mkdir(parents=True)
        for f in sorted((davis2016_root / "Annotations" / "480p" / seq).glob("*.png")):
            shifted = np.roll(read_mask(f), (5, 5), axis=(0, 1)).astype(np.uint8) * 255  # 0/255 like the GT
            assert cv2.imwrite(str(pred / seq / f.name), shifted, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    out = tmp_path / "m.json"
    assert main(["evaluate", "--gt", str(davis2016_root), "--pred", str(pred), "--json", str(out)]) == 0
    got = json.loads(out.read_text())["global"]
    for k, v in REFERENCE.items():
        assert round(got[k], 6) == v, k
    assert len(json.loads(out.read_text())["objects"]) == 20


def test_cli_choices_equal_the_library():
    """The CLI keeps literal copies (so building the parser imports no numpy); they must not drift."""
    from recvos.cli import evaluate as cli
    from recvos.data.datasets import DATASET_KINDS
    from recvos.evaluation.scoring import TASKS

    assert cli.TASKS == TASKS and cli.DATASETS == DATASET_KINDS
