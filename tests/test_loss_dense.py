"""The dense mask loss (``mask_loss_sampling="dense"``): matching and BCE / dice on every cell of
the predicted masks against area-reduced targets, checked against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mask2former import Mask2FormerConfig
from mask2former.loss import HungarianMatcher, Mask2FormerLoss, dense_targets


def _loss(**overrides) -> Mask2FormerLoss:
    fields = dict(num_labels=3, num_queries=4, mask_loss_sampling="dense", train_num_points=50)
    return Mask2FormerLoss(Mask2FormerConfig(**{**fields, **overrides}))


def test_dense_targets_are_block_means():
    mask = torch.zeros(1, 4, 4)
    mask[0, 0, :3] = 1  # 3 pixels in the top row: cells (0, 0) full half, (0, 1) one quarter
    mask[0, 3, 3] = 1
    (out,) = dense_targets([mask], (2, 2))
    assert out.shape == (1, 4)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 0.25, 0.0, 0.25]))
    # Boolean masks, and an image without targets.
    bools, empty = dense_targets([mask.bool(), torch.zeros(0, 4, 4)], (2, 2))
    torch.testing.assert_close(bools, out)
    assert empty.shape == (0, 4)


def test_dense_matching_pairs_each_target_with_its_mask():
    # Two targets (left half: class 2; right half: class 0) and four queries whose masks are
    # the right half, noise, the left half and nothing.
    target = torch.zeros(2, 8, 8)
    target[0, :, :4] = 1
    target[1, :, 4:] = 1
    logits = torch.full((1, 4, 4, 4), -8.0)
    logits[0, 0, :, 2:] = 8.0
    logits[0, 1] = torch.linspace(-1, 1, 16).view(4, 4)
    logits[0, 2, :, :2] = 8.0
    classes = torch.zeros(1, 4, 4)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=10)
    labels = torch.tensor([2, 0])
    ((rows, cols),) = matcher.forward_dense(
        logits, classes, dense_targets([target], (4, 4)), [labels]
    )
    assert rows.tolist() == [0, 2] and cols.tolist() == [1, 0]
    # No random numbers are drawn.
    state = torch.get_rng_state()
    matcher.forward_dense(logits, classes, dense_targets([target], (4, 4)), [labels])
    assert torch.equal(state, torch.get_rng_state())


def test_dense_mask_terms_hand_worked():
    """One target covering half of a 2x2 grid exactly, one query predicting it with logits
    +-x: BCE = softplus(-x) per cell, dice = 1 - (2*2s + 1) / (2s + 2 + 1) with s = sigmoid(x)
    on the covered cells and 1 - s elsewhere."""
    loss = _loss(num_queries=1)
    x = 2.0
    target = (
        torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]).repeat_interleave(4, 1).repeat_interleave(4, 2)
    )
    logits = torch.tensor([[[[x, x], [-x, -x]]]])  # (B=1, Q=1, 2, 2)
    classes = torch.zeros(1, 1, 4)
    terms = loss(logits, classes, [target], [torch.tensor([1])]).terms()
    s = 1 / (1 + math.exp(-x))
    bce = math.log1p(math.exp(-x))  # the same for every cell
    dice = 1 - (2 * 2 * s + 1) / (2 * s + 2 * (1 - s) + 2 + 1)
    assert terms["loss_mask"].item() == pytest.approx(bce, rel=1e-6)
    assert terms["loss_dice"].item() == pytest.approx(dice, rel=1e-6)
    # Soft targets where a cell is partly covered: BCE against the share.
    target2 = torch.zeros(1, 8, 8)
    target2[0, :2, :4] = 1  # the top-left 4x4 cell is half covered
    terms = loss(torch.zeros(1, 1, 2, 2), classes, [target2], [torch.tensor([1])]).terms()
    shares = torch.tensor([0.5, 0.0, 0.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(torch.zeros(4), shares).item()
    assert terms["loss_mask"].item() == pytest.approx(expected, rel=1e-6)


def test_dense_loss_trains_and_gives_gradients_to_every_prediction():
    torch.manual_seed(0)
    loss = _loss()
    target = torch.zeros(2, 16, 16)
    target[0, 2:9, 3:12] = 1
    target[1, 10:15, 1:6] = 1
    labels = torch.tensor([0, 2])
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    classes = torch.zeros(1, 4, 4, requires_grad=True)
    aux = [{"masks_queries_logits": logits * 1.0, "class_queries_logits": classes * 1.0}]
    result = loss(logits, classes, [target], [labels], aux)
    terms = result.terms()
    assert set(terms) == {
        "loss_mask", "loss_dice", "loss_cross_entropy",
        "loss_mask_0", "loss_dice_0", "loss_cross_entropy_0",
    }  # fmt: skip
    total = result.total
    total.backward()
    assert logits.grad.abs().sum() > 0 and classes.grad.abs().sum() > 0
    # A few plain gradient steps lower the loss.
    opt = torch.optim.SGD([logits, classes], lr=0.5)
    first = total.item()
    for _ in range(20):
        opt.zero_grad()
        total = loss(logits, classes, [target], [labels]).total
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first


def test_dense_images_without_targets_and_bad_mode():
    loss = _loss()
    terms = loss(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4), [torch.zeros(0, 16, 16)] * 2,
                 [torch.zeros(0, dtype=torch.long)] * 2).terms()  # fmt: skip
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["loss_mask"].item() == 0 and terms["loss_dice"].item() == 0
    with pytest.raises(ValueError, match="mask_loss_sampling"):
        _loss(mask_loss_sampling="sparse")
