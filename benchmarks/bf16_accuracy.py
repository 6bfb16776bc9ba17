"""Accuracy cost of bfloat16 inference: the built-in model's panoptic output in bfloat16 against
float32 on a generated shapes validation split.

Prints the fraction of pixels whose panoptic label (the class of the segment covering the pixel,
or "no segment") changes, the fraction whose segment assignment changes (segments matched by
largest overlap), and PQ in both modes.

    python benchmarks/bf16_accuracy.py --num 100 --seed 12345
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mask2former.data import ShapesDataset
from mask2former.evaluation.runner import evaluate_pipeline
from mask2former.inference import build_pipeline


def panoptic_labels(pipeline, images):
    """Per image: (H, W) class map (-1 = no segment) and the segment-id map."""
    options = pipeline.info.options(task="panoptic", threshold=0.8)
    out = []
    for result in pipeline.predict(images, options):
        ids = result.segmentation
        lut = np.full(ids.max(initial=0) + 1, -1, dtype=np.int64)
        for s in result.segments:
            lut[s["id"]] = s["label_id"]
        out.append((lut[ids], ids))
    return out


def changed_segment_pixels(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose segment differs after matching each segment of ``a`` to the segment of
    ``b`` it overlaps most."""
    pairs = a.astype(np.int64) * (b.max(initial=0) + 1) + b
    counts = np.bincount(pairs.ravel())
    best = {}
    for key in np.flatnonzero(counts):
        sa, sb = divmod(int(key), int(b.max(initial=0) + 1))
        if sa not in best or counts[key] > best[sa][1]:
            best[sa] = (sb, counts[key])
    same = sum(c for _, c in best.values())
    return int(a.size - same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--num", type=int, default=100)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    f32 = build_pipeline(args.model)
    bf16 = build_pipeline(args.model, dtype="bfloat16")
    data = ShapesDataset(args.num, seed=args.seed)
    images = [data[i]["image"] for i in range(len(data))]
    a = panoptic_labels(f32, images)
    b = panoptic_labels(bf16, images)
    total = sum(x[0].size for x in a)
    label_changed = sum(int((x[0] != y[0]).sum()) for x, y in zip(a, b))
    seg_changed = sum(changed_segment_pixels(x[1], y[1]) for x, y in zip(a, b))
    pq = {}
    for name, pipeline in (("float32", f32), ("bfloat16", bf16)):
        res = evaluate_pipeline(pipeline, data, tasks=["panoptic"], batch_size=4)
        pq[name] = res["panoptic"]["PQ"]
    print(f"images: {args.num} shapes (seed {args.seed}), {total} pixels")
    print(f"panoptic class label changed: {label_changed} px ({100 * label_changed / total:.3f}%)")
    print(f"segment assignment changed:   {seg_changed} px ({100 * seg_changed / total:.3f}%)")
    print(f"PQ float32 {pq['float32']:.2f}  bfloat16 {pq['bfloat16']:.2f}  "
          f"difference {pq['bfloat16'] - pq['float32']:+.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
