"""Mask AP of saved predictions: time, peak memory and agreement of each installed COCO tool.

Synthetic COCO-sized data (default: 5,000 images at 480x640, 20 ground-truth objects and 100
detections each, 80 categories) is written once as a COCO ground-truth JSON and a COCO results
JSON (compressed RLE). Each tool then scores those two files in its own subprocess, from reading
the files to ``summarize()``, so its peak resident memory (``ru_maxrss``) is its own.
``mask2former`` is this package's own path (:class:`CocoMaskAPEvaluator`, which uses the fastest
agreeing tool installed). Every tool's AP, AP50, AP75, APs, APm and APl are compared with
pycocotools', the reference.

Shapes are ellipses, built straight as run lengths (one run of set pixels per column, in COCO's
column-major order) and compressed by pycocotools' ``frPyObjects``; a detection is a jittered copy
of a ground-truth ellipse (sometimes of the wrong class) or a random one, with a random score.

``--pq`` benchmarks panoptic quality instead: COCO panoptic PNGs + JSONs (three stuff bands,
``--gts`` ellipse things with a crowd region and VOID pixels; predictions are jittered copies with
some false positives), scored by panopticapi's ``pq_compute`` (the reference, when importable:
it is not on PyPI, put its source on ``PYTHONPATH``), hotcoco's ``pq_compute`` and this package
(:class:`PanopticQualityEvaluator`, one PNG pair at a time).

    python benchmarks/bench_eval.py --images 500
    python benchmarks/bench_eval.py               # 5,000 images: minutes per tool
    python benchmarks/bench_eval.py --pq --images 1000
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

TOOLS = ["pycocotools", "faster-coco-eval", "hotcoco", "vernier", "mask2former"]
_MODULES = {
    "pycocotools": "pycocotools",
    "faster-coco-eval": "faster_coco_eval",
    "hotcoco": "hotcoco",
    "vernier": "vernier",
    "mask2former": "mask2former",
}
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
PQ_TOOLS = ["panopticapi", "hotcoco", "mask2former"]
PQ_METRICS = ["PQ", "SQ", "RQ", "PQ_th", "PQ_st"]


# ----------------------------------------------------------------------------- data


def _ellipse_counts(cx: float, cy: float, ax: float, ay: float, h: int, w: int) -> List[int]:
    """Uncompressed COCO run lengths of a filled ellipse (clipped to the image)."""
    x0, x1 = max(0, int(np.ceil(cx - ax))), min(w - 1, int(np.floor(cx + ax)))
    xs = np.arange(x0, x1 + 1)
    half = ay * np.sqrt(np.clip(1 - ((xs - cx) / ax) ** 2, 0, 1))
    top = np.clip(np.ceil(cy - half), 0, h).astype(np.int64)
    bottom = np.clip(np.floor(cy + half) + 1, 0, h).astype(np.int64)
    keep = bottom > top
    xs, top, bottom = xs[keep], top[keep], bottom[keep]
    if xs.size == 0:
        return [h * w]
    starts = xs * h + top  # flat column-major index of each column's first set pixel
    ends = xs * h + bottom
    runs = np.empty(2 * xs.size + 1, np.int64)
    runs[0::2][:-1] = np.concatenate([[starts[0]], starts[1:] - ends[:-1]])
    runs[1::2] = ends - starts
    runs[-1] = h * w - ends[-1]
    return runs.tolist()


def _rle(params: np.ndarray, h: int, w: int) -> Dict[str, Any]:
    from pycocotools import mask

    counts = _ellipse_counts(*params, h, w)
    rle = mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def make_data(images: int, gts: int, dets: int, h: int, w: int, seed: int) -> tuple:
    """(ground-truth COCO dict, results list) of the synthetic set."""
    from pycocotools import mask

    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": f"class{i + 1}"} for i in range(80)]
    imgs, anns, results = [], [], []
    for image_id in range(1, images + 1):
        imgs.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": h, "width": w})
        # Sizes from a few pixels to half the image, so APs, APm and APl all have objects.
        axes = np.exp(rng.uniform(np.log(3), np.log(min(h, w) / 2), (gts, 2)))
        centres = rng.uniform([0, 0], [w, h], (gts, 2))
        gt_params = np.concatenate([centres, axes], axis=1)
        gt_cats = rng.integers(1, 81, gts)
        for p, c in zip(gt_params, gt_cats):
            rle = _rle(p, h, w)
            area = float(mask.area({"size": [h, w], "counts": rle["counts"].encode()}))
            if area == 0:
                continue
            box = mask.toBbox({"size": [h, w], "counts": rle["counts"].encode()}).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "segmentation": rle,
                    "area": area,
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
        copies = rng.integers(0, gts, dets // 2)
        # Centres move by up to a fraction of the axes and axes scale, so IoUs spread over 0..1.
        jitter = gt_params[copies].copy()
        jitter[:, :2] += rng.normal(0, 0.15, (copies.size, 2)) * jitter[:, 2:]
        jitter[:, 2:] *= rng.normal(1.0, 0.15, (copies.size, 2))
        noise = np.concatenate(
            [
                rng.uniform([0, 0], [w, h], (dets - copies.size, 2)),
                np.exp(rng.uniform(np.log(3), np.log(min(h, w) / 2), (dets - copies.size, 2))),
            ],
            axis=1,
        )
        det_cats = np.concatenate(
            [
                np.where(rng.random(copies.size) < 0.8, gt_cats[copies], rng.integers(1, 81)),
                rng.integers(1, 81, dets - copies.size),
            ]
        )
        for p, c in zip(np.concatenate([jitter, noise]), det_cats):
            p[2:] = np.maximum(p[2:], 1.0)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(c),
                    "segmentation": _rle(p, h, w),
                    "score": float(rng.random()),
                }
            )
    return {"images": imgs, "annotations": anns, "categories": cats}, results


# ----------------------------------------------------------------------------- tools


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def _pycocotools(gt: str, dt: str) -> List[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        coco_gt = COCO(gt)
        ev = COCOeval(coco_gt, coco_gt.loadRes(dt), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def _faster_coco_eval(gt: str, dt: str) -> List[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    with _quiet():
        coco_gt = COCO(gt)
        ev = COCOeval_faster(coco_gt, coco_gt.loadRes(dt), iouType="segm", print_function=print)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def _hotcoco(gt: str, dt: str) -> List[float]:
    import hotcoco

    with _quiet():
        coco_gt = hotcoco.COCO(gt)
        ev = hotcoco.COCOeval(coco_gt, coco_gt.load_res(dt), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def _vernier(gt: str, dt: str) -> List[float]:
    import vernier
    from pycocotools.coco import COCO

    with _quiet():
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(dt)
        for ann in coco_dt.dataset["annotations"]:  # vernier wants lists where pycocotools
            ann["bbox"] = [float(v) for v in ann["bbox"]]  # leaves numpy boxes
        ev = vernier.COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:6])


def _mask2former(gt: str, dt: str) -> List[float]:
    """This package's evaluator fed the files' RLEs image by image (its AP backend: auto)."""
    from mask2former.evaluation.coco_ap import CocoMaskAPEvaluator

    with open(gt) as f:
        data = json.load(f)
    with open(dt) as f:
        results = json.load(f)
    ev = CocoMaskAPEvaluator(data["categories"])
    by_image: Dict[int, list] = {img["id"]: [] for img in data["images"]}
    for r in results:
        by_image[r["image_id"]].append(r)
    gts: Dict[int, list] = {img["id"]: [] for img in data["images"]}
    for a in data["annotations"]:
        gts[a["image_id"]].append(a)
    for img in data["images"]:
        g, d = gts[img["id"]], by_image[img["id"]]
        ev.update(
            [a["segmentation"] for a in g],
            [a["category_id"] for a in g],
            [r["segmentation"] for r in d],
            [r["category_id"] for r in d],
            [r["score"] for r in d],
            gt_iscrowd=[a["iscrowd"] for a in g],
            image_size=(img["height"], img["width"]),
        )
    del data, results, by_image, gts
    result = ev.compute()
    return [result[k] / 100 for k in METRICS]


# ----------------------------------------------------------------------------- panoptic


def _ellipse_mask(p: np.ndarray, h: int, w: int) -> tuple:
    """(slice rows, slice cols, bool mask) of a filled ellipse within its clipped box."""
    cx, cy, ax, ay = p
    y0, y1 = max(0, int(cy - ay)), min(h, int(cy + ay) + 1)
    x0, x1 = max(0, int(cx - ax)), min(w, int(cx + ax) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    return slice(y0, y1), slice(x0, x1), inside


def _paint(ids: np.ndarray, params: np.ndarray, first_id: int) -> List[int]:
    h, w = ids.shape
    for k, p in enumerate(params):
        rows, cols, inside = _ellipse_mask(p, h, w)
        ids[rows, cols][inside] = first_id + k
    return [first_id + k for k in range(len(params))]


def _id_png(path: str, ids: np.ndarray) -> None:
    from PIL import Image

    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path, compress_level=1)


def make_panoptic(folder: str, images: int, gts: int, h: int, w: int, seed: int) -> None:
    """gt.json + gt/ and pred.json + pred/ in COCO panoptic form."""
    rng = np.random.default_rng(seed)
    cats = [{"id": i + 1, "name": f"thing{i + 1}", "isthing": 1} for i in range(80)]
    cats += [{"id": 81 + i, "name": f"stuff{i + 1}", "isthing": 0} for i in range(3)]
    docs = {"gt": [], "pred": []}
    imgs = []
    for sub in docs:
        os.makedirs(os.path.join(folder, sub))
    for image_id in range(1, images + 1):
        name = f"{image_id:06d}.png"
        imgs.append({"id": image_id, "file_name": name, "height": h, "width": w})
        gt = np.zeros((h, w), np.int64)
        for k in range(3):
            gt[k * h // 3 : (k + 1) * h // 3] = 1 + k
        axes = np.exp(rng.uniform(np.log(3), np.log(min(h, w) / 4), (gts, 2)))
        params = np.concatenate([rng.uniform([0, 0], [w, h], (gts, 2)), axes], axis=1)
        things = _paint(gt, params, 10)
        cats_of = {1: 81, 2: 82, 3: 83, **{t: int(rng.integers(1, 81)) for t in things}}
        gt[rng.random((h, w)) < 0.01] = 0  # VOID
        pred = np.zeros((h, w), np.int64)
        for k in range(3):
            shift = int(rng.integers(-h // 20, h // 20))
            pred[max(0, k * h // 3 + shift) : (k + 1) * h // 3 + shift] = 1 + k
        jitter = params.copy()
        jitter[:, :2] += rng.normal(0, 0.2, (gts, 2)) * jitter[:, 2:]
        jitter[:, 2:] *= rng.normal(1.0, 0.15, (gts, 2)).clip(0.3)
        extra = np.concatenate([rng.uniform([0, 0], [w, h], (5, 2)), axes[:5]], axis=1)
        pred_things = _paint(pred, np.concatenate([jitter, extra]), 10)
        pred_cats = {1: 81, 2: 82, 3: 83}
        for t in pred_things:
            pred_cats[t] = cats_of.get(t, int(rng.integers(1, 81)))
        crowd = things[0]  # one crowd region per image
        for sub, ids, cat in (("gt", gt, cats_of), ("pred", pred, pred_cats)):
            present, areas = np.unique(ids, return_counts=True)
            segments = [
                {
                    "id": int(i),
                    "category_id": cat[int(i)],
                    "area": int(a),
                    "iscrowd": int(sub == "gt" and int(i) == crowd),
                }
                for i, a in zip(present, areas)
                if i
            ]
            _id_png(os.path.join(folder, sub, name), ids)
            docs[sub].append({"image_id": image_id, "file_name": name, "segments_info": segments})
    for sub, anns in docs.items():
        with open(os.path.join(folder, f"{sub}.json"), "w") as f:
            json.dump({"images": imgs, "annotations": anns, "categories": cats}, f)


def _pq_from_api(r: Dict[str, Any]) -> List[float]:
    return [r["All"][k] for k in ("pq", "sq", "rq")] + [r["Things"]["pq"], r["Stuff"]["pq"]]


def _pq_panopticapi(folder: str) -> List[float]:
    from panopticapi.evaluation import pq_compute

    with _quiet():
        r = pq_compute(*_pq_paths(folder))
    return _pq_from_api(r)


def _pq_hotcoco(folder: str) -> List[float]:
    from hotcoco.panoptic import pq_compute

    return _pq_from_api(pq_compute(*_pq_paths(folder)))


def _pq_paths(folder: str) -> tuple:
    j = os.path.join
    return j(folder, "gt.json"), j(folder, "pred.json"), j(folder, "gt"), j(folder, "pred")


def _pq_mask2former(folder: str) -> List[float]:
    """This package's evaluator, reading one PNG pair at a time."""
    from mask2former.data.io import read_label_png
    from mask2former.evaluation.pq import PanopticQualityEvaluator

    docs = {}
    for sub in ("gt", "pred"):
        with open(os.path.join(folder, f"{sub}.json")) as f:
            docs[sub] = json.load(f)
    ev = PanopticQualityEvaluator(docs["gt"]["categories"])
    for g, p in zip(docs["gt"]["annotations"], docs["pred"]["annotations"]):
        gt = read_label_png(os.path.join(folder, "gt", g["file_name"]), rgb=True)
        pred = read_label_png(os.path.join(folder, "pred", p["file_name"]), rgb=True)
        ev.update(gt, g["segments_info"], pred, p["segments_info"])
    r = ev.compute()
    return [r[k] / 100 for k in PQ_METRICS]


_PQ_RUNNERS = {
    "panopticapi": _pq_panopticapi,
    "hotcoco": _pq_hotcoco,
    "mask2former": _pq_mask2former,
}


_RUNNERS = {
    "pycocotools": _pycocotools,
    "faster-coco-eval": _faster_coco_eval,
    "hotcoco": _hotcoco,
    "vernier": _vernier,
    "mask2former": _mask2former,
}


def _child(tool: str, folder: str, pq: bool) -> None:
    start = time.perf_counter()
    if pq:
        stats = _PQ_RUNNERS[tool](folder)
    else:
        gt, dt = os.path.join(folder, "gt.json"), os.path.join(folder, "results.json")
        stats = _RUNNERS[tool](gt, dt)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"stats": [float(s) for s in stats], "seconds": seconds, "peak_mb": peak_mb}))


def _run_tool(tool: str, folder: str, pq: bool) -> Dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", tool, "--folder", folder] + (["--pq"] * pq),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--gts", type=int, default=20, help="ground-truth objects per image")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pq", action="store_true", help="panoptic quality instead of mask AP")
    parser.add_argument("--tools", nargs="+", default=None, choices=sorted(set(TOOLS + PQ_TOOLS)))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.folder, args.pq)
        return
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        if args.pq:
            make_panoptic(folder, args.images, args.gts, args.height, args.width, args.seed)
            what = f"{args.gts} things and 3 stuff segments each"
        else:
            gt, results = make_data(
                args.images, args.gts, args.dets, args.height, args.width, args.seed
            )
            with open(os.path.join(folder, "gt.json"), "w") as f:
                json.dump(gt, f)
            with open(os.path.join(folder, "results.json"), "w") as f:
                json.dump(results, f)
            what = f"{len(gt['annotations'])} ground-truth objects, {len(results)} detections"
            del gt, results
        print(
            f"{args.images} images at {args.height}x{args.width}, {what} "
            f"(generated in {time.perf_counter() - start:.1f}s)"
        )
        _table(args.tools or (PQ_TOOLS if args.pq else TOOLS), folder, args.pq)


def _table(tools: List[str], folder: str, pq: bool) -> None:
    names = PQ_METRICS if pq else METRICS
    first = "panopticapi" if pq else "pycocotools"
    print(f"| tool | seconds | peak MB | {' | '.join(names)} | = {first} |")
    print("|---|---:|---:|" + "---:|" * len(names) + "---|")
    reference = None
    for tool in tools:
        module = "panopticapi" if tool == "panopticapi" else _MODULES[tool]
        if importlib.util.find_spec(module) is None:
            print(f"| {tool} | not installed |")
            continue
        r = _run_tool(tool, folder, pq)
        if "error" in r:
            print(f"| {tool} | failed: {r['error']} |")
            continue
        if tool == first:
            reference = r["stats"]
        same = "-" if reference is None else _agreement(r["stats"], reference)
        cells = " | ".join(f"{100 * s:.3f}" for s in r["stats"])
        print(f"| {tool} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {cells} | {same} |")


def _agreement(stats: List[float], reference: List[float]) -> str:
    diff = max(abs(a - b) for a, b in zip(stats, reference))
    return "yes" if diff < 1e-9 else f"no (max diff {100 * diff:.4f})"


if __name__ == "__main__":
    main()
