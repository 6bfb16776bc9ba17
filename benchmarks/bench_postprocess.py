"""Post-processing speed, ours vs transformers 4.37.2, for each mode.

100 queries, 133 classes, mask logits at 200x272 (an 800x1088 input) and an 800x1088 target, on
logits shaped like a trained model's: a few confident queries (stuff regions that tile the image
and blob-shaped things on top), the rest no-object with low, smooth mask logits. Runs alternate
between the two implementations; medians after warm-up; ratio = reference / ours.

    python benchmarks/bench_postprocess.py [--repeats 7] [--threads 2] [--noise]

``--noise`` uses pure random logits instead (the worst case of the coarse-to-fine evaluation).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from types import SimpleNamespace

import torch

from mask2former.processing import postprocess


def trained_like(queries=100, classes=133, h=200, w=272, n_stuff=3, n_things=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(1, queries, classes + 1, generator=g)
    cls[..., -1] += 8.0
    masks = torch.randn(1, queries, h, w, generator=g) * 2.0 - 4.0
    masks = torch.nn.functional.avg_pool2d(masks, 5, 1, 2) * 3
    ys, xs = torch.linspace(0, 1, h).view(h, 1), torch.linspace(0, 1, w).view(1, w)
    fields = torch.stack(
        [a * ys + b * xs + c * 0.3 for a, b, c in torch.randn(n_stuff, 3, generator=g)]
    )
    region = fields.argmax(0)
    things = torch.zeros(h, w, dtype=torch.bool)
    order = torch.randperm(queries, generator=g).tolist()
    for j in range(n_stuff + n_things):
        q, c = order[j], int(torch.randint(0, classes, (1,), generator=g))
        cls[0, q, -1] -= 14.0
        cls[0, q, c] += 8.0 + 3.0 * float(torch.rand(1, generator=g))
        if j >= n_stuff:
            cy, cx = torch.rand(2, generator=g)
            ry, rx = 0.05 + 0.15 * torch.rand(2, generator=g)
            d = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
            masks[0, q] = 10.0 * (1.0 - d).clamp(min=-3) + 0.5 * torch.randn(h, w, generator=g)
            things |= d < 1
    for j in range(n_stuff):  # stuff stops where things are, as a trained model's would
        inside = ((region == j) & ~things).float()
        masks[0, order[j]] = 12.0 * (inside - 0.5) + 0.5 * torch.randn(h, w, generator=g)
    return SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks)


def noise(queries=100, classes=133, h=200, w=272, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        class_queries_logits=torch.randn(1, queries, classes + 1, generator=g),
        masks_queries_logits=torch.randn(1, queries, h, w, generator=g),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--noise", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from transformers import Mask2FormerImageProcessor as Reference
    from transformers.utils import logging

    logging.set_verbosity_error()
    reference = Reference()
    outputs = noise() if args.noise else trained_like()
    target = [(800, 1088)]
    modes = {
        "semantic": (
            lambda: reference.post_process_semantic_segmentation(outputs, target_sizes=target),
            lambda: postprocess.post_process_semantic_segmentation(outputs, target_sizes=target),
        ),
        "instance": (
            lambda: reference.post_process_instance_segmentation(outputs, target_sizes=target),
            lambda: postprocess.post_process_instance_segmentation(outputs, target_sizes=target),
        ),
        "instance+binary_maps": (
            lambda: reference.post_process_instance_segmentation(
                outputs, target_sizes=target, return_binary_maps=True
            ),
            lambda: postprocess.post_process_instance_segmentation(
                outputs, target_sizes=target, return_binary_maps=True
            ),
        ),
        "instance+coco_rle": (
            lambda: reference.post_process_instance_segmentation(
                outputs, target_sizes=target, return_coco_annotation=True
            ),
            lambda: postprocess.post_process_instance_segmentation(
                outputs, target_sizes=target, return_coco_annotation=True
            ),
        ),
        "panoptic": (
            lambda: reference.post_process_panoptic_segmentation(
                outputs, target_sizes=target, label_ids_to_fuse=set()
            ),
            lambda: postprocess.post_process_panoptic_segmentation(outputs, target_sizes=target),
        ),
    }
    print(f"{'mode':22s} {'reference ms':>12s} {'ours ms':>9s} {'ratio':>7s}")
    for name, (ref_fn, our_fn) in modes.items():
        for _ in range(2):  # warm-up
            ref_fn(), our_fn()
        ref_t, our_t = [], []
        for _ in range(args.repeats):
            for fn, acc in ((ref_fn, ref_t), (our_fn, our_t)):
                start = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - start)
        ref_ms, our_ms = 1e3 * statistics.median(ref_t), 1e3 * statistics.median(our_t)
        print(f"{name:22s} {ref_ms:12.1f} {our_ms:9.1f} {ref_ms / our_ms:6.1f}x")


if __name__ == "__main__":
    main()
