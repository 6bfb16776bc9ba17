"""Evaluators on hand-made cases with known values, and PQ against a brute-force version."""

import json
import math

import numpy as np
import pytest

from mask2former.evaluation import (
    CocoMaskAPEvaluator,
    PanopticQualityEvaluator,
    SemanticSegmentationEvaluator,
    to_jsonable,
    write_json,
)

CATS = [{"id": 1, "name": "thing", "isthing": 1}, {"id": 2, "name": "stuff", "isthing": 0}]


def _segs(*pairs, crowd=()):
    return [{"id": i, "category_id": c, "iscrowd": int(i in crowd)} for i, c in pairs]


# ----------------------------------------------------------------------------- PQ


def test_pq_perfect_and_empty():
    gt = np.array([[1, 1, 2, 2]] * 4)
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (2, 2)), gt * 10, _segs((10, 1), (20, 2)))  # ids may differ
    r = ev.compute()
    assert r["PQ"] == r["SQ"] == r["RQ"] == r["PQ_th"] == r["PQ_st"] == 100.0
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (2, 2)), np.zeros_like(gt), [])
    r = ev.compute()
    assert r["PQ"] == r["SQ"] == r["RQ"] == 0.0
    assert r["per_class"]["thing"]["FN"] == 1 and r["per_class"]["stuff"]["FN"] == 1


def test_pq_hand_computed():
    # 4x4 image. GT: thing = columns 0-1 (8 px), stuff = columns 2-3 (8 px).
    gt = np.array([[1, 1, 2, 2]] * 4)
    # Pred: thing = columns 0-1 plus 2 pixels of column 2 (10 px); stuff = the other 6 px.
    pred = np.array([[1, 1, 1, 2], [1, 1, 1, 2], [1, 1, 2, 2], [1, 1, 2, 2]])
    # thing: IoU = 8 / 10 = 0.8 -> TP, PQ = 0.8. stuff: IoU = 6 / 8 = 0.75 -> TP, PQ = 0.75.
    # PQ = (80 + 75) / 2 = 77.5, SQ = 77.5, RQ = 100.
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (2, 2)), pred, _segs((1, 1), (2, 2)))
    # Second image: pred thing covers only 3 of the 8 thing pixels, IoU 3/8 < 0.5 -> 1 FP and
    # 1 FN; pred stuff covers the other 13 px, IoU 8/13 -> TP.
    pred2 = np.full((4, 4), 2)
    pred2[0, 0:2] = 1
    pred2[1, 0] = 1
    ev.update(gt, _segs((1, 1), (2, 2)), pred2, _segs((1, 1), (2, 2)))
    r = ev.compute()
    # Over both images: thing TP=1 (IoU 0.8), FP=1, FN=1 -> PQ = 0.8 / (1 + 0.5 + 0.5) = 0.4,
    # SQ = 0.8, RQ = 0.5. stuff TP=2 (0.75 + 8/13) -> PQ = SQ = (0.75 + 8/13) / 2, RQ = 1.
    stuff = (0.75 + 8 / 13) / 2
    assert r["PQ_th"] == pytest.approx(40.0)
    assert r["SQ_th"] == pytest.approx(80.0)
    assert r["RQ_th"] == pytest.approx(50.0)
    assert r["PQ_st"] == pytest.approx(100 * stuff)
    assert r["PQ"] == pytest.approx((40.0 + 100 * stuff) / 2)
    assert r["RQ"] == pytest.approx(75.0)
    assert r["per_class"]["thing"] == {
        "PQ": pytest.approx(40.0),
        "SQ": pytest.approx(80.0),
        "RQ": pytest.approx(50.0),
        "TP": 1,
        "FP": 1,
        "FN": 1,
        "isthing": 1,
    }


def test_pq_void_and_crowd():
    # GT: thing columns 0-1, VOID column 2, stuff column 3. The thing prediction spreads over
    # the void column: union = 12 + 8 - 8 - 4 (void pixels of the prediction) = 8 -> IoU 1.
    gt = np.array([[1, 1, 0, 2]] * 4)
    pred = np.array([[1, 1, 1, 2]] * 4)
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (2, 2)), pred, _segs((1, 1), (2, 2)))
    assert ev.compute()["PQ"] == 100.0
    # GT: a thing crowd region (id 3) over columns 2-3. An unmatched thing prediction mostly
    # inside it is neither TP nor FP; the crowd is no FN either.
    gt = np.array([[1, 1, 3, 3]] * 4)
    pred = np.array([[1, 1, 5, 0]] * 4)
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (3, 1), crowd=(3,)), pred, _segs((1, 1), (5, 1)))
    r = ev.compute()["per_class"]["thing"]
    assert (r["TP"], r["FP"], r["FN"]) == (1, 0, 0)
    # The same prediction labelled stuff does not sit on a crowd region of its class: FP.
    ev = PanopticQualityEvaluator(CATS)
    ev.update(gt, _segs((1, 1), (3, 1), crowd=(3,)), pred, _segs((1, 1), (5, 2)))
    assert ev.compute()["per_class"]["stuff"]["FP"] == 1


def _brute_force_pq_stats(gt, gt_segs, pred, pred_segs):
    """panopticapi's algorithm, pair by pair with boolean masks."""
    stats = {c["id"]: [0, 0, 0, 0.0] for c in CATS}  # tp, fp, fn, iou
    void = gt == 0
    gt_matched, pred_matched = set(), set()
    for g in gt_segs:
        gm = gt == g["id"]
        for p in pred_segs:
            pm = pred == p["id"]
            inter = (gm & pm).sum()
            if g["iscrowd"] or g["category_id"] != p["category_id"] or inter == 0:
                continue
            union = pm.sum() + gm.sum() - inter - (pm & void).sum()
            if inter / union > 0.5:
                stats[g["category_id"]][0] += 1
                stats[g["category_id"]][3] += inter / union
                gt_matched.add(g["id"])
                pred_matched.add(p["id"])
    for g in gt_segs:
        if g["id"] not in gt_matched and not g["iscrowd"]:
            stats[g["category_id"]][2] += 1
    for p in pred_segs:
        if p["id"] in pred_matched:
            continue
        pm = pred == p["id"]
        ignored = (pm & void).sum()
        for g in gt_segs:
            if g["iscrowd"] and g["category_id"] == p["category_id"]:
                ignored += (pm & (gt == g["id"])).sum()
        if ignored / pm.sum() <= 0.5:
            stats[p["category_id"]][1] += 1
    return stats


def _random_panoptic(rng, h, w, n, crowd_prob):
    # Blocky random maps so that IoUs above 0.5 actually happen.
    small = rng.integers(0, n + 1, size=(h // 2, w // 2))
    ids = np.kron(small, np.ones((2, 2), dtype=np.int64))
    present = sorted(set(np.unique(ids).tolist()) - {0})
    segs = [
        {
            "id": i,
            "category_id": int(rng.integers(1, 3)),
            "iscrowd": int(rng.uniform() < crowd_prob),
        }
        for i in present
    ]
    return ids, segs


def test_pq_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    ev = PanopticQualityEvaluator(CATS)
    expected = {c["id"]: np.zeros(4) for c in CATS}
    for _ in range(60):
        gt, gs = _random_panoptic(rng, 8, 8, 4, 0.2)
        pred = gt.copy()
        noise = rng.uniform(size=gt.shape) < rng.uniform(0, 0.6)
        pred[noise] = rng.integers(0, 6, size=noise.sum())
        present = sorted(set(np.unique(pred).tolist()) - {0})
        cat_of = {s["id"]: s["category_id"] for s in gs}
        ps = [
            {
                "id": i,
                "category_id": cat_of.get(i, int(rng.integers(1, 3)))
                if rng.uniform() < 0.8
                else int(rng.integers(1, 3)),
            }
            for i in present
        ]
        ev.update(gt, gs, pred, ps)
        for cid, s in _brute_force_pq_stats(gt, gs, pred, ps).items():
            expected[cid] += np.array(s, dtype=float)
    for k, c in enumerate(ev.categories):
        tp, fp, fn, iou = expected[c["id"]]
        assert (ev.tp[k], ev.fp[k], ev.fn[k]) == (tp, fp, fn)
        assert ev.iou[k] == pytest.approx(iou)
    assert ev.tp.sum() > 10 and ev.fp.sum() > 10 and ev.fn.sum() > 10  # the cases are not trivial


def test_pq_rejects_inconsistent_input():
    gt = np.array([[1, 1], [2, 2]])
    ev = PanopticQualityEvaluator(CATS)
    with pytest.raises(ValueError, match="not in segments"):
        ev.update(gt, _segs((1, 1)), gt, _segs((1, 1), (2, 2)))
    with pytest.raises(ValueError, match="not in the id map"):
        ev.update(gt, _segs((1, 1), (2, 2)), gt, _segs((1, 1), (2, 2), (3, 1)))
    with pytest.raises(ValueError, match="unknown category"):
        ev.update(gt, _segs((1, 1), (2, 2)), gt, _segs((1, 1), (2, 7)))


def test_pq_merge_and_label_id_alias():
    gt = np.array([[1, 1, 2, 2]] * 4)
    a, b, both = (PanopticQualityEvaluator(CATS) for _ in range(3))
    pred_segs = [{"id": 1, "label_id": 1}, {"id": 2, "label_id": 2}]
    a.update(gt, _segs((1, 1), (2, 2)), gt, pred_segs)
    b.update(gt, _segs((1, 1), (2, 2)), np.zeros_like(gt), [])
    for args in (
        (gt, _segs((1, 1), (2, 2)), gt, pred_segs),
        (gt, _segs((1, 1), (2, 2)), np.zeros_like(gt), []),
    ):
        both.update(*args)
    a.merge(b)
    assert a.compute() == both.compute()


# ----------------------------------------------------------------------------- COCO AP


def _square(h, w, y0, x0, sh, sw):
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + sh, x0 : x0 + sw] = True
    return m


def test_ap_perfect_and_empty():
    gt = np.stack([_square(40, 40, 2, 2, 10, 10), _square(40, 40, 20, 20, 15, 12)])
    ev = CocoMaskAPEvaluator([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    ev.update(gt, [1, 2], gt, [1, 2], [0.9, 0.8])
    r = ev.compute()
    # COCOeval averages 101 precision values in floating point: 100 up to rounding.
    assert [r[k] for k in ("AP", "AP50", "AP75", "APs")] == pytest.approx([100.0] * 4)
    assert math.isnan(r["APm"]) and math.isnan(r["APl"])  # no medium/large ground truth
    assert r["per_class"] == {"a": pytest.approx(100.0), "b": pytest.approx(100.0)}
    ev = CocoMaskAPEvaluator([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    ev.update(gt, [1, 2], np.zeros((0, 40, 40), bool), [], [])
    r = ev.compute()
    assert r["AP"] == r["AP50"] == r["AP75"] == 0.0


def test_ap_hand_computed():
    # One 10x10 ground-truth square; the prediction is 10x12 over it: IoU = 100 / 120 = 0.833.
    # It is a match at IoU thresholds 0.50, 0.55, ..., 0.80 (7 of 10) with precision 1 at every
    # recall -> AP = 7/10 = 70, AP50 = AP75 = 100; the area (100 px) is "small" -> APs = 70.
    gt = _square(32, 32, 5, 5, 10, 10)[None]
    pred = _square(32, 32, 5, 5, 10, 12)[None]
    ev = CocoMaskAPEvaluator([{"id": 1, "name": "a"}])
    ev.update(gt, [1], pred, [1], [0.5])
    r = ev.compute()
    assert (r["AP"], r["AP50"], r["AP75"], r["APs"]) == pytest.approx((70, 100, 100, 70))

    # Two ground truths; a perfect detection (score 0.9) and a miss (score 0.8). Ranked: TP then
    # FP -> recall 0.5 at precision 1, then 0.5 at precision 0.5. COCO's 101-point interpolated
    # precision is 1 for recall 0.00..0.50 (51 points) and 0 above: AP = 51/101 at every
    # threshold = 50.495.
    gts = np.stack([_square(32, 32, 0, 0, 8, 8), _square(32, 32, 20, 20, 8, 8)])
    preds = np.stack([gts[0], _square(32, 32, 10, 10, 5, 5)])
    ev = CocoMaskAPEvaluator([{"id": 1, "name": "a"}])
    ev.update(gts, [1, 1], preds, [1, 1], [0.9, 0.8])
    assert ev.compute()["AP"] == pytest.approx(100 * 51 / 101)


def test_ap_crowd_and_rle_inputs():
    from mask2former.data import encode_mask

    # A detection on a crowd region is ignored: not a false positive.
    gt = np.stack([_square(32, 32, 0, 0, 8, 8), _square(32, 32, 16, 0, 16, 32)])
    pred = [encode_mask(gt[0]), encode_mask(_square(32, 32, 20, 4, 6, 6))]
    ev = CocoMaskAPEvaluator([{"id": 1, "name": "a"}])
    ev.update(gt, [1, 1], pred, [1, 1], [0.5, 0.9], gt_iscrowd=[False, True])
    r = ev.compute()
    assert r["AP"] == pytest.approx(100.0)
    json.dumps(to_jsonable(r), allow_nan=False)


def test_ap_merge():
    gt = _square(32, 32, 5, 5, 10, 10)[None]
    a, b, both = (CocoMaskAPEvaluator([{"id": 1, "name": "a"}]) for _ in range(3))
    a.update(gt, [1], gt, [1], [0.9])
    b.update(gt, [1], np.zeros((0, 32, 32), bool), [], [])
    both.update(gt, [1], gt, [1], [0.9])
    both.update(gt, [1], np.zeros((0, 32, 32), bool), [], [])
    a.merge(b)
    assert a.compute()["AP"] == both.compute()["AP"] == pytest.approx(100 * 51 / 101)


# ----------------------------------------------------------------------------- mIoU


def test_miou_perfect_and_empty():
    gt = np.array([[0, 0, 1], [2, 2, 255]])
    ev = SemanticSegmentationEvaluator(3)
    ev.update(gt, gt)
    r = ev.compute()
    assert r["mIoU"] == r["pACC"] == r["mACC"] == r["fwIoU"] == 100.0
    ev = SemanticSegmentationEvaluator(3)
    ev.update(np.full_like(gt, 255), gt)  # no class predicted anywhere
    r = ev.compute()
    assert r["mIoU"] == r["pACC"] == r["mACC"] == 0.0


def test_miou_hand_computed():
    # gt   = 0 0 | 1 1 | 255     pred = 0 1 | 1 1 | 0   (the ignored pixel does not count)
    # class 0: TP 1, GT 2, pred 1 -> IoU 1 / (2 + 1 - 1) = 1/2, acc 1/2
    # class 1: TP 2, GT 2, pred 3 -> IoU 2 / (2 + 3 - 2) = 2/3, acc 1
    # class 2: absent everywhere -> NaN, left out of the means.
    # mIoU = (1/2 + 2/3) / 2 = 58.33, pACC = 3/4, mACC = 3/4, fwIoU = (2/4)(1/2) + (2/4)(2/3).
    gt = np.array([0, 0, 1, 1, 255])
    pred = np.array([0, 1, 1, 1, 0])
    ev = SemanticSegmentationEvaluator(3, label_names=["a", "b", "c"])
    ev.update(pred, gt)
    r = ev.compute()
    assert r["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert r["pACC"] == pytest.approx(75.0)
    assert r["mACC"] == pytest.approx(75.0)
    assert r["fwIoU"] == pytest.approx(100 * (0.5 * 0.5 + 0.5 * 2 / 3))
    assert r["per_class"]["b"]["IoU"] == pytest.approx(100 * 2 / 3)
    assert math.isnan(r["per_class"]["c"]["IoU"])
    assert to_jsonable(r)["per_class"]["c"]["IoU"] is None


def test_miou_rejects_bad_gt():
    ev = SemanticSegmentationEvaluator(2)
    with pytest.raises(ValueError):
        ev.update(np.zeros(3), np.array([0, 1, 2]))


# ----------------------------------------------------------------------------- reports


def test_tables_and_json(tmp_path):
    gt = np.array([[1, 1, 2, 2]] * 4)
    pq = PanopticQualityEvaluator(CATS)
    pq.update(gt, _segs((1, 1), (2, 2)), gt, _segs((1, 1), (2, 2)))
    sem = SemanticSegmentationEvaluator(2)
    sem.update(np.array([0, 1]), np.array([0, 0]))
    ap = CocoMaskAPEvaluator()
    ap.update(_square(8, 8, 0, 0, 4, 4)[None], [3], _square(8, 8, 0, 0, 4, 4)[None], [3], [1.0])
    for ev in (pq, sem, ap):
        result = ev.compute()
        table = ev.format_table(result)
        assert "|" in table and len(table.splitlines()) >= 3
        write_json(tmp_path / "r.json", result)
        assert isinstance(json.loads((tmp_path / "r.json").read_text()), dict)
    assert "Things" in pq.format_table(pq.compute())


def test_evaluators_on_shapes_ground_truth():
    from mask2former.data import (
        ShapesDataset,
        label_categories,
        sample_to_panoptic,
        sample_to_semantic,
    )

    ds = ShapesDataset(3, seed=0)
    cats = label_categories(ds.categories)  # evaluators speak in contiguous labels
    pq = PanopticQualityEvaluator(cats)
    sem = SemanticSegmentationEvaluator(len(cats), label_names=ds.label_names)
    ap = CocoMaskAPEvaluator([c for c in cats if c["isthing"]])
    for s in ds:
        ids, segs = sample_to_panoptic(s)
        pq.update(ids, segs, ids, segs)
        sem.update(sample_to_semantic(s), sample_to_semantic(s))
        th = s["isthing"]
        ap.update(
            s["masks"][th], s["labels"][th], s["masks"][th], s["labels"][th], np.ones(th.sum())
        )
    assert pq.compute()["PQ"] == 100.0 and sem.compute()["mIoU"] == 100.0
    assert ap.compute()["AP"] == pytest.approx(100.0)


def test_pycocotools_is_imported_lazily():
    import subprocess
    import sys

    code = (
        "import sys, mask2former.data, mask2former.evaluation; "
        "assert 'pycocotools' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fused_segments_are_counted_once():
    """Two queries of a fused class share one segment id: the reference's form lists both, the
    pipeline's (merge_fused) lists the segment once with the better score."""
    from types import SimpleNamespace

    import torch

    from mask2former.processing.postprocess import post_process_panoptic_segmentation

    cls = torch.full((1, 3, 7), -10.0)
    cls[0, 0, 5], cls[0, 1, 0], cls[0, 2, 5] = 10.0, 9.0, 8.0  # class 5 twice, class 0 once
    masks = torch.full((1, 3, 8, 8), -10.0)
    masks[0, 0, :, :3] = masks[0, 1, :, 3:5] = masks[0, 2, :, 5:] = 10.0
    outputs = SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks)
    kwargs = dict(threshold=0.5, label_ids_to_fuse={5})
    (ref,) = post_process_panoptic_segmentation(outputs, **kwargs)
    (one,) = post_process_panoptic_segmentation(outputs, merge_fused=True, **kwargs)
    assert [s["id"] for s in ref["segments_info"]] == [1, 2, 1]
    assert [(s["id"], s["label_id"]) for s in one["segments_info"]] == [(1, 5), (2, 0)]
    assert one["segments_info"][0]["score"] == max(
        s["score"] for s in ref["segments_info"] if s["id"] == 1
    )
    assert torch.equal(ref["segmentation"], one["segmentation"])
