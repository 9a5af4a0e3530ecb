"""`kdcicam app`'s server without a browser: the slider's boxes are the Localizer's at every threshold,
the class selector's maps are each class's own CAM, bad uploads and bad requests get a message (and the
server stays up), downloads are well-formed, and the CLI refuses what is not a checkpoint (exit 2).

The page itself is driven in a real browser by test_app_browser.py."""
from __future__ import annotations

import http.client
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

import _proc  # `kdcicam` commands as processes forked from one preloaded server
from kdcicam.cli import main


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def synth_image(tiny_data: Path, i: int = 0, size: tuple[int, int] = (120, 96)) -> Image.Image:
    sources = sorted(p for p in (tiny_data / "images" / "test").rglob("*.png") if not p.stem.endswith("_mask"))
    return Image.open(sources[i]).convert("RGB").resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def localizer(trained_run: Path):
    from kdcicam import Localizer

    return Localizer.from_checkpoint(trained_run, device="cpu")


@pytest.fixture()
def server(localizer) -> Iterator:
    from kdcicam.app import UploadLimits, make_server

    srv = make_server(localizer, "127.0.0.1", 0, UploadLimits(max_bytes=300_000, max_pixels=1_000_000))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def request(srv, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def post_image(srv, data: bytes, name: str) -> tuple[int, dict]:
    status, _, body = request(srv, "POST", f"/api/localize?name={name}", data,
                              {"Content-Type": "application/octet-stream"})
    return status, json.loads(body)


# ------------------------------------------------------------------------ the slider's rule
def test_slider_boxes_are_the_localizers_at_every_threshold(trained_run: Path, tiny_data: Path):
    """Every slider position gives exactly the boxes kdcicam localize --threshold T would write."""
    from kdcicam import Localizer
    from kdcicam.app import LocalizerApp

    app = LocalizerApp(Localizer.from_checkpoint(trained_run, device="cpu"))
    image = synth_image(tiny_data, 3, (150, 110))
    res = app.localize(png_bytes(image), "x.png")
    top1 = res["classes"][0]
    assert len(top1["boxes"]) == len(app.thresholds) >= 100
    assert app.thresholds[app.config()["default_index"]] == app.localizer.threshold
    reference = Localizer.from_checkpoint(trained_run, device="cpu")
    [r] = reference.predict(image)
    scale = np.array([150 / reference.image_size, 110 / reference.image_size] * 2)  # grid → original pixels
    seen = set()
    for i, t in enumerate(app.thresholds):
        reference.threshold = t
        if i % 25 == 0 or t == app.localizer.threshold:  # the whole path, model included, at a few thresholds
            [r] = reference.predict(image)
            expected = r.boxes
        else:  # the Localizer's box rule on the same score map
            expected = reference.boxes_on_grid(r.cam) * scale
        assert r.class_ids[0] == top1["class_id"]
        np.testing.assert_allclose(np.asarray(top1["boxes"][i], dtype=np.float64).reshape(-1, 4), expected,
                                   atol=0.005, err_msg=f"threshold {t}")
        seen.add(json.dumps(top1["boxes"][i]))
    assert len(seen) > 3  # the slider does move the box on this image
    assert res["width"] == 150 and res["height"] == 110


class ChannelModel(nn.Module):
    """Class c's CAM is colour channel c, so each class's box is known: where that colour was painted."""

    num_classes = 3
    method = "channels"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x.mean((2, 3)) * 10, "cams": x}

    def localization_map(self, out: dict[str, torch.Tensor], kind: str = "combinational",
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        idx = out["logits"].argmax(1) if kind != "gt" else torch.as_tensor(labels)
        return out["cams"][torch.arange(out["cams"].shape[0]), idx]


def test_the_class_selector_shows_each_classs_own_map():
    from kdcicam import Localizer
    from kdcicam.app import LocalizerApp

    image = Image.new("RGB", (200, 100), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 10, 89, 89], fill=(255, 0, 0))   # red: the largest area, class 0 is the top-1
    draw.rectangle([130, 40, 169, 79], fill=(0, 255, 0))  # green: class 1, second
    loc = Localizer(ChannelModel(), image_size=100, threshold=0.5, class_names=["red", "green", "blue"], topk=3,
                    device="cpu", channels_last=False, map_kind="top1")
    res = LocalizerApp(loc).localize(png_bytes(image), "rg.png")
    assert [c["class_name"] for c in res["classes"][:2]] == ["red", "green"]
    i = LocalizerApp(loc).thresholds.index(0.5)
    (red,) = res["classes"][0]["boxes"][i]
    (green,) = res["classes"][1]["boxes"][i]
    assert np.allclose(red, [10, 10, 90, 90], atol=2.01) and np.allclose(green, [130, 40, 170, 80], atol=2.01)
    assert res["classes"][2]["boxes"][i] == []  # blue: a constant map has no foreground
    assert "evaluated" in res["classes"][0]["map"] and "CAM" in res["classes"][1]["map"]


# ------------------------------------------------------------------------ endpoints
def test_pages_config_and_a_good_upload(server, localizer, tiny_data: Path):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and b"/static/app.js" in body and "default-src 'self'" in headers["Content-Security-Policy"]
    for path in ("/static/app.js", "/static/app.css"):
        assert request(server, "GET", path)[0] == 200
    status, _, body = request(server, "GET", "/api/config")
    cfg = json.loads(body)
    assert cfg["thresholds"][cfg["default_index"]] == localizer.threshold and cfg["method"] == "cam"
    assert cfg["max_bytes"] == 300_000 and cfg["max_pixels"] == 1_000_000
    status, res = post_image(server, png_bytes(synth_image(tiny_data, 1)), "bird%20one.png")
    assert status == 200 and res["name"] == "bird one.png"
    assert len(res["classes"]) == 4  # top-5 of a 4-class checkpoint
    assert res["preview"].startswith("data:image/jpeg;base64,")
    for c in res["classes"]:
        assert c["heatmap"].startswith("data:image/png;base64,") and len(c["boxes"]) == len(cfg["thresholds"])
    assert request(server, "GET", "/nope")[0] == 404


def test_bad_uploads_get_a_message_and_the_server_stays_up(server, tiny_data: Path):
    runs = server.app.model_runs
    # bytes over the limit: refused from the Content-Length, before the body is read
    status, res = post_image(server, os.urandom(300_001), "big.jpg")
    assert status == 413 and "big.jpg" in res["error"] and "upload limit" in res["error"]
    # a small file that declares a huge image: refused from its header, nothing decoded
    status, res = post_image(server, png_bytes(Image.new("L", (1200, 1000))), "huge.png")
    assert status == 413 and "1200 × 1000" in res["error"] and "MP" in res["error"]
    # corrupt: a truncated JPEG, and bytes that are no image at all
    jpeg = png_bytes(synth_image(tiny_data, 2), "JPEG")
    status, res = post_image(server, jpeg[: len(jpeg) // 2], "cut.jpg")
    assert status == 400 and "cut.jpg" in res["error"] and "cannot read" in res["error"]
    status, res = post_image(server, b"not an image at all", "notes.txt")
    assert status == 400 and "notes.txt" in res["error"]
    status, res = post_image(server, b"", "empty.png")
    assert status == 400 and "empty" in res["error"]
    # no Content-Length, a foreign Host (DNS rebinding), a bad export
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/api/localize?name=x.png")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()
    assert request(server, "GET", "/api/config", headers={"Host": "evil.example:80"})[0] == 403
    assert server.app.model_runs == runs  # nothing bad reached the model
    status, res = post_image(server, png_bytes(synth_image(tiny_data, 4)), "fine.png")
    assert status == 200 and server.app.model_runs == runs + 1


def test_downloads(server, localizer, tiny_data: Path):
    _, res = post_image(server, png_bytes(synth_image(tiny_data, 5, (90, 70))), "a.png")
    idx = server.app.thresholds.index(0.3)
    second = res["classes"][1]
    boxes = second["boxes"][idx]
    selection = {"threshold": 0.3, "images": [{"image_id": 1, "file": "a.png", "width": 90, "height": 70,
                                               "class_id": second["class_id"], "score": second["score"],
                                               "boxes": boxes}]}
    body = json.dumps(selection).encode()
    status, headers, data = request(server, "POST", "/api/export?format=json", body)
    doc = json.loads(data)
    assert status == 200 and 'filename="kdcicam_boxes.json"' in headers["Content-Disposition"]
    assert doc["threshold"] == 0.3 and doc["val_threshold"] == localizer.threshold and doc["method"] == "cam"
    [im] = doc["images"]
    assert im["class_name"] == localizer.class_names[second["class_id"]]
    assert [[b[k] for k in ("x0", "y0", "x1", "y1")] for b in im["boxes"]] == boxes
    status, headers, data = request(server, "POST", "/api/export?format=coco", body)
    coco = json.loads(data)
    assert status == 200 and len(coco) == len(boxes)
    for det, (x0, y0, x1, y1) in zip(coco, boxes, strict=True):
        assert det["image_id"] == 1 and det["category_id"] == second["class_id"] + 1
        assert det["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.006) and det["score"] == second["score"]
    bad = [({"threshold": 1.5, "images": selection["images"]}, "threshold"),
           ({"threshold": 0.3, "images": []}, "upload a photo"),
           ({"threshold": 0.3, "images": [{**selection["images"][0], "class_id": 99}]}, "class_id"),
           ({"threshold": 0.3, "images": [{**selection["images"][0], "boxes": [[0, 0, 500, 5]]}]}, "inside")]
    for req, word in bad:
        status, _, data = request(server, "POST", "/api/export?format=coco", json.dumps(req).encode())
        assert status == 400 and word in json.loads(data)["error"]
    status, _, data = request(server, "POST", "/api/export?format=xml", body)
    assert status == 400 and "format" in json.loads(data)["error"]
    status, _, data = request(server, "POST", "/api/export", b"{not json")
    assert status == 400 and "not JSON" in json.loads(data)["error"]


# ------------------------------------------------------------------------ the command
def test_cli_refuses_what_is_not_a_checkpoint(tmp_path: Path, capsys, trained_run: Path):
    fake = tmp_path / "model.ckpt"
    fake.write_bytes(b"this is not a checkpoint")
    assert main(["app", str(fake)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.ckpt" in err and "checkpoint" in err
    assert main(["app", str(tmp_path)]) == 2  # a folder without checkpoints
    assert "no checkpoints" in capsys.readouterr().err
    assert main(["app", str(trained_run), "--port", "70000"]) == 2
    assert main(["app", str(trained_run), "--max-upload-mb", "0"]) == 2


def test_cli_serves_until_interrupted(trained_run: Path, tmp_path: Path):
    """`kdcicam app` in a process of its own (forked from the preloaded server of tests/_proc.py: no new
    interpreter start-up) serves the page, and a SIGTERM stops it with exit code 0."""
    log = tmp_path / "app.log"
    proc = _proc.start(["app", str(trained_run), "--port", "0", "--device", "cpu"], tmp_path, log)
    try:
        url, deadline = None, time.monotonic() + 900  # pytest's own per-test limit
        while url is None and proc.alive() and time.monotonic() < deadline:
            served = [ln for ln in proc.output().splitlines() if "serving http://127.0.0.1:" in ln]
            url = served[0].split("serving ", 1)[1].split()[0] if served else None
            time.sleep(0.05)
        assert url, proc.output()[-2000:] or "no URL printed"
        host_port = url.removeprefix("http://").rstrip("/")
        conn = http.client.HTTPConnection(host_port, timeout=20)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and b"kdcicam" in resp.read()  # the page ships with the package
        conn.close()
        proc.signal(signal.SIGTERM)  # as `kill` sends it; Ctrl-C takes the same path
        assert proc.wait(60) == 0, proc.output()[-2000:]
    finally:
        if proc.alive():
            proc.signal(signal.SIGKILL)
            proc.wait()
