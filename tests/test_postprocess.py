"""Post-processing: parity with transformers 4.37.2 on logits shaped like a trained model's,
our documented differences, padding removal, the coarse-to-fine evaluation against a direct one,
and empty results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mask2former import Mask2FormerImageProcessor
from mask2former.processing import postprocess as pp


def trained_like(batch=2, queries=100, classes=133, h=96, w=96, n_stuff=3, n_things=6, seed=0):
    """A few confident queries (stuff regions tiling the image, blob-shaped things on top), the
    rest no-object with low, smooth mask logits."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(batch, queries, classes + 1, generator=g)
    cls[..., -1] += 8.0
    masks = F.avg_pool2d(torch.randn(batch, queries, h, w, generator=g) * 2.0 - 4.0, 5, 1, 2) * 3
    ys, xs = torch.linspace(0, 1, h).view(h, 1), torch.linspace(0, 1, w).view(1, w)
    for b in range(batch):
        abc = torch.randn(max(n_stuff, 1), 3, generator=g)
        region = torch.stack([a * ys + c * xs + d * 0.3 for a, c, d in abc]).argmax(0)
        things = torch.zeros(h, w, dtype=torch.bool)
        order = torch.randperm(queries, generator=g).tolist()
        for j in range(n_stuff + n_things):
            q, c = order[j], int(torch.randint(0, classes, (1,), generator=g))
            cls[b, q, -1] -= 14.0
            cls[b, q, c] += 8.0 + 3.0 * float(torch.rand(1, generator=g))
            if j >= n_stuff:
                cy, cx = torch.rand(2, generator=g)
                ry, rx = 0.05 + 0.15 * torch.rand(2, generator=g)
                d = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2
                masks[b, q] = 10.0 * (1.0 - d).clamp(min=-3) + 0.5 * torch.randn(h, w, generator=g)
                things |= d < 1
        for j in range(n_stuff):
            inside = ((region == j) & ~things).float()
            masks[b, order[j]] = 12.0 * (inside - 0.5) + 0.5 * torch.randn(h, w, generator=g)
    return SimpleNamespace(class_queries_logits=cls, masks_queries_logits=masks)


@pytest.fixture(scope="module")
def reference():
    from transformers import Mask2FormerImageProcessor as Reference
    from transformers.utils import logging

    logging.set_verbosity_error()
    return Reference()


TARGETS = [None, [(384, 384)] * 2, [(480, 640), (301, 207)]]


@pytest.mark.parametrize("seed", [0])
@pytest.mark.parametrize("targets", TARGETS)
def test_semantic_matches_reference(reference, seed, targets):
    outputs = trained_like(seed=seed)
    ours = pp.post_process_semantic_segmentation(outputs, target_sizes=targets)
    ref = reference.post_process_semantic_segmentation(outputs, target_sizes=targets)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", [1])
@pytest.mark.parametrize("targets", TARGETS)
def test_panoptic_matches_reference(reference, seed, targets):
    outputs = trained_like(seed=seed)
    # Fuse the class of the first surviving segment so that was_fused is exercised.
    first = pp.post_process_panoptic_segmentation(outputs)[0]["segments_info"][0]["label_id"]
    for fuse in (set(), {first}):
        ours = pp.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=fuse, target_sizes=targets
        )
        ref = reference.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=fuse, target_sizes=targets
        )
        for a, b in zip(ours, ref):
            assert len(a["segments_info"]) >= 3
            assert a["segments_info"] == b["segments_info"]
            assert torch.equal(a["segmentation"], b["segmentation"])


@pytest.mark.parametrize("seed", [2])
@pytest.mark.parametrize("targets", TARGETS)
def test_instance_matches_reference(reference, seed, targets):
    # Default thresholds; the overlap rule (ours only) is switched off to compare everything.
    outputs = trained_like(seed=seed)
    ours = pp.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_binary_maps=True, overlap_mask_area_threshold=-1
    )
    ref = reference.post_process_instance_segmentation(
        outputs, target_sizes=targets, return_binary_maps=True
    )
    for a, b in zip(ours, ref):
        # The reference keeps top-k order; ours is sorted by score.
        order = sorted(
            range(len(b["segments_info"])), key=lambda j: -b["segments_info"][j]["score"]
        )
        assert len(a["segments_info"]) == len(order) >= 5
        for ours_seg, j in zip(a["segments_info"], order):
            assert ours_seg["label_id"] == b["segments_info"][j]["label_id"]
            assert ours_seg["score"] == pytest.approx(b["segments_info"][j]["score"], abs=2e-6)
        assert a["segmentation"].dtype == torch.bool
        assert torch.equal(a["segmentation"], b["segmentation"][order].bool())


def test_instance_id_map_shows_highest_score_and_overlap_rule():
    outputs = trained_like(batch=1, seed=3)
    full = pp.post_process_instance_segmentation(
        outputs, return_binary_maps=True, overlap_mask_area_threshold=-1
    )[0]
    masks, infos = full["segmentation"], full["segments_info"]
    scores = [s["score"] for s in infos]
    assert scores == sorted(scores, reverse=True) and [s["id"] for s in infos] == list(
        range(len(infos))
    )
    id_map = pp.post_process_instance_segmentation(outputs, overlap_mask_area_threshold=-1)[0]
    expected = torch.full(masks.shape[1:], -1, dtype=torch.int32)
    for j in reversed(range(len(masks))):  # paint low scores first: the highest ends on top
        expected[masks[j]] = j
    assert torch.equal(id_map["segmentation"], expected)
    # Overlap rule: an instance survives when its uncovered part is > the threshold of its area.
    kept = pp.post_process_instance_segmentation(outputs, return_binary_maps=True)[0]
    covered = torch.zeros(masks.shape[1:], dtype=torch.bool)
    survivors = []
    for j in range(len(masks)):
        if (masks[j] & ~covered).sum() / masks[j].sum() > 0.8:
            survivors.append(j)
        covered |= masks[j]
    if len(survivors) == len(masks):
        pytest.fail("test logits should contain an overlapped instance")
    # The rule is evaluated against all higher-scoring candidates at once.
    assert [s["label_id"] for s in kept["segments_info"]] == [
        infos[j]["label_id"] for j in survivors
    ]


def test_instance_mask_threshold_is_a_probability():
    outputs = trained_like(batch=1, seed=4)
    for mask_threshold in (0.2, 0.9):
        res = pp.post_process_instance_segmentation(
            outputs,
            mask_threshold=mask_threshold,
            return_binary_maps=True,
            overlap_mask_area_threshold=-1,
        )[0]
        probs = pp.upsample4(outputs.masks_queries_logits[0]).sigmoid()
        class_probs = outputs.class_queries_logits[0].softmax(-1)[:, :-1]
        confident = (class_probs.amax(1) > 0.3).nonzero()[:, 0].tolist()
        for info, mask in zip(res["segments_info"], res["segmentation"]):
            matches = [
                q
                for q in confident
                if torch.equal(probs[q] > mask_threshold, mask)
                and abs(class_probs[q, info["label_id"]] * probs[q][mask].mean() - info["score"])
                < 1e-5
            ]
            assert matches


def _naive_semantic(outputs, crop, target):
    probs = outputs.class_queries_logits[0].softmax(-1)[:, :-1]
    up = pp.upsample4(outputs.masks_queries_logits[0])[:, : crop[0], : crop[1]].sigmoid()
    scores = torch.einsum("qc,qhw->chw", probs, up)
    if target != crop:
        scores = F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]
    return scores.argmax(0)


def _naive_panoptic(outputs, crop, threshold, overlap):
    """Direct per-pixel panoptic evaluation at the (cropped) input size, no fusion."""
    s, labels = outputs.class_queries_logits[0].softmax(-1).max(-1)
    keep = (labels != outputs.class_queries_logits.shape[-1] - 1) & (s > threshold)
    up = pp.upsample4(outputs.masks_queries_logits[0][keep])[:, : crop[0], : crop[1]]
    weighted = up.sigmoid() * s[keep].view(-1, 1, 1)
    owner = weighted.argmax(0)
    seg = torch.zeros(crop, dtype=torch.int32)
    infos = []
    for k in range(len(weighted)):
        won, own = (owner == k).sum(), (weighted[k] >= 0.5).sum()
        if won > 0 and own > 0 and won / own > overlap:
            seg[owner == k] = len(infos) + 1
            infos.append(
                {
                    "id": len(infos) + 1,
                    "label_id": int(labels[keep][k]),
                    "was_fused": False,
                    "score": round(float(s[keep][k]), 6),
                }
            )
    return seg, infos


@pytest.mark.parametrize("crop", [(100, 68), (61, 50), (37, 68)])
def test_coarse_to_fine_equals_direct_evaluation(crop):
    # Noise logits at an odd size: many undecided tiles, partial tiles at the crop border.
    g = torch.Generator().manual_seed(7)
    outputs = SimpleNamespace(
        class_queries_logits=torch.randn(1, 20, 11, generator=g) * 3,
        masks_queries_logits=torch.randn(1, 20, 25, 17, generator=g) * 4,
    )
    sem = pp.post_process_semantic_segmentation(outputs, image_sizes=[crop])[0]
    assert torch.equal(sem, _naive_semantic(outputs, crop, crop))
    smooth = trained_like(batch=1, queries=20, classes=10, h=25, w=17)
    for outs, overlap in ((outputs, 0.0), (smooth, 0.8)):
        pan = pp.post_process_panoptic_segmentation(
            outs, threshold=0.05, overlap_mask_area_threshold=overlap, image_sizes=[crop]
        )[0]
        seg, infos = _naive_panoptic(outs, crop, 0.05, overlap)
        assert len(infos) >= 2
        assert pan["segments_info"] == infos and torch.equal(pan["segmentation"], seg)


def test_padding_is_cut_before_resizing():
    outputs = trained_like(batch=2, seed=5)
    sizes = [(300, 200), (384, 384)]
    targets = [(450, 300), (384, 384)]
    via_attr = SimpleNamespace(**vars(outputs), image_sizes=sizes)
    sem = pp.post_process_semantic_segmentation(via_attr, target_sizes=targets)
    sem_kw = pp.post_process_semantic_segmentation(outputs, target_sizes=targets, image_sizes=sizes)
    expected = _naive_semantic(
        SimpleNamespace(
            class_queries_logits=outputs.class_queries_logits[:1],
            masks_queries_logits=outputs.masks_queries_logits[:1],
        ),
        (300, 200),
        (450, 300),
    )
    assert torch.equal(sem[0], expected) and torch.equal(sem_kw[0], expected)
    assert sem[0].shape == (450, 300)
    # Without target sizes the result has the real image size in input coordinates.
    pan = pp.post_process_panoptic_segmentation(via_attr)
    inst = pp.post_process_instance_segmentation(via_attr, return_binary_maps=True)
    assert pan[0]["segmentation"].shape == (300, 200) and inst[0]["segmentation"].shape[1:] == (
        300,
        200,
    )
    # The explicit keyword wins over the attribute.
    full = pp.post_process_semantic_segmentation(via_attr, image_sizes=[(384, 384)] * 2)
    assert full[0].shape == (384, 384)


def test_empty_results_in_every_mode():
    cls = torch.full((1, 5, 4), -10.0)
    cls[..., -1] = 10.0  # every query says no object
    outputs = SimpleNamespace(
        class_queries_logits=cls, masks_queries_logits=torch.randn(1, 5, 8, 8)
    )
    proc = Mask2FormerImageProcessor()
    target = [(20, 30)]
    assert proc.post_process_semantic_segmentation(outputs, target_sizes=target)[0].shape == (
        20,
        30,
    )
    pan = proc.post_process_panoptic_segmentation(outputs, target_sizes=target)[0]
    assert pan["segments_info"] == [] and torch.equal(
        pan["segmentation"], torch.zeros(20, 30, dtype=torch.int32)
    )
    inst = proc.post_process_instance_segmentation(outputs, target_sizes=target)[0]
    assert inst["segments_info"] == [] and (inst["segmentation"] == -1).all()
    assert inst["segmentation"].shape == (20, 30)
    binary = proc.post_process_instance_segmentation(
        outputs, target_sizes=target, return_binary_maps=True
    )[0]
    assert binary["segmentation"].shape == (0, 20, 30)
    coco = proc.post_process_instance_segmentation(
        outputs, target_sizes=target, return_coco_annotation=True
    )[0]
    assert coco == {"segmentation": [], "segments_info": []}


def test_processor_methods_delegate_and_errors():
    outputs = trained_like(batch=1, seed=6)
    proc = Mask2FormerImageProcessor()
    a = proc.post_process_panoptic_segmentation(outputs, label_ids_to_fuse={1})
    b = pp.post_process_panoptic_segmentation(outputs, label_ids_to_fuse={1})
    assert a[0]["segments_info"] == b[0]["segments_info"]
    with pytest.raises(ValueError, match="both"):
        proc.post_process_instance_segmentation(
            outputs, return_binary_maps=True, return_coco_annotation=True
        )
    with pytest.raises(ValueError, match="target_sizes"):
        proc.post_process_semantic_segmentation(outputs, target_sizes=[(10, 10)] * 2)
    with pytest.raises(ValueError, match="image_sizes"):
        proc.post_process_semantic_segmentation(outputs, image_sizes=[(1000, 10)])
    with pytest.raises(TypeError, match="class_queries_logits"):
        proc.post_process_semantic_segmentation(object())


def test_fused_ids_do_not_collide():
    # Queries: A (class 1, fused), B (class 2), A' (class 1 again), C (class 3): the reference
    # would give C the id of B after reusing A's id; ours keeps ids distinct.
    labels = torch.tensor([1, 2, 1, 3])
    valid = torch.tensor([True, True, True, True])
    ids, fused = pp._segment_ids(labels, valid, {1})
    assert ids.tolist() == [1, 2, 1, 3] and fused.tolist() == [True, False, True, False]


@pytest.mark.parametrize("n_stuff", [0, 2])
def test_semantic_where_minor_queries_decide(n_stuff):
    # Without stuff, most pixels are covered by no confident query: the low-probability queries
    # decide there, pixel by pixel.
    outputs = trained_like(batch=1, h=40, w=52, n_stuff=n_stuff, n_things=4, seed=9)
    for crop in [(160, 208), (131, 97)]:
        sem = pp.post_process_semantic_segmentation(outputs, image_sizes=[crop])[0]
        assert torch.equal(sem, _naive_semantic(outputs, crop, crop))


def test_instance_top_k_pairs():
    """``top_k`` keeps that many (query, class) pairs: beyond Q a query stands for several
    classes with its one mask; the default is Q, the reference's choice."""
    outputs = trained_like(batch=1, queries=10, classes=5, seed=5)
    probs = outputs.class_queries_logits.softmax(-1)[0, :, :-1]

    def run(**kw):
        return pp.post_process_instance_segmentation(
            outputs, threshold=0.0, overlap_mask_area_threshold=-1, return_binary_maps=True, **kw
        )[0]

    default, ten, thirty = run(), run(top_k=10), run(top_k=30)
    assert default["segments_info"] == ten["segments_info"]
    assert len(ten["segments_info"]) <= 10 < len(thirty["segments_info"]) <= 30

    def entries(res):
        return {
            (mask.numpy().tobytes(), info["label_id"]): info["score"]
            for info, mask in zip(res["segments_info"], res["segmentation"])
        }

    few, many = entries(ten), entries(thirty)
    assert all(many[key] == score for key, score in few.items())  # the same pairs, same scores
    # Each kept pair is a top-30 pair, with its query's mask: several classes share a mask.
    top = {(int(i) // 5, int(i) % 5) for i in probs.flatten().topk(30).indices}
    up = F.interpolate(outputs.masks_queries_logits, scale_factor=4, mode="bilinear")[0] > 0
    kept = set()
    for info, mask in zip(thirty["segments_info"], thirty["segmentation"]):
        iou = (up & mask).flatten(1).sum(1) / (up | mask).flatten(1).sum(1).clamp(min=1)
        assert float(iou.max()) > 0.99
        kept.add((int(iou.argmax()), info["label_id"]))
    assert kept == {(q, c) for q, c in top if up[q].any()}
    assert len({q for q, _ in kept}) < len(kept)
    with pytest.raises(ValueError, match="top_k"):
        run(top_k=0)
