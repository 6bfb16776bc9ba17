"""Scoring saved predictions (``evaluate --predictions``): the same numbers as the live evaluation,
as panopticapi (through an independent oracle written here from its published algorithm) and as
pycocotools; the fast COCOeval backends against pycocotools; every mismatch named."""

import contextlib
import io
import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mask2former.cli import main
from mask2former.coco import encode_mask, id_to_rgb
from mask2former.evaluation.backends import _run_lengths, available_ap_backends, rle_facts
from mask2former.evaluation.coco_ap import CocoMaskAPEvaluator
from mask2former.evaluation.evaluate import evaluate, evaluate_predictions
from mask2former.evaluation.saved import PredictionsError

SEED, NUM = 4321, 4  # an unseen shapes split (training uses other seeds)
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _same(a, b):
    """Metric dicts equal, NaN == NaN, the backend name aside."""
    a = {k: v for k, v in a.items() if k != "backend"}
    b = {k: v for k, v in b.items() if k != "backend"}
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


# ----------------------------------------------------------------------------- live vs saved


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live") / "preds"
    report = evaluate(
        model="shapes", data="shapes", num=NUM, seed=SEED, save_predictions=str(folder),
        progress=False,
    )  # fmt: skip
    return report, folder


def test_saved_predictions_score_as_the_live_evaluation(live):
    report, folder = live
    saved = evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)
    assert set(saved.results) == {"panoptic", "instance", "semantic"}
    for task in saved.results:
        assert _same(saved.results[task], report.results[task]), task
    assert saved.summary()["predictions"] == str(folder) and "model" not in saved.summary()
    assert saved.headline().startswith(f"PQ {report.results['panoptic']['PQ']:.1f}, mask AP")


def test_cli_scores_predictions_with_tables(live, tmp_path, capsys):
    report, folder = live
    out = tmp_path / "r.json"
    args = ["evaluate", "--predictions", str(folder), "--num", str(NUM), "--seed", str(SEED)]
    assert main(args + ["--json", str(out), "--per-class", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Panoptic quality" in text and "| circle " in text and "COCO mask AP" in text
    result = json.loads(out.read_text())["results"]
    assert abs(result["panoptic"]["PQ"] - report.results["panoptic"]["PQ"]) < 0.01
    assert main(args + ["--task", "instance", "--ap-backend", "pycocotools", "--no-progress"]) == 0
    assert "mask AP" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--model", "shapes"], "--model"),
        (["--save-predictions", "x"], "--save-predictions"),
        (["--threshold", "0.5"], "--threshold"),
    ],
)
def test_cli_refuses_model_options_with_predictions(live, capsys, extra, option):
    args = ["evaluate", "--predictions", str(live[1]), "--num", str(NUM), *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err and "--predictions" in err


# ----------------------------------------------------------------------------- mismatches


def _copy(folder, tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(folder, dst)
    return dst


def _edit_json(path, mutate):
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))


def _set(path_keys, value):
    def mutate(data):
        target = data
        for key in path_keys[:-1]:
            target = target[key]
        target[path_keys[-1]] = value

    return mutate


PANOPTIC_CASES = [
    (_set(["annotations", 3, "file_name"], "x.png"), "annotations[3].file_name 'x.png' is not in"),
    (_set(["annotations", 1, "file_name"], "../x.png"), "'..' would leave"),
    (_set(["annotations", 1, "file_name"], "/etc/x.png"), "absolute paths"),
    (_set(["annotations", 0, "segments_info", 0, "category_id"], 99), "category_id 99 is not"),
    (_set(["annotations", 0, "segments_info", 0, "id"], "a"), "segments_info[0].id is 'a'"),
    (lambda d: d["annotations"].pop(2), "no annotation for the dataset image '000002.png'"),
    (_set(["categories", 0, "name"], "dog"), "named 'dog', the dataset's 'circle'"),
    (lambda d: d.pop("annotations"), "panoptic.json: expected an object with an .annotations"),
]


@pytest.mark.parametrize("mutate, message", PANOPTIC_CASES)
def test_panoptic_mismatches_are_named(live, tmp_path, mutate, message):
    folder = _copy(live[1], tmp_path)
    _edit_json(folder / "panoptic.json", mutate)
    with pytest.raises((PredictionsError, FileNotFoundError), match=message.replace("[", r"\[")):
        evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)


def test_panoptic_png_problems(live, tmp_path):
    folder = _copy(live[1], tmp_path)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "panoptic" / "000001.png")
    with pytest.raises(PredictionsError, match=r"000001.png: PNG size 12x10 differs from"):
        evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)
    # A PNG that is a symlink out of the folder is refused before it is read.
    outside = tmp_path / "outside.png"
    shutil.copy(live[1] / "panoptic" / "000001.png", outside)
    os.remove(folder / "panoptic" / "000001.png")
    os.symlink(outside, folder / "panoptic" / "000001.png")
    with pytest.raises(PredictionsError, match="through a symlink"):
        evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)
    os.remove(folder / "panoptic" / "000001.png")
    with pytest.raises(PredictionsError, match=r"annotations\[1\].file_name '000001.png': no such"):
        evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)
    # Ids of the PNG that segments_info does not declare.
    folder = _copy(live[1], tmp_path / "b")
    _edit_json(folder / "panoptic.json", lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(PredictionsError, match=r"000000.png: .*not in segments"):
        evaluate_predictions(str(folder), data="shapes", num=NUM, seed=SEED, progress=False)


RESULT_CASES = [
    (_set([0, "image_id"], 999), r"\[0\].image_id 999 is not in the dataset"),
    (_set([1, "category_id"], 99), r"\[1\].category_id 99 is not a dataset category"),
    (_set([2, "score"], "high"), r"\[2\].score 'high' is not a finite number"),
    (lambda d: d[0].pop("segmentation"), r"\[0\] has no 'segmentation'"),
    (_set([0, "segmentation", "size"], [10, 10]), r"\[0\].segmentation size \[10, 10\] differs"),
    (_set([0, "segmentation", "counts"], "\x01\x02"), "malformed compressed RLE"),
    (_set([0, "segmentation", "counts"], "0"), "RLE runs do not cover 256x256"),
]


@pytest.mark.parametrize("mutate, message", RESULT_CASES)
def test_results_mismatches_are_named(live, tmp_path, mutate, message):
    folder = _copy(live[1], tmp_path)
    _edit_json(folder / "instances_results.json", mutate)
    with pytest.raises(PredictionsError, match="instances_results.json: .*" + message):
        evaluate_predictions(
            str(folder), data="shapes", num=NUM, seed=SEED, tasks=["instance"], progress=False
        )


def test_semantic_and_folder_mismatches(live, tmp_path, capsys):
    folder = _copy(live[1], tmp_path)
    run = dict(data="shapes", num=NUM, seed=SEED, tasks=["semantic"], progress=False)
    shutil.copy(folder / "semantic" / "000000.png", folder / "semantic" / "zzz.png")
    with pytest.raises(PredictionsError, match="zzz.png: is not an image of the dataset"):
        evaluate_predictions(str(folder), **run)
    os.remove(folder / "semantic" / "zzz.png")
    os.remove(folder / "semantic" / "000003.png")
    with pytest.raises(PredictionsError, match="000003.png: missing"):
        evaluate_predictions(str(folder), **run)
    with pytest.raises(PredictionsError, match="no predictions found"):
        evaluate_predictions(str(tmp_path / "p" / "semantic"), **run)
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_predictions(str(tmp_path / "nothing"), **run)
    # From the command line: one line and exit status 1.
    args = ["evaluate", "--predictions", str(folder), "--task", "semantic", "--num", str(NUM)]
    assert main(args + ["--seed", str(SEED)]) == 1
    assert capsys.readouterr().err.strip().endswith("000003.png: missing: every evaluated image "
                                                    "needs its semantic PNG")  # fmt: skip


# ----------------------------------------------------------------------------- panopticapi


CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
    {"id": 9, "name": "road", "isthing": 0},
]


def _panoptic_image(rng, h, w):
    """A ground-truth id map and segments: two stuff bands, things, one crowd, VOID pixels."""
    ids = np.zeros((h, w), np.int64)
    segments = []
    ids[: h // 2] = 1
    ids[h // 2 :] = 2
    segments += [
        {"id": 1, "category_id": 7, "iscrowd": 0},
        {"id": 2, "category_id": 9, "iscrowd": 0},
    ]
    for k in range(int(rng.integers(2, 6))):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        ids[y : y + rng.integers(4, 14), x : x + rng.integers(4, 14)] = 10 + k
        segments.append({"id": 10 + k, "category_id": int(rng.choice([1, 3])), "iscrowd": 0})
    y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
    ids[y : y + 9, x : x + 9] = 40
    segments.append({"id": 40, "category_id": 1, "iscrowd": 1})
    ids[rng.random((h, w)) < 0.04] = 0  # VOID
    ids[:2, :] = 0
    # COCO's segments carry their pixel count, which panopticapi reads for the ground truth.
    areas = Counter(ids.ravel().tolist())
    return ids, [dict(s, area=areas[s["id"]]) for s in segments if s["id"] in areas]


def _predict(rng, ids, segments):
    """Predictions: the ground truth shifted and partly dropped, relabelled or wrong, with ids of
    their own, false positives on VOID and on the crowd region."""
    pred = np.zeros_like(ids)
    out = []
    shift = int(rng.integers(-2, 3))
    for k, s in enumerate(segments):
        if rng.random() < 0.15:
            continue
        new = 100 + k
        pred[np.roll(ids == s["id"], shift, axis=1)] = new
        cat = s["category_id"] if rng.random() > 0.1 else int(rng.choice([1, 3, 7, 9]))
        out.append({"id": new, "category_id": cat})
    pred[rng.random(ids.shape) < 0.02] = 0
    y, x = rng.integers(0, ids.shape[0] - 6), rng.integers(0, ids.shape[1] - 6)
    pred[y : y + 5, x : x + 5] = 300
    out.append({"id": 300, "category_id": 3})
    pred[:1, :6] = 301  # mostly on VOID: not a false positive
    out.append({"id": 301, "category_id": 1})
    present = set(np.unique(pred).tolist())
    return pred, [s for s in out if s["id"] in present]


def _write_png(path, ids):
    Image.fromarray(id_to_rgb(ids)).save(path)


@pytest.fixture
def coco_panoptic(tmp_path):
    """A COCO panoptic dataset (JPEG images, image ids from 101) and predictions in panopticapi's
    layout (``preds.json`` + ``preds/``)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for sub in ("images", "panoptic", "preds"):
        (tmp_path / sub if sub == "preds" else root / sub).mkdir(parents=True)
    images, gt_anns, pred_anns = [], [], []
    for k in range(6):
        h, w = 40 + 4 * k, 48
        stem = f"{101 + k:012d}"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{stem}.jpg"
        )
        images.append({"id": 101 + k, "file_name": f"{stem}.jpg", "height": h, "width": w})
        ids, segments = _panoptic_image(rng, h, w)
        _write_png(root / "panoptic" / f"{stem}.png", ids)
        gt_anns.append({"image_id": 101 + k, "file_name": f"{stem}.png", "segments_info": segments})
        pred, pred_segments = _predict(rng, ids, segments)
        _write_png(tmp_path / "preds" / f"{stem}.png", pred)
        pred_anns.append(
            {"image_id": 101 + k, "file_name": f"{stem}.png", "segments_info": pred_segments}
        )
    gt = {"images": images, "annotations": gt_anns, "categories": CATS}
    (root / "panoptic.json").write_text(json.dumps(gt))
    (tmp_path / "preds.json").write_text(json.dumps({"annotations": pred_anns, "categories": CATS}))
    return root, tmp_path / "preds.json"


def _read_ids(path):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def oracle_pq(gt_json, gt_dir, pred_json, pred_dir):
    """PQ as panopticapi's ``pq_compute`` defines it, one pixel pair at a time: a (gt, pred) pair
    of one category matches when IoU > 0.5, the union leaving out the prediction's VOID pixels;
    crowd ground truth is never matched nor missed; an unmatched prediction more than half on
    VOID or on its category's crowd region is no false positive; means over the categories with
    TP + FP + FN > 0."""
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    cats = {c["id"]: c for c in gt["categories"]}
    stats = {c: Counter() for c in cats}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    for g in gt["annotations"]:
        p = preds[g["image_id"]]
        gi = _read_ids(gt_dir / g["file_name"]).ravel()
        pi = _read_ids(pred_dir / p["file_name"]).ravel()
        gseg = {s["id"]: dict(s, area=int((gi == s["id"]).sum())) for s in g["segments_info"]}
        pseg = {s["id"]: dict(s, area=int((pi == s["id"]).sum())) for s in p["segments_info"]}
        pairs = Counter(zip(gi.tolist(), pi.tolist()))
        crowd = {s["category_id"]: i for i, s in gseg.items() if s.get("iscrowd")}
        matched_g, matched_p = set(), set()
        for (a, b), inter in pairs.items():
            if a not in gseg or b not in pseg or gseg[a].get("iscrowd"):
                continue
            if gseg[a]["category_id"] != pseg[b]["category_id"]:
                continue
            union = pseg[b]["area"] + gseg[a]["area"] - inter - pairs.get((0, b), 0)
            if inter / union > 0.5:
                stats[gseg[a]["category_id"]].update(tp=1, iou=inter / union)
                matched_g.add(a)
                matched_p.add(b)
        for a, s in gseg.items():
            if a not in matched_g and not s.get("iscrowd"):
                stats[s["category_id"]].update(fn=1)
        for b, s in pseg.items():
            if b in matched_p:
                continue
            ignored = pairs.get((0, b), 0)
            if s["category_id"] in crowd:
                ignored += pairs.get((crowd[s["category_id"]], b), 0)
            if ignored / s["area"] <= 0.5:
                stats[s["category_id"]].update(fp=1)
    result = {}
    for suffix, keep in (("", lambda c: True), ("_th", lambda c: c["isthing"]),
                         ("_st", lambda c: not c["isthing"])):  # fmt: skip
        pq = sq = rq = n = 0.0
        for cid, st in stats.items():
            denom = st["tp"] + 0.5 * st["fp"] + 0.5 * st["fn"]
            if not keep(cats[cid]) or denom == 0:
                continue
            n += 1
            pq += st["iou"] / denom
            sq += st["iou"] / st["tp"] if st["tp"] else 0.0
            rq += st["tp"] / denom
        result.update({f"PQ{suffix}": 100 * pq / n, f"SQ{suffix}": 100 * sq / n,
                       f"RQ{suffix}": 100 * rq / n})  # fmt: skip
    return result


def test_panopticapi_layout_scores_as_panopticapi(coco_panoptic):
    root, pred_json = coco_panoptic
    report = evaluate_predictions(str(pred_json), data=str(root), progress=False)
    assert list(report.results) == ["panoptic"]
    expected = oracle_pq(
        root / "panoptic.json", root / "panoptic", pred_json, pred_json.parent / "preds"
    )
    ours = report.results["panoptic"]
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    # Prediction ids of the panopticapi layout are matched by file name, so the JSON's image ids
    # may be anything; but a name the dataset lacks is refused.
    _edit_json(pred_json, _set(["annotations", 2, "file_name"], "000000000999.png"))
    with pytest.raises(PredictionsError, match=r"preds.json: annotations\[2\].file_name '0+999"):
        evaluate_predictions(str(pred_json), data=str(root), progress=False)


# ----------------------------------------------------------------------------- COCO results


@pytest.fixture
def coco_instances(tmp_path):
    """A COCO instances dataset (polygons, RLE and a crowd region) and a results JSON."""
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    cats = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}]
    images, anns, results = [], [], []
    for k in range(5):
        h, w = 50, 60 + 2 * k
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "images" / f"i{k}.png")
        images.append({"id": 7 + k, "file_name": f"i{k}.png", "height": h, "width": w})
        for j in range(int(rng.integers(1, 5))):
            m = np.zeros((h, w), bool)
            y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
            m[y : y + rng.integers(3, 30), x : x + rng.integers(3, 30)] = True
            crowd = int(j == 0 and k == 2)
            seg = encode_mask(m, compressed=not crowd)
            if j == 1:  # a polygon (its rasterisation is pycocotools')
                x0, y0, x1, y1 = int(x), int(y), int(x) + 8, int(y) + 6
                seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                m = mask_api.decode(mask_api.merge(mask_api.frPyObjects(seg, h, w))) > 0
            # the area COCOeval reads for ground truth: here the mask's pixels, as ours uses
            anns.append({"id": len(anns) + 1, "image_id": 7 + k, "category_id": int(rng.choice([2, 5])),
                         "segmentation": seg, "area": float(m.sum()), "iscrowd": crowd,
                         "bbox": [float(x), float(y), 1.0, 1.0]})  # fmt: skip
            for _ in range(3):
                d = np.roll(m, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
                results.append({"image_id": 7 + k, "category_id": int(rng.choice([2, 5])),
                                "segmentation": encode_mask(d), "score": float(rng.random())})  # fmt: skip
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    (tmp_path / "results.json").write_text(json.dumps(results))
    return root, tmp_path / "results.json"


def _pycocotools_stats(gt_file, results_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(results_file)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100 * v if v >= 0 else None for v in ev.stats[:6]]


@pytest.mark.parametrize("backend", ["pycocotools", *[b for b in available_ap_backends()
                                                      if b != "pycocotools"]])  # fmt: skip
def test_results_json_scores_as_pycocotools(coco_instances, backend):
    root, results = coco_instances
    report = evaluate_predictions(str(results), data=str(root), ap_backend=backend, progress=False)
    ours = report.results["instance"]
    assert ours["backend"] == backend
    expected = _pycocotools_stats(root / "instances.json", results)
    for key, value in zip(AP_KEYS, expected):
        if value is None:
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key


# ----------------------------------------------------------------------------- backends


def _random_evaluator(backend, seed):
    rng = np.random.default_rng(seed)
    ev = CocoMaskAPEvaluator([{"id": i, "name": f"c{i}"} for i in range(4)], max_dets=20,
                             backend=backend)  # fmt: skip
    for _ in range(12):
        h, w = 32, int(rng.integers(30, 50))
        n, m = int(rng.integers(0, 6)), int(rng.integers(0, 30))
        gt = np.zeros((n, h, w), bool)
        for k in range(n):
            y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
            gt[k, y : y + rng.integers(2, 30), x : x + rng.integers(2, 30)] = True
        pred = np.roll(gt[rng.integers(0, n, m)], 1, axis=2) if n else np.zeros((m, h, w), bool)
        pred |= rng.random((m, h, w)) < 0.02
        ev.update(gt, rng.integers(0, 4, n), pred, rng.integers(0, 4, m), rng.random(m),
                  gt_iscrowd=rng.random(n) < 0.15, image_size=(h, w))  # fmt: skip
    return ev.compute()


@pytest.mark.parametrize("backend", ["hotcoco"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_backends_agree_with_pycocotools(backend, seed):
    if backend not in available_ap_backends():
        pytest.skip(f"{backend} is not installed (the fast-eval / test extras have it)")
    reference = _random_evaluator("pycocotools", seed)
    fast = _random_evaluator(backend, seed)
    assert fast["backend"] == backend and reference["backend"] == "pycocotools"
    assert _same(fast, reference)


def test_unknown_or_missing_backend(monkeypatch):
    from mask2former.evaluation import backends

    with pytest.raises(ValueError, match="unknown AP backend 'fast'"):
        backends.choose_ap_backend("fast")
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="'hotcoco' is not installed"):
        backends.choose_ap_backend("hotcoco")


def test_run_length_parser_matches_pycocotools():
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(0)
    strings, expected = [], []
    for k in range(200):
        h, w = rng.integers(1, 70, 2)
        m = rng.random((h, w)) < rng.random()
        if k % 3 == 0:  # long runs: multi-character values and large differences
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h) :, rng.integers(0, w) :] = True
        strings.append(mask_api.encode(np.asfortranarray(m.astype(np.uint8)))["counts"])
        expected.append(encode_mask(m, compressed=False)["counts"])
    runs, string_of = _run_lengths(strings)
    for k, counts in enumerate(expected):
        assert runs[string_of == k].tolist() == counts
    rle = encode_mask(np.eye(30, dtype=bool))
    _, areas, boxes = rle_facts([rle], (30, 30), "m")
    assert areas.tolist() == [30.0] and boxes.tolist() == [[0.0, 0.0, 30.0, 30.0]]
    for counts, message in [(rle["counts"][:-1], "m\\[0\\]"), ("ab\x7f", "malformed")]:
        with pytest.raises(ValueError, match=message):
            rle_facts([{"size": [30, 30], "counts": counts}], (30, 30), "m")


def test_predictions_of_no_task_of_the_dataset(live, coco_instances, tmp_path):
    root, _ = coco_instances
    folder = _copy(live[1], tmp_path)
    os.remove(folder / "panoptic.json")
    os.remove(folder / "instances_results.json")
    with pytest.raises(PredictionsError, match="holds semantic predictions; the dataset .* has "):
        evaluate_predictions(str(folder), data=str(root), progress=False)
