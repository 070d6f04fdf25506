"""recvos app in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by
Selenium through upload -> box -> propagate -> correct on a later frame -> propagate -> download, checked
against the Python API for the same prompts. Skips when no browser or driver is installed."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from test_app import CLICK, CLICK_FRAME, FRAMES, SIZE, reference_masks  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="no chromium + chromedriver (apt-get install chromium chromium-driver)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from recvos.data.synthetic import write_synthetic_video

    return write_synthetic_video(
        tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=FRAMES, size=SIZE, seed=3
    )


@pytest.fixture
def server(ckpt, tmp_path) -> Iterator[tuple[str, object]]:
    """The app on a free loopback port, served by uvicorn in a thread."""
    import uvicorn

    from recvos.app import AppConfig, create_app

    (tmp_path / "work").mkdir()
    app = create_app(AppConfig(model=str(ckpt), workdir=str(tmp_path / "work")))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not srv.started:
        assert time.monotonic() - t0 < 30, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app.state.store
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1300,900",
        "--disable-gpu",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait(cond, timeout: float = 60, what: str = "condition") -> object:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def idle(driver) -> None:
    wait(
        lambda: driver.execute_script("return document.body.dataset.pending") == "0",
        what="requests to finish",
    )


def get_json(url: str) -> object:
    with urllib.request.urlopen(url) as r:
        return json.loads(r.read())


def canvas_offset(driver, x: float, y: float) -> tuple[int, int]:
    """Offset from the canvas centre (Selenium 4's origin) of image pixel (x, y)."""
    rect = driver.execute_script(
        "const c = document.getElementById('canvas'), r = c.getBoundingClientRect();"
        "return [r.width, r.height, c.width, c.height];"
    )
    w, h, W, H = rect
    return round((x + 0.5) * w / W - w / 2), round((y + 0.5) * h / H - h / 2)


def downloaded(driver, suffix: str) -> Path:
    def done():
        files = [p for p in driver.downloads.iterdir() if p.suffix == suffix]
        return files[0] if files and not list(driver.downloads.glob("*.crdownload")) else None

    return wait(done, what=f"the {suffix} download")


def test_upload_box_propagate_correct_download(server, browser, video, ckpt, monkeypatch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, store = server
    d = browser
    d.get(url + "/")
    sid = wait(lambda: d.execute_script("return document.body.dataset.session"), what="a session")
    idle(d)

    # bad input first: a file that is not a video gives a message and nothing else
    junk = video.parent / "junk.mp4"
    junk.write_bytes(b"not a video" * 50)
    d.find_element(By.ID, "file-input").send_keys(str(junk))
    d.find_element(By.ID, "upload-btn").click()
    wait(lambda: "junk.mp4" in d.find_element(By.ID, "message").text, what="the error message")

    d.find_element(By.ID, "file-input").send_keys(str(video))
    d.find_element(By.ID, "upload-btn").click()
    wait(lambda: d.find_element(By.ID, "workspace").is_displayed(), what="the workspace")
    idle(d)

    canvas = d.find_element(By.ID, "canvas")
    x0, y0 = canvas_offset(d, 20, 15)
    x1, y1 = canvas_offset(d, 70, 60)
    ActionChains(d).move_to_element_with_offset(canvas, x0, y0).click_and_hold().move_by_offset(
        x1 - x0, y1 - y0
    ).release().perform()
    wait(lambda: get_json(f"{url}/api/s/{sid}/prompts/0"), what="the box prompt")
    idle(d)
    box = get_json(f"{url}/api/s/{sid}/prompts/0")[0]["box"]
    assert abs(box[0] - 20) < 2 and abs(box[3] - 60) < 2

    d.find_element(By.ID, "propagate").click()
    wait(lambda: d.execute_script("return document.body.dataset.job") == "done", what="propagation")
    idle(d)

    for _ in range(CLICK_FRAME):
        d.find_element(By.ID, "next-frame").click()
        idle(d)
    assert f"frame {CLICK_FRAME} /" in d.find_element(By.ID, "frame-label").text
    d.find_element(By.ID, "tool-pos").click()
    ActionChains(d).move_to_element_with_offset(canvas, *canvas_offset(d, *CLICK)).click().perform()
    wait(lambda: get_json(f"{url}/api/s/{sid}/prompts/{CLICK_FRAME}"), what="the click prompt")
    idle(d)
    click = get_json(f"{url}/api/s/{sid}/prompts/{CLICK_FRAME}")[0]["points"][0]

    d.find_element(By.ID, "propagate").click()
    wait(
        lambda: (
            (get_json(f"{url}/api/s/{sid}/status")["job"] or {}).get("start") == CLICK_FRAME
            and d.execute_script("return document.body.dataset.job") == "done"
        ),
        what="the second propagation",
    )
    idle(d)

    d.find_element(By.ID, "dl-masks").click()
    zpath = downloaded(d, ".zip")
    from PIL import Image

    with zipfile.ZipFile(zpath) as zf:
        masks = {n: np.asarray(Image.open(zf.open(n))) for n in zf.namelist()}
    ref = reference_masks(ckpt, video, box=tuple(box), click_frame=CLICK_FRAME, click=tuple(click))
    assert sorted(masks) == [f"{t:05d}.png" for t in range(FRAMES)]
    for t in range(FRAMES):
        assert np.array_equal(masks[f"{t:05d}.png"], ref[t]), t

    d.find_element(By.ID, "dl-overlay").click()
    mp4 = downloaded(d, ".mp4")
    from recvos import open_frames

    with open_frames(mp4) as src:
        assert sum(1 for _ in src) == FRAMES

    # the Online learning and Flip boxes: a correction on the next frame, propagated with online learning (1 step
    # here) and flip
    from recvos.inference import online

    monkeypatch.setattr(online, "ONLINE_STEPS", 1)
    d.find_element(By.ID, "next-frame").click()
    idle(d)
    ActionChains(d).move_to_element_with_offset(canvas, *canvas_offset(d, *CLICK)).click().perform()
    wait(lambda: get_json(f"{url}/api/s/{sid}/prompts/{CLICK_FRAME + 1}"), what="the second click")
    idle(d)
    d.find_element(By.ID, "online").click()
    d.find_element(By.ID, "flip").click()
    d.find_element(By.ID, "propagate").click()
    job = wait(
        lambda: (
            (j := get_json(f"{url}/api/s/{sid}/status")["job"] or {}).get("start") == CLICK_FRAME + 1
            and d.execute_script("return document.body.dataset.job") == "done"
            and j
        ),
        what="the propagation with online learning and flip",
    )
    assert job["online_steps"] == 1 and job["flip"] is True
    idle(d)

    # closing the page ends the session and removes its files
    folder = store.get(sid).dir
    d.get("about:blank")
    wait(lambda: not folder.exists(), timeout=20, what="the session folder to go")
