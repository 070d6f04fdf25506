"""Take docs/app_screenshot.png: the app (shipped one-shot default) on DAVIS ``bear`` in headless Chromium.

A box around the bear on frame 0 (the ground truth's bounding box), propagate, then frame 40 is shown.
Needs Debian's chromium + chromium-driver and selenium, and ../shared/data. Usage::

    .venv/bin/python docs/app_screenshot.py [--out docs/app_screenshot.png]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from recvos.app import AppConfig, create_app

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def wait(cond, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the page did not get there in time")
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "app_screenshot.png")
    ap.add_argument("--frame", type=int, default=40)
    ap.add_argument("--port", type=int, default=7871)
    args = ap.parse_args()
    video = DATA / "videos" / "cotracker_bear.mp4"
    gt = np.asarray(Image.open(DATA / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png")) > 127
    ys, xs = np.nonzero(gt)
    box = (
        max(0, xs.min() - 4),
        max(0, ys.min() - 4),
        min(gt.shape[1] - 1, xs.max() + 5),
        min(gt.shape[0] - 1, ys.max() + 5),
    )

    app = create_app(AppConfig(threads=2, workdir=tempfile.mkdtemp()))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    wait(lambda: srv.started)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,820",
        "--hide-scrollbars",
    ):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        d.get(f"http://127.0.0.1:{args.port}/")
        wait(lambda: d.execute_script("return document.body.dataset.session"))
        d.find_element(By.ID, "file-input").send_keys(str(video))
        d.find_element(By.ID, "upload-btn").click()
        wait(lambda: d.find_element(By.ID, "workspace").is_displayed())
        wait(lambda: d.execute_script("return document.body.dataset.pending") == "0")
        canvas = d.find_element(By.ID, "canvas")
        w, h, W, H = d.execute_script(
            "const c = document.getElementById('canvas'), r = c.getBoundingClientRect(); return [r.width, r.height, c.width, c.height];"
        )

        def off(x: float, y: float) -> tuple[int, int]:
            return round(x * w / W - w / 2), round(y * h / H - h / 2)

        (x0, y0), (x1, y1) = off(box[0], box[1]), off(box[2], box[3])
        ActionChains(d).move_to_element_with_offset(canvas, x0, y0).click_and_hold().move_by_offset(
            x1 - x0, y1 - y0
        ).release().perform()
        wait(
            lambda: (
                d.execute_script("return document.body.dataset.pending") == "0"
                and "pixels" in d.find_element(By.ID, "message").text
            )
        )
        d.find_element(By.ID, "propagate").click()
        wait(lambda: d.execute_script("return document.body.dataset.job") == "done")
        d.execute_script(
            "const s = document.getElementById('frame-slider'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
            args.frame,
        )
        time.sleep(1.0)
        wait(lambda: d.execute_script("return document.body.dataset.pending") == "0")
        d.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        d.quit()
        srv.should_exit = True


if __name__ == "__main__":
    main()
