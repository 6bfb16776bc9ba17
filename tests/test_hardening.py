"""Reproducers of the hardening issue for segment, evaluate and shapes: no command loses a
user's files, writes outside its folder, or answers a mistake with a traceback.

Each test names the issue's item it reproduces; each failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask2former import cli
from mask2former.data.shapes import SHAPES_CATEGORIES
from tests.test_predictor import make_model_dir, one_thread, scene  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    labels = {i: c["name"] for i, c in enumerate(SHAPES_CATEGORIES)}  # evaluate needs them
    return make_model_dir(tmp_path_factory.mktemp("model"), id2label=labels)


def run(capsys, *argv: str):
    """(exit code, stdout, stderr) of one CLI call."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mask2former {command}: error:"), err
    return lines[0]


@pytest.fixture()
def dataset(tmp_path, capsys) -> Path:
    data = tmp_path / "d"
    assert (
        run(capsys, "shapes", "--out", str(data), "--num", "3", "--seed", "1", "--size", "64")[0]
        == 0
    )
    return data


def edit_file_names(data: Path, name: str, index: int = 0) -> None:
    """Give image ``index`` of the panoptic dataset another ``file_name``."""
    meta = json.loads((data / "panoptic.json").read_text())
    meta["images"][index]["file_name"] = name
    (data / "panoptic.json").write_text(json.dumps(meta))


# -- item 1 and 14: evaluate --save-predictions and --json ---------------------------------------


def test_1_save_predictions_never_writes_outside_its_folder(tmp_path, dataset, model_dir, capsys):
    photo = dataset / "images" / "000000.png"
    before = photo.read_bytes()
    edit_file_names(dataset, str(photo.resolve()))  # an absolute name: the source photo
    preds = tmp_path / "preds"
    base = ["evaluate", "--model", model_dir, "--data", str(dataset), "--task", "panoptic"]
    code, _, err = run(capsys, *base, "--save-predictions", str(preds))
    assert code == 1 and "absolute" in one_line_error(err, "evaluate")
    assert photo.read_bytes() == before
    (dataset / "escape.png").write_bytes(before)
    edit_file_names(dataset, "000000.png")
    edit_file_names(dataset, "../escape.png", index=2)  # the last image: found up front
    code, _, err = run(capsys, *base, "--save-predictions", str(preds), "--overwrite")
    assert code == 1 and "'..'" in one_line_error(err, "evaluate")
    assert not (preds / "panoptic").exists()  # refused before the first image was evaluated
    assert (dataset / "escape.png").read_bytes() == before
    assert not (preds / "escape.png").exists() and not (tmp_path / "escape.png").exists()


def test_14_sub_folders_and_json_problems_before_the_evaluation(
    tmp_path, dataset, model_dir, capsys
):
    (dataset / "images" / "sub").mkdir()
    os.replace(dataset / "images" / "000000.png", dataset / "images" / "sub" / "000000.png")
    edit_file_names(dataset, "sub/000000.png")
    preds = tmp_path / "preds"
    base = ["evaluate", "--model", model_dir, "--data", str(dataset), "--task", "panoptic"]
    assert run(capsys, *base, "--save-predictions", str(preds))[0] == 0
    assert (preds / "panoptic" / "sub" / "000000.png").is_file()
    listed = json.loads((preds / "panoptic.json").read_text())["annotations"]
    assert listed[0]["file_name"] == "sub/000000.png"
    # --json naming a folder: refused up front, nothing left behind.
    code, out, err = run(capsys, *base, "--json", str(tmp_path))
    assert code == 1 and "is a folder" in one_line_error(err, "evaluate") and "PQ" not in out
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.parent.glob("*.tmp"))
    # An existing results file or predictions folder is kept unless --overwrite.
    (tmp_path / "r.json").write_text("mine")
    code, _, err = run(capsys, *base, "--json", str(tmp_path / "r.json"))
    assert code == 1 and "--overwrite" in one_line_error(err, "evaluate")
    assert (tmp_path / "r.json").read_text() == "mine"
    code, _, err = run(capsys, *base, "--save-predictions", str(preds))
    assert code == 1 and "not empty" in one_line_error(err, "evaluate")
    assert run(capsys, *base, "--json", str(tmp_path / "r.json"), "--overwrite")[0] == 0
    assert "panoptic" in json.loads((tmp_path / "r.json").read_text())["results"]


# -- item 4: shapes into an existing dataset --------------------------------------------------


def test_4_shapes_refuses_an_existing_dataset_without_overwrite(dataset, capsys):
    image = dataset / "images" / "000000.png"
    before = image.read_bytes()
    meta = (dataset / "panoptic.json").read_text()
    code, _, err = run(capsys, "shapes", "--out", str(dataset), "--num", "2", "--seed", "7")
    assert code == 1 and "--overwrite" in one_line_error(err, "shapes")
    assert image.read_bytes() == before and (dataset / "panoptic.json").read_text() == meta
    (dataset / "images" / "notes.png").write_bytes(b"a user's file")
    argv = ["shapes", "--out", str(dataset), "--num", "2", "--seed", "7", "--size", "64"]
    assert run(capsys, *argv, "--overwrite")[0] == 0
    # The old dataset's third sample is gone (it would be read as part of the new one); the
    # user's own file stays.
    assert sorted(os.listdir(dataset / "images")) == ["000000.png", "000001.png", "notes.png"]
    assert image.read_bytes() != before


# -- item 5: segment's run-level COCO files ---------------------------------------------------


def write_image(path: Path, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(scene(index)).save(path)


def test_5_instance_runs_merge_their_coco_files_and_names_cannot_collide(
    tmp_path, model_dir, capsys
):
    from pycocotools.coco import COCO

    write_image(tmp_path / "a" / "a.png", 6)
    write_image(tmp_path / "b" / "images.png", 2)
    out = tmp_path / "out"
    base = ["segment", "--model", model_dir, "--task", "instance", "--out", str(out)]
    assert run(capsys, *base[:1], str(tmp_path / "a" / "a.png"), *base[1:])[0] == 0
    first = json.loads((out / "coco_results.json").read_text())
    assert first
    assert run(capsys, *base[:1], str(tmp_path / "b" / "images.png"), *base[1:])[0] == 0
    # The input named images.png has its own outputs; images.json is the run's COCO file.
    assert json.loads((out / "images_png.json").read_text())["segments"]
    coco = COCO(str(out / "images.json"))
    names = {img["file_name"] for img in coco.dataset["images"]}
    assert names == {str(tmp_path / "a" / "a.png"), str(tmp_path / "b" / "images.png")}
    results = coco.loadRes(str(out / "coco_results.json"))
    a_id = next(i["id"] for i in coco.dataset["images"] if i["file_name"].endswith("a.png"))
    kept = [r for r in json.loads((out / "coco_results.json").read_text()) if r["image_id"] == a_id]
    assert len(kept) == len(first)  # the first run's detections are still there
    assert len(results.getAnnIds()) > len(first)
    # Running the first image again replaces its detections instead of adding them twice.
    argv = [*base[:1], str(tmp_path / "a" / "a.png"), *base[1:], "--overwrite"]
    assert run(capsys, *argv)[0] == 0
    again = json.loads((out / "coco_results.json").read_text())
    assert len([r for r in again if r["image_id"] == a_id]) == len(first)


# -- item 6: 16-bit files ---------------------------------------------------------------------


def test_6_a_16_bit_file_reads_as_its_array(tmp_path):
    from mask2former.data.io import read_image
    from mask2former.predictor import load_image

    grey = (scene(3)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    from_file, from_array = load_image(tmp_path / "g16.png"), load_image(grey)
    assert (from_file == from_array).all() and (from_file == 255).mean() < 0.5
    assert (read_image(tmp_path / "g16.png") == from_array).all()


# -- item 7: half-written outputs -------------------------------------------------------------


def test_7_an_image_without_its_json_is_redone_and_temporaries_removed(tmp_path, model_dir, capsys):
    write_image(tmp_path / "in" / "a.png", 6)
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "in"), "--model", model_dir, "--out", str(out)]
    assert run(capsys, *argv)[0] == 0
    (out / "a.json").unlink()  # killed after the PNGs, before the JSON
    (out / ".a.json.x7f3k2.tmp").write_text('{"half": ')
    code, stdout, _ = run(capsys, *argv)
    assert code == 0 and "1 image(s) segmented, 0 failed, 0 skipped" in stdout
    assert json.loads((out / "a.json").read_text())["segments"]
    assert sorted(os.listdir(out)) == ["a.ids.png", "a.json", "a.overlay.png"]


def test_2_segment_replaces_a_planted_symlink_instead_of_writing_through_it(
    tmp_path, model_dir, capsys
):
    write_image(tmp_path / "in" / "a.png", 6)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.overlay.png").symlink_to(victim)
    argv = ["segment", str(tmp_path / "in"), "--model", model_dir, "--out", str(out)]
    assert run(capsys, *argv)[0] == 0
    assert victim.read_text() == "precious" and not (out / "a.overlay.png").is_symlink()


# -- item 15 and 16: problems found once, up front --------------------------------------------


def test_15_a_bad_out_is_one_error_before_the_model_runs(tmp_path, capsys, monkeypatch):
    from mask2former.inference import pipeline

    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", i)
    (tmp_path / "file").write_text("")

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(pipeline, "load_torch_runner", no_model)
    for bad, why in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "x", "cannot write")):
        argv = ["segment", str(tmp_path / "in"), "--out", str(bad)]
        code, _, err = run(capsys, *argv)
        assert code == 1 and why in one_line_error(err, "segment")


def test_16_a_mistyped_local_model_does_not_go_to_the_hub(tmp_path, capsys, monkeypatch):
    from mask2former import hub

    def no_hub(*args, **kwargs):
        raise AssertionError("must not reach the hub")

    monkeypatch.setattr(hub, "_download", no_hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    write_image(tmp_path / "a.png", 1)
    code, _, err = run(capsys, "segment", "a.png", "--model", "models/missing", "--out", "o")
    line = one_line_error(err, "segment")
    assert code == 1 and "no local folder 'models/missing'" in line


# -- item 17: the rest of segment's and evaluate's mistakes --------------------------------------


def test_17_a_symlink_loop_under_a_recursive_glob_is_segmented_once(tmp_path, model_dir, capsys):
    write_image(tmp_path / "in" / "a.png", 6)
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    argv = ["segment", str(tmp_path / "in" / "**" / "*.png"), "--model", model_dir]
    code, stdout, _ = run(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 0 and "1 image(s) segmented" in stdout


@pytest.mark.parametrize(
    "argv, option",
    [
        (["segment", "a.png", "--threshold", "5"], "--threshold"),
        (["segment", "a.png", "--threshold", "nan"], "--threshold"),
        (["segment", "a.png", "--batch-size", "0"], "--batch-size"),
        (["segment", "a.png", "--device", "foo"], "--device"),
        (["evaluate", "--max-images", "0"], "--max-images"),
        (["evaluate", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "--threshold", "-1"], "--threshold"),
        (["evaluate", "--device", "foo"], "--device"),
        (["shapes", "--out", "x", "--num", "0"], "--num"),
    ],
)
def test_17_out_of_range_options_are_refused_in_one_line(argv, option, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"argument {option}:" in lines[0]


def test_17_api_checks_threshold_and_batch_size(tmp_path, model_dir):
    from mask2former import segment

    write_image(tmp_path / "a.png", 1)
    for options in ({"threshold": 5.0}, {"threshold": float("nan")}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(options))):
            segment(tmp_path / "a.png", tmp_path / "out", model=model_dir, **options)
    assert not (tmp_path / "out").exists()


def test_17_tiny_images_report_their_real_size(tmp_path):
    from mask2former.predictor import ImageError, load_image

    Image.new("L", (1, 1)).save(tmp_path / "one.png")
    with pytest.raises(ImageError, match=r"\(1x1;"):
        load_image(tmp_path / "one.png")
    with pytest.raises(ImageError, match=r"\(1x1;"):
        load_image(Image.open(tmp_path / "one.png"))


def test_17_pillow_warnings_become_the_images_error(tmp_path, capsys, monkeypatch, recwarn):
    from mask2former.predictor import ImageError, load_image

    write_image(tmp_path / "a.png", 1)  # 128 x 96 = 12288 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)  # over it: Pillow only warns
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "a.png")
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_17_evaluate_refuses_a_model_of_other_classes(tmp_path, dataset, capsys):
    other = make_model_dir(tmp_path / "other")  # circle, square, sky, grass: not the data's
    code, out, err = run(capsys, "evaluate", "--model", other, "--data", str(dataset))
    assert code == 1 and "PQ" not in out
    assert "the dataset has 8 classes" in one_line_error(err, "evaluate")
