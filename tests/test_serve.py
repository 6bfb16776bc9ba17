"""``mask2former serve``'s API through an in-process client (issue 25): a good image gives the
``segment`` command's record, every kind of bad input a 400/413 with a JSON error, a full queue
a 503 (made deterministic with a pipeline stub that blocks), queued requests run in batches,
a failing image fails alone, and nothing is written to disk. The built-in model is real."""

from __future__ import annotations

import base64
import io
import json
import tempfile
import threading
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
with warnings.catch_warnings():  # starlette 1.x would rather have httpx2 than httpx
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient

from mask2former.inference.images import load_image  # noqa: E402
from mask2former.inference.options import ModelInfo  # noqa: E402
from mask2former.inference.outputs import image_record  # noqa: E402
from mask2former.inference.pipeline import build_pipeline  # noqa: E402
from mask2former.inference.results import SegmentationResult  # noqa: E402
from mask2former.serve import ServerOptions, ServeSettings, build_app  # noqa: E402
from mask2former.serve.batcher import Batcher, QueueFull, ShuttingDown  # noqa: E402
from mask2former.visualize import _segment_colors  # noqa: E402

EXAMPLE = "examples/shapes.png"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # other jobs share these cores
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline("shapes")


@pytest.fixture(scope="module")
def client(pipeline):
    with TestClient(build_app(pipeline)) as c:
        yield c


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "shapes.png", **fields):
    return dict(files={"image": (name, data, "image/png")}, data=fields)


def example() -> bytes:
    with open(EXAMPLE, "rb") as fh:
        return fh.read()


# -- a good image ---------------------------------------------------------------------------


def test_segment_answers_the_segment_commands_record(client, pipeline):
    r = client.post("/v1/segment", **upload(example()))
    assert r.status_code == 200, r.text
    got = r.json()
    image = load_image(EXAMPLE)
    expected = image_record(
        "shapes.png", pipeline.predict([image], pipeline.info.options())[0], "shapes"
    )
    assert got == json.loads(json.dumps(expected))
    assert list(got) == ["image", "height", "width", "task", "model", "segments"]
    assert (got["height"], got["width"], got["task"]) == (384, 384, "panoptic")
    assert len(got["segments"]) >= 5
    keys = {"id", "label_id", "label", "score", "area", "bbox", "was_fused", "segmentation"}
    assert all(set(s) == keys for s in got["segments"])


def test_task_and_threshold_are_honoured(client):
    instance = client.post("/v1/segment", **upload(example(), task="instance")).json()
    assert instance["task"] == "instance"
    strict = client.post("/v1/segment", **upload(example(), task="instance", threshold="0.99"))
    assert strict.status_code == 200
    assert len(strict.json()["segments"]) < len(instance["segments"])
    assert all(s["score"] >= 0.99 for s in strict.json()["segments"])
    semantic = client.post("/v1/segment", **upload(example(), task="semantic", threshold=""))
    assert semantic.json()["task"] == "semantic"


def test_overlay_in_json_and_as_png(client):
    answer = client.post("/v1/segment?overlay=1", **upload(example())).json()
    png = base64.b64decode(answer.pop("overlay_png"))
    colors = answer.pop("overlay_colors")
    assert Image.open(io.BytesIO(png)).size == (384, 384)
    plain = client.post("/v1/overlay", **upload(example()))
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert plain.content == png
    drawn = _segment_colors(answer["segments"])  # what draw_overlay painted
    expected = {str(k): "#{:02x}{:02x}{:02x}".format(*rgb) for k, rgb in drawn.items()}
    assert colors == expected


def test_model_health_docs_and_page(client):
    model = client.get("/v1/model").json()
    assert model["labels"]["0"] == "circle" and model["task"] == "panoptic"
    assert model["backend"] == "torch" and model["threshold"] == 0.4
    assert model["input_size"] == {"longest_edge": 1024, "shortest_edge": 256}
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/segment", "/v1/overlay", "/v1/model", "/healthz"} <= set(paths)
    form = paths["/v1/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["image"]
    page = client.get("/")
    assert page.status_code == 200 and "static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    missing = client.get("/static/secret.py")
    assert missing.status_code == 404 and "error" in missing.json()


# -- bad input --------------------------------------------------------------------------------


def _bad_requests():
    good = example()
    tiny = png_bytes(np.zeros((4, 4, 3), np.uint8))
    thin = png_bytes(np.zeros((8, 400, 3), np.uint8))
    return {
        "not an image": (upload(b"hello, world"), "not an image"),
        "truncated": (upload(good[:2000]), "cannot read image"),
        "empty": (upload(b""), "empty file"),
        "too small": (upload(tiny), "too small"),
        "extreme aspect": (upload(thin), "aspect"),
        "bad task": (upload(good, task="bogus"), "task must be one of"),
        "threshold out of range": (upload(good, threshold="1.5"), "threshold"),
        "threshold negative": (upload(good, threshold="-0.1"), "threshold"),
        "threshold not a number": (upload(good, threshold="abc"), "threshold"),
        "threshold nan": (upload(good, threshold="nan"), "threshold"),
        "no image": (dict(files={"task": (None, "panoptic")}), "no image"),
        "unknown field": (dict(files={"picture": ("a.png", good)}), "unknown form field"),
        "not multipart": (dict(content=b"{}", headers={"content-type": "application/json"}),
                          "multipart/form-data"),
        "broken multipart": (
            dict(content=b"--xyz\r\nbroken", headers={"content-type": "multipart/form-data; boundary=xyz"}),
            "",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_bad_requests()))
def test_bad_input_is_400_naming_the_problem(client, case):
    request, words = _bad_requests()[case]
    r = client.post("/v1/segment", **request)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    assert client.get("/healthz").status_code == 200  # and the server lives on


def test_bad_query_and_routes_are_json_errors(client):
    r = client.post("/v1/segment?overlay=maybe", **upload(example()))
    assert r.status_code == 400 and "overlay" in r.json()["error"]
    assert client.get("/v1/nothing").json() == {"error": "Not Found"}
    assert client.get("/v1/segment").status_code == 405


def test_upload_over_the_limit_is_413(pipeline):
    limit = len(example()) + 1000  # the example's body fits, with its form around it
    with TestClient(build_app(pipeline, ServeSettings(max_upload_bytes=limit))) as c:
        big = upload(np.random.default_rng(0).bytes(limit), name="big.png")
        r = c.post("/v1/segment", **big)
        assert r.status_code == 413 and "upload too large" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(20):
                yield b"x" * (limit // 10)

        headers = {"content-type": "multipart/form-data; boundary=b"}
        r = c.post("/v1/segment", content=chunks(), headers=headers)
        assert r.status_code == 413 and "upload too large" in r.json()["error"]
        assert c.post("/v1/segment", **upload(example())).status_code == 200


def test_nothing_is_written_to_disk(client, monkeypatch):
    """A 1.9 MB upload (over the 1 MB at which form parsers spool to a temporary file)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the service wrote a temporary file")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noise = np.random.default_rng(0).integers(0, 255, (800, 800, 3), dtype=np.uint8)
    data = png_bytes(noise)
    assert len(data) > 1_500_000
    r = client.post("/v1/segment", **upload(data, name="noise.png"))
    assert r.status_code == 200 and r.json()["image"] == "noise.png"


# -- load: a pipeline stub that blocks --------------------------------------------------------


class BlockingPipeline:
    """Stands in for Pipeline: blocks in ``run`` until released; records the batches. Its
    segment's area is the image's red pixels and its score the request's threshold, so each
    answer shows which image and which request it came from; a white corner pixel fails."""

    name = "stub"

    def __init__(self) -> None:
        self.info = ModelInfo({0: "red"})
        self.processor = SimpleNamespace(size={"shortest_edge": 32}, size_divisor=32)
        self.runner = None
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches = []

    def run(self, images, requests, batch_size=1):
        self.batches.append(len(images))
        self.entered.set()
        assert self.release.wait(30), "the test never released the stub"
        if any((im[0, 0] == 255).all() for im in images):
            raise RuntimeError("this image breaks the model")
        return [[self._result(im, r) for r in requests] for im in images]

    def _result(self, image, request):
        seg = (image[..., 0] > 128).astype(np.int32)
        segment = dict(id=1, label_id=0, label="red", score=request.threshold,
                       area=int(seg.sum()), bbox=[0, 0, 1, 1], was_fused=False)  # fmt: skip
        return SegmentationResult(request.task, image.shape[:2], seg, [segment])


def red(pixels: int) -> np.ndarray:
    image = np.zeros((16, 16, 3), np.uint8)
    image.reshape(-1, 3)[:pixels, 0] = 200
    return image


def test_full_queue_is_503_and_recovers():
    stub = BlockingPipeline()
    settings = ServeSettings(max_batch=1, queue_size=1)
    with TestClient(build_app(stub, settings)) as c:
        batcher = c.app.state.service.batcher
        options = stub.info.options()
        running = batcher.submit(red(1), options)  # the worker takes it and blocks
        assert stub.entered.wait(10)
        waiting = batcher.submit(red(2), options)  # fills the queue of one
        with pytest.raises(QueueFull):
            batcher.submit(red(3), options)
        r = c.post("/v1/segment", **upload(png_bytes(red(4))))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "busy" in r.json()["error"]
        assert c.get("/healthz").json()["waiting"] == 1
        stub.release.set()
        assert running.result(10).segments[0]["area"] == 1
        assert waiting.result(10).segments[0]["area"] == 2
        r = c.post("/v1/segment", **upload(png_bytes(red(5))))
        assert r.status_code == 200 and r.json()["segments"][0]["area"] == 5


def test_queued_requests_run_together_each_with_its_own_request():
    stub = BlockingPipeline()
    with TestClient(build_app(stub, ServeSettings(max_batch=4, queue_size=8))) as c:
        batcher = c.app.state.service.batcher
        first = batcher.submit(red(1), stub.info.options())
        assert stub.entered.wait(10)
        thresholds = [0.1, 0.2, 0.1, 0.3, 0.2]
        futures = [
            batcher.submit(red(10 + i), stub.info.options(threshold=t))
            for i, t in enumerate(thresholds)
        ]
        stub.release.set()
        first.result(10)
        got = [
            (f.result(10).segments[0]["area"], f.result(10).segments[0]["score"]) for f in futures
        ]
    assert got == [(10 + i, t) for i, t in enumerate(thresholds)]
    assert stub.batches == [1, 4, 1]  # the blocked one, then at most max_batch at a time


def test_a_failing_image_fails_alone_and_the_server_lives():
    stub = BlockingPipeline()
    stub.release.set()
    with TestClient(build_app(stub, ServeSettings(max_batch=4))) as c:
        batcher = c.app.state.service.batcher
        stub.release.clear()
        stub.entered.clear()
        blocker = batcher.submit(red(1), stub.info.options())
        assert stub.entered.wait(10)
        white = np.full((16, 16, 3), 255, np.uint8)
        bad, good = (batcher.submit(im, stub.info.options()) for im in (white, red(7)))
        stub.release.set()
        blocker.result(10)
        with pytest.raises(RuntimeError, match="breaks the model"):
            bad.result(10)
        assert good.result(10).segments[0]["area"] == 7  # retried alone after the batch failed
        r = c.post("/v1/segment", **upload(png_bytes(white)))
        assert r.status_code == 500 and "breaks the model" in r.json()["error"]
        assert c.post("/v1/segment", **upload(png_bytes(red(3)))).status_code == 200


def test_a_gone_client_is_skipped_and_stop_fails_the_waiting():
    stub = BlockingPipeline()
    batcher = Batcher(stub, max_batch=1, queue_size=4)
    options = stub.info.options()
    running = batcher.submit(red(1), options)
    assert stub.entered.wait(10)
    gone = batcher.submit(red(2), options)
    assert gone.cancel()  # what asyncio does to the job of a request whose client went away
    after = batcher.submit(red(3), options)
    stub.release.set()
    assert after.result(10).segments[0]["area"] == 3
    assert running.result(10).segments[0]["area"] == 1
    assert stub.batches == [1, 1]  # the cancelled job never reached the model
    stub.release.clear()
    blocked = batcher.submit(red(4), options)
    waiting = batcher.submit(red(5), options)
    stopper = threading.Thread(target=batcher.stop)
    deadline = time.monotonic() + 10
    while stub.batches != [1, 1, 1]:  # until the worker holds red(4)
        assert time.monotonic() < deadline, "the worker never took the job"
        stub.entered.wait(0.01)
    stopper.start()
    with pytest.raises(ShuttingDown):
        waiting.result(10)
    stub.release.set()
    stopper.join(10)
    assert blocked.result(10).segments[0]["area"] == 4  # the running batch finishes
    with pytest.raises(ShuttingDown):
        batcher.submit(red(6), options)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="queue_size"):
        ServeSettings(queue_size=0)
    with pytest.raises(ValueError, match="max_batch"):
        ServeSettings(max_batch=True)
    with pytest.raises(ValueError, match="port"):
        ServerOptions(port=70000)
    with pytest.raises(ValueError, match="workers"):
        ServerOptions(workers=0)
