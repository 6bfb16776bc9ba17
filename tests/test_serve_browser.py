"""The web page of ``mask2former serve`` in a real browser (Debian's chromium and
chromium-driver, driven by selenium): upload examples/shapes.png, wait for the overlay and the
legend, check the colours and the in-browser RLE decoding, highlight a segment by hovering the
legend and the picture, show an error for a non-image, take a screenshot.

Skipped (with the reason) where no browser is installed, except under ``CI``, where that is a
failure. ``MASK2FORMER_SCREENSHOT=docs/serve_page.png`` also saves the README's screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shapes.png"


def _browser():
    """(chromium, chromedriver) paths, or a skip (a failure under CI) saying what is missing."""
    missing = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the test extra)")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        missing.append("fastapi and uvicorn (the serve extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing.append("chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    if missing:
        message = "no browser test: missing " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run this test")
        print(message)
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="module")
def server():
    """The service of the built-in model on a free loopback port, in a thread."""
    _browser()
    import uvicorn

    from mask2former.inference.pipeline import build_pipeline
    from mask2former.serve import build_app

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(build_pipeline("shapes")), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _wait(driver, condition, what: str, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def _highlighted_pixels(driver) -> int:
    """Pixels of the highlight canvas that are drawn (dimmed or outlined)."""
    return driver.execute_script(
        "const c = document.getElementById('highlight');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;"
    )


def _upload(driver, path: Path, done: int) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "file").send_keys(str(path))
    _wait(
        driver,
        lambda d: d.execute_script("return document.body.dataset.done") == str(done)
        and d.execute_script("const i = document.getElementById('overlay');"
                             "return i.complete && i.naturalWidth > 0;"),
        "the overlay never appeared",
    )  # fmt: skip


def test_the_page_segments_and_highlights(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 3,
          "the model's tasks never loaded")  # fmt: skip
    assert browser.find_element(By.ID, "task").get_attribute("value") == "panoptic"
    assert browser.find_element(By.ID, "threshold-value").text == "0.40"  # the model's own
    _upload(browser, EXAMPLE, done=1)
    record = browser.execute_script("return window.mask2former.state.record")
    rows = browser.find_elements(By.CSS_SELECTOR, "#legend tbody tr")
    assert len(rows) == len(record["segments"]) >= 5
    first = record["segments"][0]
    assert rows[0].text.split()[:2] == [str(first["id"]), first["label"]]
    # The RLE decoded in JavaScript covers exactly each segment's area.
    areas = browser.execute_script(
        "return window.mask2former.state.record.segments.map("
        "s => window.mask2former.decodeMask(s.segmentation).reduce((a, b) => a + b, 0));"
    )
    assert areas == [s["area"] for s in record["segments"]]
    assert _highlighted_pixels(browser) == 0

    ActionChains(browser).move_to_element(rows[-1]).perform()  # hover a legend row
    assert "active" in rows[-1].get_attribute("class")
    assert (
        browser.execute_script("return window.mask2former.state.shown")
        == record["segments"][-1]["id"]
    )
    assert _highlighted_pixels(browser) > 0

    # Hover the picture: a pixel of a thing segment, at its bounding box's centre.
    canvas = browser.find_element(By.ID, "highlight")
    x, y, seg_id = browser.execute_script(
        "const s = window.mask2former.state, w = s.record.width;"
        "for (const g of s.record.segments) { const [x, y, bw, bh] = g.bbox;"
        "  const cx = Math.floor(x + bw / 2), cy = Math.floor(y + bh / 2);"
        "  if (!g.was_fused && s.idMap[cy * w + cx] === g.id) return [cx, cy, g.id]; }"
    )
    # Offsets count from the visible part's centre: the whole picture must be in view.
    assert browser.execute_script(
        "return document.getElementById('highlight').getBoundingClientRect().bottom"
        " <= window.innerHeight"
    )
    scale = canvas.size["width"] / record["width"]  # displayed pixels per image pixel
    dx = (x + 0.5) * scale - canvas.size["width"] / 2
    dy = (y + 0.5) * scale - canvas.size["height"] / 2
    ActionChains(browser).move_to_element_with_offset(canvas, round(dx), round(dy)).perform()
    assert browser.execute_script("return window.mask2former.state.shown") == seg_id

    away = browser.find_element(By.TAG_NAME, "h1")
    ActionChains(browser).click(rows[-1]).move_to_element(away).perform()  # pin, move away
    assert (
        browser.execute_script("return window.mask2former.state.pinned")
        == record["segments"][-1]["id"]
    )
    assert "pinned" in rows[-1].get_attribute("class")
    assert (
        browser.execute_script("return window.mask2former.state.shown")
        == record["segments"][-1]["id"]
    )
    assert browser.find_element(By.ID, "download-json").get_attribute("download") == "shapes.json"
    assert not browser.find_element(By.ID, "downloads").get_attribute("hidden")
    shot = tmp_path / "serve_page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    wanted = os.environ.get("MASK2FORMER_SCREENSHOT")
    if wanted:
        shutil.copyfile(shot, wanted)


def test_the_page_shows_errors(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server + "/")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task option")) == 3,
          "the model's tasks never loaded")  # fmt: skip
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    status = browser.find_element(By.ID, "status")
    _wait(browser, lambda d: "error" in status.text, "no error shown")
    assert "400" in status.text and "notes.png: not an image" in status.text
    assert "error" in status.get_attribute("class")
