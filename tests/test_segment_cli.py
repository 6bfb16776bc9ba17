"""``mask2former segment`` end to end: outputs per task and their consistency, bad inputs, COCO
results with pycocotools, --overwrite, output names, batching. Uses the tiny random checkpoint of
test_predictor (the built-in model is not needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former import cli
from tests.test_predictor import ID2LABEL, make_model_dir, scene

# Scenes on which the test model finds several segments in every task.
GOOD = {"a.png": 6, "b.png": 2, "c.png": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_predictor.one_thread
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return make_model_dir(tmp_path_factory.mktemp("model"))


def write_images(folder: Path, names=GOOD) -> Dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, index in names.items():
        images[name] = scene(index)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[name]).save(folder / name)
    return images


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mask2former ...`` in a fresh interpreter, as a user would run it."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASK2FORMER_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mask2former", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check_outputs(out: Path, name: str, image: np.ndarray, task: str) -> Dict[str, Any]:
    """The three files of one image exist and agree with each other; returns the JSON."""
    from pycocotools import mask as coco_mask

    record = json.loads((out / f"{name}.json").read_text())
    ids = np.asarray(Image.open(out / f"{name}.ids.png"))
    overlay = Image.open(out / f"{name}.overlay.png")
    h, w = image.shape[:2]
    assert (record["height"], record["width"], record["task"]) == (h, w, task)
    assert record["id_map"] == f"{os.path.basename(name)}.ids.png"
    assert ids.shape == (h, w) and ids.dtype == np.uint16
    assert overlay.size == (w, h) and overlay.mode == "RGB"
    segments = record["segments"]
    assert segments, "the test model should find segments in this image"
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in segments}
    for s in segments:
        assert s["label"] == ID2LABEL[s["label_id"]] and isinstance(s["was_fused"], bool)
        assert 0 <= s["score"] <= 1
        mask = coco_mask.decode(s["segmentation"]).astype(bool)
        visible = ids == s["id"]
        if task == "instance":  # whole instance mask; the map shows the top instance per pixel
            assert np.all(mask[visible])
        else:
            assert np.array_equal(mask, visible)
        assert s["area"] == int(mask.sum())
        assert s["bbox"] == [int(v) for v in coco_mask.toBbox(s["segmentation"])]
    if task == "semantic":
        assert all(s["id"] == s["label_id"] + 1 for s in segments)
    # The overlay is the photo with colour on it, not a blank canvas.
    assert np.abs(np.asarray(overlay, dtype=np.int16) - image).mean() > 5
    return record


def test_panoptic_through_the_module_entry_point(model_dir, tmp_path):
    images = write_images(tmp_path / "imgs")
    proc = run_module(
        "segment", "imgs/a.png", "imgs/b.png", "--model", model_dir, "--out", "out", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 image(s) segmented, 0 failed, 0 skipped" in proc.stdout
    for name in ("a", "b"):
        record = check_outputs(tmp_path / "out", name, images[f"{name}.png"], "panoptic")
        assert record["image"] == os.path.join("imgs", f"{name}.png")
        assert record["model"] == model_dir
    assert not (tmp_path / "out" / "coco_results.json").exists()  # instance task only


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_tasks_through_cli_main(model_dir, tmp_path, task, capsys):
    images = write_images(tmp_path / "imgs")
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "imgs"), "--model", model_dir, "--out", str(out)]
    assert cli.main(argv + ["--task", task]) == 0
    assert "3 image(s) segmented" in capsys.readouterr().out
    for name, image in images.items():
        check_outputs(out, name[:-4], image, task)
    assert (out / "coco_results.json").exists() == (task == "instance")


def test_instance_results_load_with_pycocotools(model_dir, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    write_images(tmp_path / "imgs")
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "imgs"), "--model", model_dir, "--out", str(out)]
    assert cli.main(argv + ["--task", "instance", "--no-progress"]) == 0
    results = json.loads((out / "coco_results.json").read_text())
    per_image = [json.loads((out / f"{n[:-4]}.json").read_text()) for n in sorted(GOOD)]
    assert len(results) == sum(len(r["segments"]) for r in per_image)

    # The images.json written next to the results is a valid COCO file for loadRes.
    coco = COCO(str(out / "images.json"))
    dets = coco.loadRes(str(out / "coco_results.json"))
    assert len(dets.getAnnIds()) == len(results)
    assert {c["id"] for c in coco.loadCats(coco.getCatIds())} == set(ID2LABEL)

    # And results evaluate against ground truth with the same image ids (here: the predictions
    # themselves as ground truth, so AP must be perfect).
    gt = json.loads((out / "images.json").read_text())
    gt["annotations"] = [
        dict(r, id=i + 1, area=float(d["area"]), bbox=[float(v) for v in d["bbox"]], iscrowd=0)
        for i, (r, d) in enumerate(zip(results, dets.loadAnns(dets.getAnnIds())))
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco_gt = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(out / "coco_results.json")), "segm")
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, all areas, 100 dets
    assert np.allclose(precision[precision > -1], 1.0)


def test_bad_inputs_are_reported_and_skipped(model_dir, tmp_path):
    images = write_images(tmp_path / "imgs", {"a.png": 6, "sub/b.png": 2})
    folder = tmp_path / "imgs"
    data = (folder / "a.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    (folder / "fake.jpg").write_text("this is not a JPEG")
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    Image.fromarray(np.zeros((5, 60, 3), np.uint8)).save(folder / "tiny.png")
    Image.fromarray(np.zeros((10, 300, 3), np.uint8)).save(folder / "wide.png")
    proc = run_module(
        "segment", "imgs", "missing.png", "--model", model_dir, "--out", "out", cwd=tmp_path
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    for bad, why in [
        ("broken.png", "cannot read image"),
        ("fake.jpg", "not an image"),
        ("tiny.png", "too small"),
        ("wide.png", "aspect ratio"),
        ("missing.png", "no such file"),
    ]:
        assert any(bad in line and why in line for line in lines), (bad, proc.stderr)
    assert "notes.txt" not in proc.stderr
    assert "2 image(s) segmented, 5 failed, 0 skipped" in proc.stdout
    check_outputs(tmp_path / "out", "a", images["a.png"], "panoptic")
    check_outputs(tmp_path / "out", "sub/b", images["sub/b.png"], "panoptic")
    assert not (tmp_path / "out" / "broken.json").exists()


def test_existing_outputs_are_kept_unless_overwrite(model_dir, tmp_path, capsys):
    write_images(tmp_path / "imgs", {"a.png": 6, "b.png": 2})
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "imgs"), "--model", model_dir, "--out", str(out)]
    assert cli.main(argv) == 0
    (out / "a.json").write_text("{}")  # a user's edit that must survive a rerun
    (out / "b.json").unlink()  # b's JSON is gone, its PNGs remain: incomplete, so redone
    capsys.readouterr()
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "1 image(s) segmented, 0 failed, 1 skipped" in captured.out
    assert (out / "b.json").exists()
    assert "a.png: skipped" in captured.err and "--overwrite" in captured.err
    assert (out / "a.json").read_text() == "{}"
    assert cli.main(argv + ["--overwrite"]) == 0
    assert "2 image(s) segmented" in capsys.readouterr().out
    assert json.loads((out / "a.json").read_text())["segments"]
    assert (out / "b.json").exists()


def test_output_names_do_not_collide(model_dir, tmp_path, capsys):
    write_images(tmp_path / "x", {"img.png": 6})
    write_images(tmp_path / "y", {"img.png": 2})
    Image.fromarray(scene(1)).save(tmp_path / "x" / "img.jpg")
    out = tmp_path / "out"
    files = [str(tmp_path / "x" / "img.png"), str(tmp_path / "y" / "img.png")]
    pattern = str(tmp_path / "x" / "*.jpg")  # a glob pattern among the inputs
    assert cli.main(["segment", *files, pattern, "--model", model_dir, "--out", str(out)]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.json"))
    assert written == ["x/img.json", "x/img_jpg.json", "y/img.json"]
    assert json.loads((out / "y" / "img.json").read_text())["image"] == files[1]


def test_output_folder_inside_the_input_folder_is_not_rescanned(model_dir, tmp_path, capsys):
    write_images(tmp_path / "imgs", {"a.png": 6})
    argv = ["segment", str(tmp_path / "imgs"), "--model", model_dir, "--out"]
    assert cli.main(argv + [str(tmp_path / "imgs" / "out")]) == 0
    assert cli.main(argv + [str(tmp_path / "imgs" / "out"), "--overwrite"]) == 0
    assert "1 image(s) segmented, 0 failed, 0 skipped" in capsys.readouterr().out


def test_batch_size_does_not_change_results(model_dir, tmp_path):
    names = {"a.png": 6, "b.png": 2, "c.png": 1, "d.png": 4}
    write_images(tmp_path / "imgs", names)
    Image.fromarray(scene(5, height=128)).save(tmp_path / "imgs" / "e.png")  # another size
    for batch in ("1", "3"):
        argv = ["segment", str(tmp_path / "imgs"), "--model", model_dir, "--task", "instance"]
        assert cli.main(argv + ["--out", str(tmp_path / batch), "--batch-size", batch]) == 0
    for name in [*names, "e.png"]:
        stem = name[:-4]
        one = np.asarray(Image.open(tmp_path / "1" / f"{stem}.ids.png"))
        three = np.asarray(Image.open(tmp_path / "3" / f"{stem}.ids.png"))
        # Batched BLAS kernels may move the last float bits (see test_predictor).
        assert (one != three).mean() < 1e-3
        s1 = json.loads((tmp_path / "1" / f"{stem}.json").read_text())["segments"]
        s3 = json.loads((tmp_path / "3" / f"{stem}.json").read_text())["segments"]
        assert [(s["id"], s["label_id"]) for s in s1] == [(s["id"], s["label_id"]) for s in s3]


def test_model_defaults_and_label_ids_to_fuse(tmp_path, capsys):
    semantic_model = make_model_dir(tmp_path / "sem", task="semantic")
    write_images(tmp_path / "imgs", {"a.png": 4})
    out = tmp_path / "out"
    base = ["segment", str(tmp_path / "imgs" / "a.png"), "--out"]
    assert cli.main(base + [str(out / "1"), "--model", semantic_model]) == 0
    assert json.loads((out / "1" / "a.json").read_text())["task"] == "semantic"
    # Scene 4 has three "square" (label 1) segments with this model; fusing gives one.
    argv = base + [str(out / "2"), "--model", semantic_model, "--task", "panoptic"]
    assert cli.main(argv + ["--label-ids-to-fuse", "1"]) == 0
    segments = json.loads((out / "2" / "a.json").read_text())["segments"]
    squares = [s for s in segments if s["label_id"] == 1]
    assert len(squares) == 1 and squares[0]["was_fused"]


def test_user_errors_are_one_line(tmp_path, capsys):
    write_images(tmp_path / "imgs", {"a.png": 6})
    image = str(tmp_path / "imgs" / "a.png")
    assert cli.main(["segment", image, "--model", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mask2former segment: error:") and err.count("\n") == 1
    assert cli.main(["segment", image, "--task", "depth"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --task: invalid choice: 'depth'" in err
    assert cli.main(["segment", image, "--model", "x", "--label-ids-to-fuse", "sky"]) == 1
    assert "integer class ids" in capsys.readouterr().err
