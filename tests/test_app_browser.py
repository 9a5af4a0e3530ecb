"""`kdcicam app` driven in a real headless browser (Debian's chromium + chromedriver, through selenium):
upload several photos (two good, one corrupt, one too large in bytes, one too large in pixels), check the
messages on the page, move the threshold slider and see the drawn box change without a model run, pick
another class, download the boxes as JSON and COCO and check the files against the Localizer.

Skips when chromium, chromedriver or selenium is missing, unless KDCICAM_REQUIRE_BROWSER=1 (as .ci/run
sets it, after installing them): then their absence fails.

Run as a script, it saves a screenshot of the page for the README:
``python tests/test_app_browser.py RUN IMAGE... --out docs/images/app.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

WAIT_S = 30


def _missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no chromium on PATH (apt-get install chromium chromium-driver; .ci/run does it)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (apt-get install chromium-driver; .ci/run does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def start_browser(download_dir: Path, width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--no-first-run"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def serve(localizer, limits=None):
    from kdcicam.app import make_server

    server = make_server(localizer, "127.0.0.1", 0, limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def upload(driver, paths: Sequence[Path]) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    wait_for("the uploads", lambda: "photo(s) shown" in driver.find_element(By.ID, "status").text)


def downloaded(folder: Path, name: str) -> Any:
    path = folder / name
    wait_for(f"the download {name}", lambda: path.is_file() and not list(folder.glob("*.crdownload")))
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    why = _missing()
    if why:
        if os.environ.get("KDCICAM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"KDCICAM_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    downloads = tmp_path_factory.mktemp("downloads")
    driver = start_browser(downloads)
    yield driver, downloads
    driver.quit()


def test_the_page_in_a_browser(browser, trained_run: Path, tiny_data: Path, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from kdcicam import Localizer
    from kdcicam.app import UploadLimits

    driver, downloads = browser
    sources = sorted(p for p in (tiny_data / "images" / "test").rglob("*.png") if not p.stem.endswith("_mask"))
    photos = tmp_path / "photos"
    photos.mkdir()
    good = [photos / "first photo.png", photos / "second.jpg"]
    Image.open(sources[3]).convert("RGB").resize((240, 180), Image.Resampling.BICUBIC).save(good[0])
    Image.open(sources[12]).convert("RGB").resize((160, 200), Image.Resampling.BICUBIC).save(good[1], quality=92)
    corrupt = photos / "corrupt.jpg"
    corrupt.write_bytes(good[1].read_bytes()[:300])
    huge = photos / "huge.png"
    Image.new("L", (1500, 1000)).save(huge)  # a few kB that decode to 1.5 MP
    heavy = photos / "heavy.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(heavy)
    limits = UploadLimits(max_bytes=200_000, max_pixels=1_000_000)
    assert all(p.stat().st_size < limits.max_bytes for p in (*good, huge)) and heavy.stat().st_size > limits.max_bytes

    server = serve(Localizer.from_checkpoint(trained_run, device="cpu"), limits)
    try:
        driver.get(server.url)
        wait_for("the page", lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        cfg = server.app.config()
        upload(driver, [good[0], corrupt, heavy, good[1], huge])

        # two cards; one message per refused file, each naming it and saying why
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
        assert len(cards) == 2 and server.app.model_runs == 2
        messages = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]
        assert len(messages) == 3, messages
        assert any("corrupt.jpg" in m and "cannot read" in m for m in messages), messages
        assert any("heavy.png" in m and "upload limit" in m for m in messages), messages
        assert any("huge.png" in m and "MP" in m for m in messages), messages

        # the default threshold is the one chosen on val, and its box is kdcicam localize's
        slider = driver.find_element(By.ID, "threshold")
        assert int(slider.get_attribute("value")) == cfg["default_index"]
        canvas = cards[0].find_element(By.TAG_NAME, "canvas")
        before_boxes = json.loads(canvas.get_attribute("data-boxes"))
        before_pixels = driver.execute_script("return arguments[0].toDataURL();", canvas)
        [r] = Localizer.from_checkpoint(trained_run, device="cpu").predict(good[0])
        np.testing.assert_allclose(np.asarray(before_boxes).reshape(-1, 4), r.boxes, atol=0.005)

        # moving the slider redraws another box, from what the page has: the model does not run again
        far_end = len(cfg["thresholds"]) - 1 if cfg["default_index"] < len(cfg["thresholds"]) // 2 else 0
        slider.send_keys(Keys.END if far_end else Keys.HOME)
        wait_for("the slider", lambda: int(slider.get_attribute("value")) == far_end)
        after_boxes = json.loads(canvas.get_attribute("data-boxes"))
        after_pixels = driver.execute_script("return arguments[0].toDataURL();", canvas)
        assert after_boxes != before_boxes and after_pixels != before_pixels
        assert server.app.model_runs == 2
        slider.send_keys(Keys.HOME, Keys.ARROW_RIGHT * 15)
        index = int(slider.get_attribute("value"))
        threshold = cfg["thresholds"][index]
        assert index == 15 and driver.find_element(By.ID, "threshold-value").text == "0.15"
        shown = json.loads(canvas.get_attribute("data-boxes"))
        reference = Localizer.from_checkpoint(trained_run, device="cpu", threshold=threshold)
        for photo, card in zip(good, cards, strict=True):
            [r] = reference.predict(photo)
            boxes = json.loads(card.find_element(By.TAG_NAME, "canvas").get_attribute("data-boxes"))
            np.testing.assert_allclose(np.asarray(boxes).reshape(-1, 4), r.boxes, atol=0.005)

        # the class selector: top-5 of a 4-class model; the second class shows its own CAM
        select = Select(cards[1].find_element(By.CSS_SELECTOR, "select.class-select"))
        assert len(select.options) == 4 and select.options[0].text.startswith("1. ")
        second_map_before = driver.execute_script("return arguments[0].toDataURL();",
                                                  cards[1].find_element(By.TAG_NAME, "canvas"))
        select.select_by_index(1)
        assert "this class's CAM" in cards[1].find_element(By.CSS_SELECTOR, ".map-kind").text
        assert driver.execute_script("return arguments[0].toDataURL();",
                                     cards[1].find_element(By.TAG_NAME, "canvas")) != second_map_before
        second_class = reference.predict(good[1])[0].class_ids[1]
        second_boxes = json.loads(cards[1].find_element(By.TAG_NAME, "canvas").get_attribute("data-boxes"))

        # downloads: what is on the page, at this threshold
        driver.find_element(By.ID, "download-json").click()
        doc = downloaded(downloads, "kdcicam_boxes.json")
        assert doc["threshold"] == threshold and doc["val_threshold"] == cfg["threshold"] and doc["num_images"] == 2
        first, second = doc["images"]
        assert (first["image_id"], first["file"], first["width"], first["height"]) == (1, "first photo.png", 240, 180)
        assert [[b[k] for k in ("x0", "y0", "x1", "y1")] for b in first["boxes"]] == shown
        assert second["class_id"] == second_class and second["file"] == "second.jpg"
        assert [[b[k] for k in ("x0", "y0", "x1", "y1")] for b in second["boxes"]] == second_boxes
        driver.find_element(By.ID, "download-coco").click()
        coco = downloaded(downloads, "kdcicam_coco_detections.json")
        expected = [(1, first["class_id"] + 1, b) for b in shown] + [(2, second_class + 1, b) for b in second_boxes]
        assert len(coco) == len(expected)
        for det, (image_id, category_id, (x0, y0, x1, y1)) in zip(coco, expected, strict=True):
            assert (det["image_id"], det["category_id"]) == (image_id, category_id)
            assert det["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.006)

        # after all that, the page still answers
        answer = driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                             "fetch('/api/config').then(r => r.text()).then(done, e => done(String(e)));")
        assert json.loads(answer)["method"] == "cam"
        shot = tmp_path / "app.png"
        assert driver.save_screenshot(str(shot))
        with Image.open(shot) as im:
            assert im.size[0] > 600
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------ the README's screenshot
def screenshot(run: str, images: Sequence[str], out: str, threshold_steps: int = 0, height: int = 980) -> None:
    """Upload ``images`` to a page serving ``run`` and save the page (PNG) to ``out`` atomically."""
    import tempfile

    from kdcicam import Localizer
    from kdcicam.viz import atomic_write_bytes

    server = serve(Localizer.from_checkpoint(run, device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        driver = start_browser(Path(tmp), width=1280, height=height)
        try:
            driver.get(server.url)
            wait_for("the page", lambda: driver.find_element("tag name", "body").get_attribute("data-ready") == "1")
            upload(driver, [Path(p).resolve() for p in images])
            if threshold_steps:
                from selenium.webdriver.common.keys import Keys

                key = Keys.ARROW_RIGHT if threshold_steps > 0 else Keys.ARROW_LEFT
                driver.find_element("id", "threshold").send_keys(key * abs(threshold_steps))
            time.sleep(0.5)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
    atomic_write_bytes(out, png)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=screenshot.__doc__)
    parser.add_argument("run")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threshold-steps", type=int, default=0, help="slider steps to move after the upload")
    a = parser.parse_args()
    screenshot(a.run, a.images, a.out, a.threshold_steps)
