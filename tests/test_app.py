"""recvos app over HTTP (FastAPI's test client): the flow upload -> box -> propagate -> correct -> download
against the Python API, per-session isolation, limits and bad input, refusal of a second propagate,
cancellation and clean-up when a session ends or times out."""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from recvos.app import AppConfig, create_app  # noqa: E402
from recvos.app.sessions import Models, SessionStore  # noqa: E402

SIZE = (96, 128)
FRAMES = 8
BOX = (20.0, 15.0, 70.0, 60.0)
CLICK_FRAME = 5
CLICK = (40.0, 30.0)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from recvos.data.synthetic import write_synthetic_video

    return write_synthetic_video(
        tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=FRAMES, size=SIZE, seed=3
    )


@pytest.fixture(scope="module")
def zckpt(tmp_path_factory) -> Path:
    from recvos.models.factory import build_model
    from recvos.models.loading import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zckpt") / "tiny-zero.pt"
    save_model(build_model("rvos-s", mode="zero-shot", hidden_size=16, max_objects=2), path)
    return path


def reference_masks(
    ckpt: Path,
    video: Path,
    box: tuple[float, ...] = BOX,
    click_frame: int = CLICK_FRAME,
    click: tuple[float, float] = CLICK,
) -> dict[int, np.ndarray]:
    """What the Python API gives for the app's flow: a box on frame 0 for object 1, propagate; a positive
    click for object 1 on ``click_frame`` (refining its propagated mask), propagate again from that frame."""
    from recvos import load_model, open_frames
    from recvos.prompts import mask_from_prompts

    seg = load_model(ckpt)
    with open_frames(video) as src:
        frames = list(src)
    out = {t: ids for t, _, ids in _propagate(seg, video, {0: {1: mask_from_prompts(frames[0], box=box)}})}
    base = out[click_frame] == 1
    m = mask_from_prompts(
        frames[click_frame], points=[click], labels=[1], previous=base if base.any() else None
    )
    ids = out[click_frame].copy()
    ids[ids == 1] = 0
    ids[m] = 1
    first = {int(o): ids == o for o in np.unique(ids) if o > 0}
    for t, _, new in _propagate(seg, frames[click_frame:], {0: first}):
        out[click_frame + t] = new
    return out


def _propagate(seg, source, prompts):
    state = seg.init_state(source)
    for t, masks in prompts.items():
        seg.add_mask(state, t, masks)
    yield from seg.propagate(state)


def read_zip(data: bytes) -> dict[str, np.ndarray]:
    """{file name: id map} of a zip of palette PNGs."""
    from PIL import Image

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: np.asarray(Image.open(io.BytesIO(zf.read(name)))) for name in zf.namelist()}


@pytest.fixture
def app_client(ckpt, zckpt, tmp_path):
    config = AppConfig(model=str(ckpt), zero_shot_model=str(zckpt), workdir=str(tmp_path), max_frames=50)
    app = create_app(config)
    with TestClient(app) as client:
        yield client, app.state.store


def new_session(client) -> str:
    r = client.post("/api/session")
    assert r.status_code == 200
    return r.json()["id"]


def upload(client, sid: str, path: Path, name: str | None = None):
    return client.post(f"/api/s/{sid}/upload", params={"name": name or path.name}, content=path.read_bytes())


def wait_job(client, sid: str, timeout: float = 60) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        job = client.get(f"/api/s/{sid}/status").json()["job"]
        if job and job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError("propagation did not finish")


def error(r) -> str:
    msg = r.json()["error"]
    assert "\n" not in msg
    return msg


# -------------------------------------------------------------------------------------------------- flow
def test_flow_matches_the_python_api(app_client, video, ckpt):
    client, store = app_client
    page = client.get("/")
    assert page.status_code == 200 and "recvos" in page.text
    sid = new_session(client)
    r = upload(client, sid, video)
    assert r.status_code == 200, r.text
    assert r.json()["num_frames"] == FRAMES and (r.json()["height"], r.json()["width"]) == SIZE
    assert client.get(f"/api/s/{sid}/frame/3.jpg").headers["content-type"] == "image/jpeg"

    r = client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    assert r.status_code == 200 and r.json()["area"] > 0
    assert client.get(f"/api/s/{sid}/prompts/0").json()[0]["box"] == list(BOX)
    assert client.get(f"/api/s/{sid}/view/0.jpg").content[:2] == b"\xff\xd8"
    assert client.post(f"/api/s/{sid}/propagate", json={}).status_code == 200
    assert wait_job(client, sid)["state"] == "done"
    assert "nothing changed" in error(client.post(f"/api/s/{sid}/propagate", json={}))

    first = read_zip(client.get(f"/api/s/{sid}/masks.zip").content)
    r = client.post(
        f"/api/s/{sid}/prompt", json={"frame": CLICK_FRAME, "obj": 1, "point": list(CLICK), "label": 1}
    )
    assert r.status_code == 200
    client.post(f"/api/s/{sid}/propagate", json={})
    job = wait_job(client, sid)
    assert job["state"] == "done" and job["start"] == CLICK_FRAME

    r = client.get(f"/api/s/{sid}/masks.zip")
    assert r.headers["content-type"] == "application/zip"
    masks = read_zip(r.content)
    assert sorted(masks) == [f"{t:05d}.png" for t in range(FRAMES)]
    ref = reference_masks(ckpt, video)
    for t in range(FRAMES):
        assert np.array_equal(masks[f"{t:05d}.png"], ref[t]), t
        if t < CLICK_FRAME:  # frames before the correction are kept as they were
            assert np.array_equal(masks[f"{t:05d}.png"], first[f"{t:05d}.png"])

    r = client.get(f"/api/s/{sid}/overlay.mp4")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    overlay = Path(store.root) / "check.mp4"
    overlay.write_bytes(r.content)
    from recvos import open_frames

    with open_frames(overlay) as src:
        assert sum(1 for _ in src) == FRAMES


def test_zero_shot_is_one_call_and_needs_no_objects(app_client, video):
    client, _ = app_client
    sid = new_session(client)
    upload(client, sid, video)
    client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    assert "Reset" in error(client.post(f"/api/s/{sid}/propagate", json={"zero_shot": True}))
    client.post(f"/api/s/{sid}/reset")
    assert client.post(f"/api/s/{sid}/propagate", json={"zero_shot": True}).status_code == 200
    assert wait_job(client, sid)["state"] == "done"
    assert len(read_zip(client.get(f"/api/s/{sid}/masks.zip").content)) == FRAMES


def test_online_learning_box_matches_the_python_api(app_client, video, ckpt, monkeypatch):
    """The Online learning box: the app fine-tunes (ONLINE_STEPS; 2 here, for time) before propagating, as
    seg.finetune does; it is refused with Zero-shot, and the next propagation runs on the original weights."""
    from recvos import load_model, open_frames
    from recvos.inference import online
    from recvos.inference.segmenter import Segmenter
    from recvos.prompts import mask_from_prompts

    monkeypatch.setattr(online, "ONLINE_STEPS", 2)
    calls = []
    finetune = Segmenter.finetune

    def spy(self, state, steps=online.ONLINE_STEPS, **options):
        calls.append(steps)
        return finetune(self, state, steps, **options)

    monkeypatch.setattr(Segmenter, "finetune", spy)
    client, _ = app_client
    sid = new_session(client)
    upload(client, sid, video)
    assert "untick" in error(client.post(f"/api/s/{sid}/propagate", json={"zero_shot": True, "online": True}))
    client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    assert client.post(f"/api/s/{sid}/propagate", json={"online": True}).status_code == 200
    job = wait_job(client, sid)
    assert job["state"] == "done" and job["online_steps"] == 2 and calls == [2]
    masks = read_zip(client.get(f"/api/s/{sid}/masks.zip").content)

    seg = load_model(ckpt)
    with open_frames(video) as src:
        first = mask_from_prompts(next(iter(src)), box=BOX)
    state = seg.init_state(video)
    seg.add_mask(state, 0, {1: first})
    seg.finetune(state, steps=2)
    ref = {t: ids for t, _, ids in seg.propagate(state)}
    plain = {t: ids for t, _, ids in _propagate(seg, video, {0: {1: first}})}
    for t in range(FRAMES):
        assert np.array_equal(masks[f"{t:05d}.png"], ref[t]), t

    sid2 = new_session(client)  # the next propagation (another session) runs on the original weights
    upload(client, sid2, video)
    client.post(f"/api/s/{sid2}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    client.post(f"/api/s/{sid2}/propagate", json={})
    assert wait_job(client, sid2)["state"] == "done" and calls == [2, 2]
    again = read_zip(client.get(f"/api/s/{sid2}/masks.zip").content)
    for t in range(FRAMES):
        assert np.array_equal(again[f"{t:05d}.png"], plain[t]), t


def test_flip_box_matches_the_python_api_and_is_per_propagation(app_client, video, ckpt, monkeypatch):
    """The Flip box: masks as load_model(flip=True) gives them; the next propagation is plain again."""
    from recvos import load_model, open_frames
    from recvos.inference import segmenter
    from recvos.prompts import mask_from_prompts

    flipped_runs = []
    unroll_flipped = segmenter.unroll_flipped

    def spy(*args, **kwargs):
        flipped_runs.append(1)
        return unroll_flipped(*args, **kwargs)

    monkeypatch.setattr(segmenter, "unroll_flipped", spy)
    client, _ = app_client
    sid = new_session(client)
    upload(client, sid, video)
    client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    assert client.post(f"/api/s/{sid}/propagate", json={"flip": True}).status_code == 200
    job = wait_job(client, sid)
    assert job["state"] == "done" and job["flip"] is True and len(flipped_runs) == 1
    masks = read_zip(client.get(f"/api/s/{sid}/masks.zip").content)
    with open_frames(video) as src:
        first = mask_from_prompts(next(iter(src)), box=BOX)
    flipped = {t: ids for t, _, ids in _propagate(load_model(ckpt, flip=True), video, {0: {1: first}})}
    plain = {t: ids for t, _, ids in _propagate(load_model(ckpt), video, {0: {1: first}})}
    for t in range(FRAMES):
        assert np.array_equal(masks[f"{t:05d}.png"], flipped[t]), t

    sid2 = new_session(client)
    upload(client, sid2, video)
    client.post(f"/api/s/{sid2}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    client.post(f"/api/s/{sid2}/propagate", json={})
    assert (
        wait_job(client, sid2)["flip"] is False and len(flipped_runs) == 2
    )  # the flipped reference run only
    again = read_zip(client.get(f"/api/s/{sid2}/masks.zip").content)
    for t in range(FRAMES):
        assert np.array_equal(again[f"{t:05d}.png"], plain[t]), t


def test_cancel_during_online_learning_stops_it_and_writes_nothing(app_client, video, monkeypatch):
    from recvos.inference import online

    monkeypatch.setattr(online, "ONLINE_STEPS", 10_000)  # long enough to be cancelled while it runs
    client, _ = app_client
    sid = new_session(client)
    upload(client, sid, video)
    client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    assert client.post(f"/api/s/{sid}/propagate", json={"online": True}).status_code == 200
    t0 = time.monotonic()
    while "online learning: step" not in (client.get(f"/api/s/{sid}/status").json()["job"] or {}).get(
        "message", ""
    ):
        assert time.monotonic() - t0 < 60, "online learning did not start"
        time.sleep(0.05)
    client.post(f"/api/s/{sid}/cancel")
    job = wait_job(client, sid)
    assert job["state"] == "cancelled" and job["done"] == 0
    assert "propagate first" in error(client.get(f"/api/s/{sid}/masks.zip"))
    # the next propagation works, without online learning
    client.post(f"/api/s/{sid}/propagate", json={})
    assert wait_job(client, sid)["state"] == "done"


# --------------------------------------------------------------------------------------------- bad input
def test_bad_prompts_and_requests_are_one_line_errors(app_client, video):
    client, _ = app_client
    sid = new_session(client)
    assert "no video" in error(
        client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    )
    upload(client, sid, video)
    W = SIZE[1]
    cases = [
        ({"frame": 0, "obj": 1, "point": [W + 5, 10]}, "outside the 128x96 frame"),
        ({"frame": 0, "obj": 1, "box": [10, 10, 10, 40]}, "zero area"),
        ({"frame": FRAMES, "obj": 1, "box": list(BOX)}, "outside the video"),
        ({"frame": 0, "obj": 0, "box": list(BOX)}, "ids are 1..255"),
        ({"frame": 0, "obj": 1}, "no prompt"),
    ]
    for body, words in cases:
        r = client.post(f"/api/s/{sid}/prompt", json=body)
        assert r.status_code == 400 and words in error(r), (body, r.text)
    assert "no object to propagate" in error(client.post(f"/api/s/{sid}/propagate", json={}))
    assert "propagate first" in error(client.get(f"/api/s/{sid}/masks.zip"))
    assert client.get("/api/s/not-a-session/status").status_code == 404


def test_not_a_video_and_limits_keep_the_open_video(app_client, video, tmp_path):
    client, store = app_client
    sid = new_session(client)
    assert upload(client, sid, video).status_code == 200
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 100)
    r = upload(client, sid, junk)
    assert r.status_code == 400 and "notes.mp4" in error(r)
    status = client.get(f"/api/s/{sid}/status").json()
    assert status["video"]["name"] == video.name  # the earlier video is still there
    store.config.max_frames = 5
    r = upload(client, sid, video)
    assert r.status_code == 400 and "over the limit of 5" in error(r) and "--max-frames" in error(r)
    store.config.max_upload_mb = 0.001
    r = upload(client, sid, video)
    assert r.status_code == 413 and "upload limit" in error(r)
    assert len([p for p in store.get(sid).dir.glob("upload.*")]) == 1  # rejected uploads are deleted


def test_server_paths_only_when_allowed(ckpt, video, tmp_path):
    for allow, code in ((True, 200), (False, 400)):
        app = create_app(AppConfig(model=str(ckpt), workdir=str(tmp_path), allow_paths=allow))
        with TestClient(app) as client:
            sid = new_session(client)
            r = client.post(f"/api/s/{sid}/open", json={"path": str(video)})
            assert r.status_code == code, r.text
            if not allow:
                assert "--allow-paths" in error(r)
            else:
                assert error(
                    client.post(f"/api/s/{sid}/open", json={"path": str(tmp_path / "nope.mp4")})
                ).endswith("check the path")
    assert not create_app(AppConfig(), host="0.0.0.0").state.config.allow_paths  # None: decided by the host


# ----------------------------------------------------------------------------------- sessions and jobs
def test_sessions_are_isolated(app_client, video):
    client, store = app_client
    a, b = new_session(client), new_session(client)
    upload(client, a, video)
    client.post(f"/api/s/{a}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    sb = client.get(f"/api/s/{b}/status").json()
    assert sb["video"] == {} and sb["objects"] == []
    assert client.get(f"/api/s/{b}/prompts/0").status_code == 400
    assert store.get(a).dir != store.get(b).dir and store.get(a).dir.parent == store.get(b).dir.parent


def test_second_propagate_is_refused_and_prompts_wait(app_client, video):
    client, store = app_client
    sid = new_session(client)
    upload(client, sid, video)
    client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
    store._gate.acquire()  # another session's job holds the CPU: ours queues
    try:
        assert client.post(f"/api/s/{sid}/propagate", json={}).status_code == 200
        assert client.get(f"/api/s/{sid}/status").json()["job"]["state"] == "queued"
        r = client.post(f"/api/s/{sid}/propagate", json={})
        assert r.status_code == 409 and "already running" in error(r)
        r = client.post(f"/api/s/{sid}/prompt", json={"frame": 1, "obj": 2, "box": list(BOX)})
        assert r.status_code == 409
        assert client.get(f"/api/s/{sid}/masks.zip").status_code == 409
    finally:
        store._gate.release()
    assert wait_job(client, sid)["state"] == "done"


class _SlowModels(Models):
    """Segmenters whose propagation sleeps per frame and signals its first frame (to stop it mid-way)."""

    started = threading.Event()

    def get(self, kind):
        seg = super().get(kind)
        outer = self

        class Slow:
            def __getattr__(self, name):
                return getattr(seg, name)

            def propagate(self, state, **kw):
                for item in seg.propagate(state, **kw):
                    outer.started.set()
                    time.sleep(0.2)
                    yield item

        return Slow()


def test_closing_the_page_mid_propagation_stops_it_and_removes_files(ckpt, video, tmp_path):
    config = AppConfig(model=str(ckpt), workdir=str(tmp_path))
    store = SessionStore(config, _SlowModels(config))
    with TestClient(create_app(config, store=store)) as client:
        sid = new_session(client)
        upload(client, sid, video)
        client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
        client.post(f"/api/s/{sid}/propagate", json={})
        assert _SlowModels.started.wait(30)
        session = store.get(sid)
        folder, job = session.dir, session.job
        assert folder.is_dir()
        assert client.post(f"/api/s/{sid}/close").json() == {"closed": True}
        assert job.state == "cancelled" and not job.thread.is_alive()
        assert job.done < FRAMES
        assert not folder.exists()
        assert client.get(f"/api/s/{sid}/status").status_code == 404


def test_cancel_keeps_the_frames_done(ckpt, video, tmp_path):
    config = AppConfig(model=str(ckpt), workdir=str(tmp_path))
    store = SessionStore(config, _SlowModels(config))
    _SlowModels.started.clear()
    with TestClient(create_app(config, store=store)) as client:
        sid = new_session(client)
        upload(client, sid, video)
        client.post(f"/api/s/{sid}/prompt", json={"frame": 0, "obj": 1, "box": list(BOX)})
        client.post(f"/api/s/{sid}/propagate", json={})
        assert _SlowModels.started.wait(30)
        client.post(f"/api/s/{sid}/cancel")
        job = wait_job(client, sid)
        assert job["state"] == "cancelled" and re.search(r"after frame \d+", job["message"])
        status = client.get(f"/api/s/{sid}/status").json()
        assert 0 < status["results"] < FRAMES and status["dirty_from"] == status["results"] - 1
        assert len(read_zip(client.get(f"/api/s/{sid}/masks.zip").content)) == FRAMES


def test_timed_out_sessions_are_removed(app_client, video):
    client, store = app_client
    sid = new_session(client)
    upload(client, sid, video)
    folder = store.get(sid).dir
    assert store.reap() == []
    assert store.reap(now=time.monotonic() + store.config.heartbeat_timeout + 1) == [sid]
    assert not folder.exists() and client.get(f"/api/s/{sid}/status").status_code == 404


def test_the_page_loads_nothing_from_outside():
    static = Path(__file__).resolve().parents[1] / "src" / "recvos" / "app" / "static"
    for f in static.iterdir():
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f
        assert "@import" not in text and "fonts.googleapis" not in text
