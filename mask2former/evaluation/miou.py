"""Semantic segmentation metrics from a confusion matrix: mIoU, per-class IoU and accuracies."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .report import format_table

__all__ = ["SemanticSegmentationEvaluator"]


class SemanticSegmentationEvaluator:
    """Accumulates a confusion matrix over images.

    Args:
        num_labels: number of classes K; labels are 0..K-1.
        ignore_index: ground-truth value excluded from every metric.
        label_names: optional names for the per-class results (default: the label as text).

    Predicted values outside 0..K-1 are counted in an extra "invalid" column: they are wrong
    for the pixel's true class but are nobody's false positive.
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = 255,
        label_names: Optional[Sequence[str]] = None,
    ) -> None:
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.label_names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        if len(self.label_names) != self.num_labels:
            raise ValueError("label_names must have num_labels entries")
        self.reset()

    def reset(self) -> None:
        # rows: ground truth 0..K-1; columns: prediction 0..K-1 plus K = invalid prediction.
        self.confusion = np.zeros((self.num_labels, self.num_labels + 1), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` and ``gt`` are (H, W) integer class maps."""
        pred = np.asarray(pred).astype(np.int64).ravel()
        gt = np.asarray(gt).astype(np.int64).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"shape mismatch: pred {pred.shape} vs gt {gt.shape}")
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_labels):
            raise ValueError(
                f"ground-truth labels must be in [0, {self.num_labels}) or ignore_index"
            )
        pred = np.where((pred < 0) | (pred >= self.num_labels), self.num_labels, pred)
        k1 = self.num_labels + 1
        self.confusion += np.bincount(gt * k1 + pred, minlength=self.num_labels * k1).reshape(
            self.num_labels, k1
        )

    def merge(self, other: SemanticSegmentationEvaluator) -> None:
        """Add another evaluator's confusion matrix (e.g. from another process)."""
        self.confusion += other.confusion

    def compute(self) -> Dict[str, Any]:
        """Returns ``mIoU``, ``fwIoU``, ``mACC``, ``pACC`` (percent) and ``per_class``
        ``{name: {"IoU", "ACC"}}``.

        IoU of a class = TP / (TP + FP + FN), averaged over the classes that occur in the ground
        truth or the predictions (others are NaN); accuracy = TP / ground-truth pixels, averaged
        over classes present in the ground truth; pACC = correct / all non-ignored pixels.
        """
        tp = np.diag(self.confusion[:, : self.num_labels]).astype(np.float64)
        gt_count = self.confusion.sum(axis=1).astype(np.float64)
        pred_count = self.confusion[:, : self.num_labels].sum(axis=0).astype(np.float64)
        union = gt_count + pred_count - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = gt_count.sum()
        nan = float("nan")
        has_iou, has_gt = union > 0, gt_count > 0
        freq = gt_count / total if total > 0 else np.zeros_like(gt_count)
        result: Dict[str, Any] = {
            "mIoU": float(100 * iou[has_iou].mean()) if has_iou.any() else nan,
            "fwIoU": float(100 * (freq[has_iou] * iou[has_iou]).sum()) if total > 0 else nan,
            "mACC": float(100 * acc[has_gt].mean()) if has_gt.any() else nan,
            "pACC": float(100 * tp.sum() / total) if total > 0 else nan,
            "per_class": {
                name: {"IoU": float(100 * iou[i]), "ACC": float(100 * acc[i])}
                for i, name in enumerate(self.label_names)
            },
        }
        return result

    @staticmethod
    def format_table(result: Dict[str, Any], per_class: bool = True) -> str:
        """Summary row, then per-class IoU and accuracy."""
        keys = ["mIoU", "fwIoU", "mACC", "pACC"]
        text = format_table(keys, [[result[k] for k in keys]], "Semantic segmentation")
        if per_class and result.get("per_class"):
            rows: List[List[Any]] = [
                [name, v["IoU"], v["ACC"]] for name, v in result["per_class"].items()
            ]
            text += "\n\n" + format_table(["class", "IoU", "ACC"], rows)
        return text
