"""Criterion-level tests of the training loss, with transformers 4.37.2 as the oracle."""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import pytest
import torch
from torch import Tensor

from mask2former import Mask2FormerConfig
from mask2former.loss import (
    HungarianMatcher,
    Mask2FormerLoss,
    NonFiniteCostError,
    average_num_masks,
    point_sample,
    sample_uncertain_points,
    validate_targets,
    weight_losses,
)

NUM_LABELS = 5
NUM_QUERIES = 10
LOGIT_SIZE = (16, 16)

FIELDS = dict(
    num_labels=NUM_LABELS,
    num_queries=NUM_QUERIES,
    train_num_points=300,
    oversample_ratio=3.0,
    importance_sample_ratio=0.75,
    no_object_weight=0.1,
    class_weight=2.0,
    mask_weight=5.0,
    dice_weight=5.0,
)


def our_loss(**overrides) -> Mask2FormerLoss:
    return Mask2FormerLoss(Mask2FormerConfig(**{**FIELDS, **overrides}))


def reference_loss(**overrides):
    from transformers import Mask2FormerConfig as HFConfig
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss as HFLoss

    config = HFConfig(**{**FIELDS, **overrides})
    weights = {
        "loss_cross_entropy": config.class_weight,
        "loss_mask": config.mask_weight,
        "loss_dice": config.dice_weight,
    }
    return HFLoss(config, weights), weights


def make_targets(
    counts: List[int], size: Tuple[int, int], seed: int = 0
) -> Tuple[List[Tensor], List[Tensor]]:
    """Random overlapping rectangles (and a noisy blob) as float masks, random class ids."""
    g = torch.Generator().manual_seed(seed)
    height, width = size
    ys = torch.arange(height)[:, None]
    xs = torch.arange(width)[None, :]
    masks, classes = [], []
    for n in counts:
        image_masks = []
        for _ in range(n):
            y0, x0 = (torch.rand(2, generator=g) * torch.tensor([height, width]) * 0.7).long()
            h, w = (torch.rand(2, generator=g) * 0.5 + 0.2) * torch.tensor([height, width])
            box = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
            image_masks.append(box.float())
        if n > 1:  # one irregular mask, overlapping the others
            image_masks[-1] = (torch.rand(height, width, generator=g) > 0.6).float()
        masks.append(torch.stack(image_masks) if n else torch.zeros(0, height, width))
        classes.append(torch.randint(0, NUM_LABELS, (n,), generator=g))
    return masks, classes


def make_predictions(batch: int, num_aux: int, seed: int = 1) -> List[Dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    preds = []
    for _ in range(num_aux + 1):
        masks = torch.randn(batch, NUM_QUERIES, *LOGIT_SIZE, generator=g) * 3
        classes = torch.randn(batch, NUM_QUERIES, NUM_LABELS + 1, generator=g)
        preds.append(
            {
                "masks_queries_logits": masks.requires_grad_(),
                "class_queries_logits": classes.requires_grad_(),
            }
        )
    return preds


def clone_predictions(preds: List[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
    return [{k: v.detach().clone().requires_grad_() for k, v in p.items()} for p in preds]


def run_ours(loss_fn, preds, masks, classes, seed=0):
    torch.manual_seed(seed)
    final, aux = preds[-1], preds[:-1]
    result = loss_fn(
        final["masks_queries_logits"], final["class_queries_logits"], masks, classes, aux
    )
    return result.terms(), result.total, result.terms(weighted=True)


def run_reference(preds, masks, classes, seed=0, **overrides):
    loss_fn, weights = reference_loss(**overrides)
    torch.manual_seed(seed)
    final, aux = preds[-1], preds[:-1]
    terms = loss_fn(
        final["masks_queries_logits"], final["class_queries_logits"], masks, classes, aux
    )
    unweighted = {k: v.detach().clone() for k, v in terms.items()}
    for key, weight in weights.items():  # the reference model's weighting
        for name in terms:
            if key in name:
                terms[name] = terms[name] * weight
    return unweighted, sum(terms.values())


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize(
    "counts,mask_scale,importance",
    [([3, 7, 0], 4, 0.75), ([12, 1], 4, 1.0), ([2, 4], 1, 0.5)],
)
def test_criterion_matches_reference(counts, mask_scale, importance):
    size = (LOGIT_SIZE[0] * mask_scale, LOGIT_SIZE[1] * mask_scale)
    masks, classes = make_targets(counts, size)
    preds = make_predictions(len(counts), num_aux=2)
    ref_preds = clone_predictions(preds)

    ours = our_loss(importance_sample_ratio=importance)
    terms, total, weighted = run_ours(ours, preds, masks, classes)
    ref_terms, ref_total = run_reference(
        ref_preds, masks, classes, importance_sample_ratio=importance
    )

    assert list(terms) == list(ref_terms)  # same keys, same order
    assert {k[:-2] for k in terms if k[-1].isdigit()} == {
        "loss_mask",
        "loss_dice",
        "loss_cross_entropy",
    }
    for key in terms:
        assert terms[key].dim() == 0
        assert math.isclose(terms[key].item(), ref_terms[key].item(), rel_tol=1e-4), key
    assert total.dim() == 0 and list(weighted) == list(terms)
    assert math.isclose(total.item(), ref_total.item(), rel_tol=1e-4)

    total.backward()
    ref_total.backward()
    for p, q in zip(preds, ref_preds):
        for name in p:
            assert rel(p[name].grad, q[name].grad) < 1e-3, name


def test_same_seed_same_loss_different_seed_different_points():
    masks, classes = make_targets([3, 2], (64, 64))
    preds = make_predictions(2, num_aux=0)
    loss_fn = our_loss()
    a = run_ours(loss_fn, preds, masks, classes, seed=3)[1]
    b = run_ours(loss_fn, preds, masks, classes, seed=3)[1]
    c = run_ours(loss_fn, preds, masks, classes, seed=4)[1]
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_empty_weight_buffer_and_weights():
    loss_fn = our_loss(no_object_weight=0.25)
    assert "empty_weight" in dict(loss_fn.named_buffers())
    assert list(loss_fn.state_dict()) == ["empty_weight"]  # saved as criterion.empty_weight
    assert loss_fn.empty_weight.shape == (NUM_LABELS + 1,)
    assert loss_fn.empty_weight[-1] == 0.25 and torch.all(loss_fn.empty_weight[:-1] == 1)
    assert loss_fn.weight_dict == {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    total, weighted = weight_losses(
        {"loss_mask": torch.tensor(1.0), "loss_dice_3": torch.tensor(2.0)}, loss_fn.weight_dict
    )
    assert total.item() == 15.0 and weighted["loss_dice_3"].item() == 10.0
    with pytest.raises(KeyError, match="loss_foo"):
        weight_losses({"loss_foo": torch.tensor(1.0)}, loss_fn.weight_dict)


def test_matcher_class_cost_configurable():
    assert our_loss().matcher.cost_class == 1.0
    assert our_loss(matcher_class_cost=2.0).matcher.cost_class == 2.0
    assert Mask2FormerLoss(Mask2FormerConfig(**FIELDS), cost_class=3.0).matcher.cost_class == 3.0
    assert (our_loss().matcher.cost_mask, our_loss().matcher.cost_dice) == (5.0, 5.0)


@pytest.mark.parametrize("counts", [[2, 0], [0, 0]])
def test_no_targets_gives_finite_loss(counts):
    masks, classes = make_targets(counts, (64, 64))
    preds = make_predictions(len(counts), num_aux=1)
    terms, total, _ = run_ours(our_loss(), preds, masks, classes)
    assert torch.isfinite(total)
    total.backward()
    for p in preds:
        for t in p.values():
            assert t.grad is not None and torch.isfinite(t.grad).all()
    if sum(counts) == 0:  # only the no-object cross-entropy remains
        assert terms["loss_mask"].item() == 0 and terms["loss_dice"].item() == 0
        assert terms["loss_cross_entropy"].item() > 0


def test_use_auxiliary_loss_false_ignores_aux():
    masks, classes = make_targets([2, 3], (64, 64))
    preds = make_predictions(2, num_aux=2)
    terms, total, _ = run_ours(our_loss(use_auxiliary_loss=False), preds, masks, classes)
    assert set(terms) == {"loss_mask", "loss_dice", "loss_cross_entropy"}
    assert torch.isfinite(total)
    with_aux, _, _ = run_ours(our_loss(), preds, masks, classes)
    assert len(with_aux) == 9
    # The final terms do not depend on whether aux terms follow (they draw random numbers later).
    for key in terms:
        assert terms[key].item() == with_aux[key].item()


@pytest.mark.parametrize("where", ["class", "mask", "aux"])
def test_nan_logits_raise_naming_the_image(where):
    masks, classes = make_targets([2, 3, 1], (64, 64))
    preds = [{k: v.detach() for k, v in p.items()} for p in make_predictions(3, num_aux=1)]
    target = preds[0] if where == "aux" else preds[-1]
    key = "masks" if where == "mask" else "class"
    target[f"{key}_queries_logits"][1, 4, 0] = float("nan")
    with pytest.raises(NonFiniteCostError, match="image 1") as info:
        run_ours(our_loss(), preds, masks, classes)
    assert info.value.image_index == 1
    assert f"{key}_queries_logits" in str(info.value)
    if where == "aux":
        assert "auxiliary prediction 0" in str(info.value)


def test_inf_logits_raise():
    masks, classes = make_targets([2], (64, 64))
    preds = [{k: v.detach() for k, v in p.items()} for p in make_predictions(1, num_aux=0)]
    preds[0]["masks_queries_logits"][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="image 0"):
        run_ours(our_loss(), preds, masks, classes)


@pytest.mark.parametrize("bad_id", [NUM_LABELS, -1, 255])
def test_bad_class_id_raises_naming_image_and_id(bad_id):
    masks, classes = make_targets([2, 3], (64, 64))
    classes[1][2] = bad_id
    preds = make_predictions(2, num_aux=0)
    with pytest.raises(ValueError, match=rf"class_labels\[1\].*class id {bad_id}\b"):
        run_ours(our_loss(), preds, masks, classes)


def test_target_validation_errors():
    masks, classes = make_targets([2, 3], (64, 64))
    check = lambda m, c, size=LOGIT_SIZE: validate_targets(m, c, 2, NUM_LABELS, size)  # noqa: E731
    check(masks, classes)
    with pytest.raises(ValueError, match="batch has 2 images"):
        check(masks[:1], classes[:1])
    with pytest.raises(ValueError, match="class_labels has 3 entries"):
        check(masks, classes + [classes[0]])
    with pytest.raises(ValueError, match=r"image 1: 3 target masks but 2 class labels"):
        check(masks, [classes[0], classes[1][:2]])
    with pytest.raises(ValueError, match=r"mask_labels\[0\] must be a 3-D"):
        check([masks[0][0], masks[1]], classes)
    with pytest.raises(ValueError, match=r"class_labels\[0\] must hold integer"):
        check(masks, [classes[0].float(), classes[1]])
    # Same aspect at another scale is accepted; another aspect is rejected.
    check([torch.zeros(2, 128, 128), torch.zeros(3, 16, 16)], classes)
    check([torch.zeros(2, 65, 97), torch.zeros(3, 68, 100)], classes, size=(17, 25))
    with pytest.raises(ValueError, match="image 0: target masks are 64x96"):
        check([torch.zeros(2, 64, 96), masks[1]], classes)
    # Images without targets may come as (0, H, W) of any size.
    check([torch.zeros(0, 1, 1), masks[1]], [torch.zeros(0, dtype=torch.long), classes[1]])


def test_boolean_and_larger_masks_work():
    masks, classes = make_targets([2, 3], (128, 128))
    preds = make_predictions(2, num_aux=0)
    _, total_float, _ = run_ours(our_loss(), preds, masks, classes)
    _, total_bool, _ = run_ours(our_loss(), preds, [m.bool() for m in masks], classes)
    assert total_float.item() == total_bool.item()


def test_num_masks_clamped_single_process():
    assert float(average_num_masks([torch.zeros(0), torch.zeros(0)], torch.device("cpu"))) == 1.0
    assert float(average_num_masks([torch.zeros(3), torch.zeros(2)], torch.device("cpu"))) == 5.0


def test_matcher_matches_reference_assignment():
    from transformers.models.mask2former.modeling_mask2former import (
        Mask2FormerHungarianMatcher as HFMatcher,
    )

    masks, classes = make_targets([3, 12, 0, 5], (64, 64), seed=5)
    preds = make_predictions(4, num_aux=0, seed=6)[0]
    args = (preds["masks_queries_logits"].detach(), preds["class_queries_logits"].detach())
    torch.manual_seed(0)
    ours = HungarianMatcher(2.0, 5.0, 5.0, 500)(*args, masks, classes)
    torch.manual_seed(0)
    ref = HFMatcher(2.0, 5.0, 5.0, 500)(*args, masks, classes)
    for (a, b), (c, d) in zip(ours, ref):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert [len(a) for a, _ in ours] == [3, 10, 0, 5]


def test_point_sampling_helpers():
    # A linear ramp along x is read back exactly at interior points (bilinear, align_corners=False).
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]  # value = column index
    coords = torch.tensor([[[0.5 / 8, 0.5], [4.5 / 8, 0.1], [0.5, 0.5]]])
    assert torch.allclose(point_sample(ramp, coords)[0, 0], torch.tensor([0.0, 4.0, 3.5]))
    # Uncertain points concentrate where |logit| is small (the left half here).
    logits = torch.full((2, 1, 16, 16), 10.0)
    logits[..., :8] = 0.0
    pts = sample_uncertain_points(logits, 100, 3.0, 1.0)
    assert pts.shape == (2, 100, 2) and (pts[..., 0] < 0.5).float().mean() > 0.95
    assert sample_uncertain_points(logits, 100, 3.0, 0.5).shape == (2, 100, 2)


def test_loss_result_keeps_final_and_auxiliary_terms_apart():
    """The typed result holds what the reference's flat dict holds: the final terms, then one
    set per auxiliary prediction; its total is the reference-weighted sum of that dict."""
    masks, classes = make_targets([3, 1], (64, 64))
    preds = make_predictions(2, num_aux=2)
    loss_fn = our_loss()
    torch.manual_seed(0)
    final = preds[-1]
    result = loss_fn(
        final["masks_queries_logits"], final["class_queries_logits"], masks, classes, preds[:-1]
    )
    assert len(result.auxiliary) == 2
    flat = result.terms()
    assert list(flat)[:3] == ["loss_mask", "loss_dice", "loss_cross_entropy"]
    assert torch.equal(flat["loss_dice"], result.final.dice)
    assert torch.equal(flat["loss_cross_entropy_1"], result.auxiliary[1].cross_entropy)
    total, weighted = weight_losses(flat, loss_fn.weight_dict)
    assert torch.equal(total, result.total)
    assert all(torch.equal(weighted[k], v) for k, v in result.terms(weighted=True).items())
    logged = result.final_weighted()
    assert list(logged) == ["loss_mask", "loss_dice", "loss_cross_entropy"]
    expected = 2.0 * float(result.final.cross_entropy.detach())
    assert logged["loss_cross_entropy"] == pytest.approx(expected)
