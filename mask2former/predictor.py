"""Segment images in a few lines: :class:`Predictor` (in memory) and :func:`segment` (files).

    >>> from mask2former.predictor import Predictor
    >>> predictor = Predictor.from_pretrained("shapes")
    >>> result = predictor.predict([image])[0]      # image: path, PIL image or (H, W, 3) array
    >>> result.segmentation, result.segments        # (H, W) ids, [{"id", "label", "score", ...}]

Every result has the size of its input image. Segment ids follow one rule for all tasks: 0 means
"no segment", and each id in ``segments`` is the value of its pixels in ``segmentation``
(panoptic: 1..N; instance: 1..N by decreasing score, each pixel showing the best instance on
it; semantic: ``label_id + 1``, the same in every image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from .processing.rle import encode_masks
from .processing.transforms import to_rgb_array

__all__ = [
    "Predictor",
    "SegmentationResult",
    "ImageError",
    "TASKS",
    "segment",
    "load_image",
    "model_threshold",
]

TASKS = ("panoptic", "instance", "semantic")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIN_SIDE = 8  # smaller images hold less than one feature cell of the backbone's last stage
MAX_ASPECT = 20.0  # beyond this the resized short side collapses to a few pixels


def model_threshold(config: Any, fallback: float) -> float:
    """The segment score threshold a model declares for testing (``object_mask_threshold`` in its
    config.json: a small model trained briefly is right with less confidence than the 0.8 the
    published models use), else ``fallback``."""
    value = getattr(config, "object_mask_threshold", None)
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(
            f"config.json: object_mask_threshold must be a number in [0, 1], got {value!r}"
        )
    return float(value)


class ImageError(ValueError):
    """An input image cannot be segmented (missing, unreadable, not an image, bad shape)."""


def _read(name: str, what: str) -> Any:
    """The decoded PIL image of a file (warnings of damaged files become the error's text)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) on some damaged files and huge images.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(name) as img:
                img.load()  # the pixels stay in memory after the file is closed
                return img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{what}: image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{what}: not an image (unrecognised file format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise ImageError(f"{what}: cannot read image ({e})") from None


def load_image(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from a path, a PIL image or an array, upright (EXIF
    orientation applied) and checked for a usable size; :class:`ImageError` naming the file
    otherwise."""
    what = "image"
    if isinstance(image, (str, os.PathLike)):
        what = os.fspath(image)
        if not os.path.exists(what):
            raise ImageError(f"{what}: no such file")
        if os.path.isdir(what):
            raise ImageError(f"{what}: is a folder, not an image")
    try:
        arr = _read(image, what) if isinstance(image, (str, os.PathLike)) else image
        # The image processor's conversion: EXIF orientation, gray / alpha / 16-bit handling.
        arr = to_rgb_array(arr, what=what)
    except (TypeError, ValueError) as e:
        raise ImageError(str(e)) from None
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{what}: image too small ({w}x{h}; needs at least {MIN_SIDE} px a side)")
    if max(h, w) / min(h, w) > MAX_ASPECT:
        raise ImageError(f"{what}: extreme aspect ratio ({w}x{h}; at most {MAX_ASPECT:g}:1)")
    return np.ascontiguousarray(arr)


@dataclass
class SegmentationResult:
    """The segmentation of one image.

    Attributes:
        task: "panoptic", "instance" or "semantic".
        image_size: (height, width) of the input image.
        segmentation: (H, W) int32 segment ids, 0 = no segment.
        segments: one dict per segment: ``id``, ``label_id``, ``label`` (class name), ``score``
            (float; for semantic the mean class probability over the segment), ``area`` (pixels),
            ``bbox`` ([x, y, w, h] of the mask), ``was_fused``.
        masks: (N, H, W) bool, one per segment, in the order of ``segments``. Instance masks are
            whole (overlaps included, as post-processing found them), so ``area``/``bbox`` and
            the RLE describe them; panoptic and semantic masks are ``segmentation == id``.
    """

    task: str
    image_size: tuple
    segmentation: np.ndarray
    segments: List[Dict[str, Any]]
    _masks: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def masks(self) -> np.ndarray:
        if self._masks is not None:
            return self._masks
        ids = np.array([s["id"] for s in self.segments], dtype=np.int64)
        return self.segmentation[None] == ids[:, None, None]

    def rles(self) -> List[Dict[str, Any]]:
        """COCO RLE per segment (``counts`` as str, column-major, pycocotools-compatible)."""
        masks = self.masks
        return [
            {"size": r["size"], "counts": r["counts"].decode("ascii")} for r in encode_masks(masks)
        ]


class Predictor:
    """A model and its image processor, ready to segment images (SAM-predictor style).

    Args:
        model: a :class:`Mask2FormerForUniversalSegmentation`.
        processor: its :class:`Mask2FormerImageProcessor`.
        name: how the model was named (recorded in outputs).
    """

    def __init__(self, model: Any, processor: Any, name: str = "model") -> None:
        self.model = model.eval()
        self.processor = processor
        self.name = name
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Union[str, os.PathLike] = "shapes",
        device: Union[str, torch.device] = "cpu",
        dtype: Union[None, str, torch.dtype] = None,
    ) -> Predictor:
        """Load a built-in model name (default "shapes"), a checkpoint folder or a hub id.

        ``dtype``: None / "float32", "bfloat16" or "float16" (or a torch dtype). The folder's
        ``preprocessor_config.json`` is used when present, else the processor's defaults.
        """
        from .hub import resolve_file
        from .modeling.mask2former import Mask2FormerForUniversalSegmentation
        from .processing.image_processor import CONFIG_NAME, Mask2FormerImageProcessor

        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
            dtype = _DTYPES[dtype]
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(name_or_path, torch_dtype=dtype)
        config_path = resolve_file(name_or_path, CONFIG_NAME, required=False)
        if config_path is None:
            processor = Mask2FormerImageProcessor()
        else:
            processor = Mask2FormerImageProcessor.from_pretrained(config_path)
        return cls(model.to(device), processor, name=os.fspath(name_or_path))

    @property
    def id2label(self) -> Dict[int, str]:
        return dict(self.model.config.id2label)

    @property
    def default_task(self) -> str:
        """The task the model was trained for (``task`` in config.json), else panoptic."""
        task = getattr(self.model.config, "task", None)
        return task if task in TASKS else "panoptic"

    @property
    def stuff_label_ids(self) -> Optional[List[int]]:
        """Classes fused into one segment per image by default (``stuff_label_ids`` in config)."""
        ids = getattr(self.model.config, "stuff_label_ids", None)
        return [int(i) for i in ids] if ids else None

    @property
    def default_threshold(self) -> float:
        """Minimum segment score when none is given: the model's own test setting
        (``object_mask_threshold`` in config.json, as detectron2's
        ``MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD``), else 0.5."""
        return model_threshold(self.model.config, 0.5)

    @torch.inference_mode()
    def predict(
        self,
        images: Union[Any, Sequence[Any]],
        task: Optional[str] = None,
        threshold: Optional[float] = None,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Optional[Iterable[int]] = None,
        batch_size: int = 1,
    ) -> List[SegmentationResult]:
        """Segment images (paths, PIL images or (H, W, 3) arrays; one or a list).

        Args:
            task: "panoptic", "instance" or "semantic"; default :attr:`default_task`.
            threshold: minimum score of a kept segment (panoptic, instance); default
                :attr:`default_threshold`.
            mask_threshold, overlap_mask_area_threshold: as in the image processor.
            label_ids_to_fuse: panoptic classes merged into one segment per image; default
                :attr:`stuff_label_ids`.
            batch_size: images per forward pass. Only images with the same network input size
                share a batch (the network does not mask padding), so results never depend on
                the other images.

        Returns:
            One :class:`SegmentationResult` per image, in input order.
        """
        task = task or self.default_task
        if threshold is None:
            threshold = self.default_threshold
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if label_ids_to_fuse is None:
            label_ids_to_fuse = self.stuff_label_ids
        fuse = set(int(i) for i in label_ids_to_fuse or ())
        many = isinstance(images, (list, tuple))
        arrays = [load_image(im) for im in (images if many else [images])]
        inputs = [self.processor(a, return_tensors="pt")["pixel_values"] for a in arrays]
        # Bucket by network input size; within a bucket, chunks of batch_size.
        buckets: Dict[tuple, List[int]] = {}
        for i, pv in enumerate(inputs):
            buckets.setdefault(tuple(pv.shape[-2:]), []).append(i)
        results: List[Optional[SegmentationResult]] = [None] * len(arrays)
        step = max(1, int(batch_size))
        options = (task, threshold, mask_threshold, overlap_mask_area_threshold, fuse)
        for indices in buckets.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                pixels = torch.cat([inputs[i] for i in chunk]).to(self.device, self.dtype)
                outputs = self.model(pixel_values=pixels)
                # target_sizes = the photos' sizes: results come back at full resolution.
                sizes = [arrays[i].shape[:2] for i in chunk]
                for i, res in zip(chunk, self._post(outputs, sizes, *options)):
                    results[i] = res
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ post-processing
    def _post(self, outputs, sizes, task, threshold, mask_threshold, overlap, fuse):
        proc = self.processor
        if task == "semantic":
            maps = proc.post_process_semantic_segmentation(outputs, target_sizes=sizes)
            return [self._semantic(outputs, b, m.cpu().numpy()) for b, m in enumerate(maps)]
        kwargs = dict(
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap,
            target_sizes=sizes,
        )
        if task == "panoptic":
            preds = proc.post_process_panoptic_segmentation(
                outputs, label_ids_to_fuse=fuse, **kwargs
            )
            return [self._panoptic(p, size) for p, size in zip(preds, sizes)]
        preds = proc.post_process_instance_segmentation(outputs, return_binary_maps=True, **kwargs)
        return [self._instance(p, size) for p, size in zip(preds, sizes)]

    def _segment(self, seg_id: int, label: int, score: float, mask: np.ndarray, fused: bool):
        from .data.rle import mask_bbox

        return {
            "id": int(seg_id),
            "label_id": int(label),
            "label": self.id2label.get(int(label), str(label)),
            "score": round(float(score), 6),
            "area": int(mask.sum()),
            "bbox": mask_bbox(mask),
            "was_fused": bool(fused),
        }

    def _panoptic(self, pred: Dict[str, Any], size) -> SegmentationResult:
        seg = pred["segmentation"].cpu().numpy().astype(np.int32)
        # Fused classes have one entry per query with a shared id: keep one, with the best score.
        merged: Dict[int, Dict[str, Any]] = {}
        for info in pred["segments_info"]:
            old = merged.get(info["id"])
            if old is None or info["score"] > old["score"]:
                merged[info["id"]] = info
        present = set(np.unique(seg).tolist())
        segments = [
            self._segment(i, s["label_id"], s["score"], seg == i, s["was_fused"])
            for i, s in sorted(merged.items())
            if i in present  # a segment may vanish when resized to a small photo
        ]
        keep = {s["id"] for s in segments}
        seg[~np.isin(seg, list(keep))] = 0
        return SegmentationResult("panoptic", tuple(size), seg, segments)

    def _instance(self, pred: Dict[str, Any], size) -> SegmentationResult:
        masks = pred["segmentation"].cpu().numpy().astype(bool)  # (N, H, W), sorted by score
        seg = np.zeros(tuple(size), dtype=np.int32)
        for j in range(len(masks) - 1, -1, -1):  # paint low scores first: the best one shows
            seg[masks[j]] = j + 1
        segments = [
            self._segment(j + 1, s["label_id"], s["score"], masks[j], False)
            for j, s in enumerate(pred["segments_info"])
        ]
        return SegmentationResult("instance", tuple(size), seg, segments, _masks=masks)

    def _semantic(self, outputs: Any, index: int, classes: np.ndarray) -> SegmentationResult:
        seg = (classes + 1).astype(np.int32)
        labels = np.unique(classes).tolist()
        scores = self._semantic_scores(outputs, index, classes, labels)
        segments = [self._segment(c + 1, c, scores[c], classes == c, False) for c in labels]
        return SegmentationResult("semantic", classes.shape, seg, segments)

    def _semantic_scores(self, outputs, index, classes, labels) -> Dict[int, float]:
        """Mean over a class's pixels of its normalised per-pixel class probability.

        Computed on the low-resolution mask grid and nearest-sampled at the class map's pixels,
        which is plenty for one number per segment and keeps this cheap on big photos.
        """
        probs = outputs.class_queries_logits[index].float().softmax(-1)[:, :-1]  # (Q, C)
        masks = outputs.masks_queries_logits[index].float().sigmoid()  # (Q, h, w)
        crop = outputs.image_sizes[index] if getattr(outputs, "image_sizes", None) else None
        h, w = masks.shape[-2:]
        if crop is not None:  # drop the padding (in input pixels, 4 per mask cell)
            h, w = min(h, -(-int(crop[0]) // 4)), min(w, -(-int(crop[1]) // 4))
        masks = masks[:, :h, :w]
        scores = torch.einsum("qc,qhw->chw", probs[:, labels], masks)  # (K, h, w)
        total = torch.einsum("qc,qhw->hw", probs, masks).clamp_min(1e-12)
        norm = (scores / total).cpu().numpy()
        H, W = classes.shape
        ys = np.minimum((np.arange(H) + 0.5) * h / H, h - 1).astype(int)
        xs = np.minimum((np.arange(W) + 0.5) * w / W, w - 1).astype(int)
        out = {}
        for k, c in enumerate(labels):
            yy, xx = np.nonzero(classes == c)
            out[c] = float(norm[k][ys[yy], xs[xx]].mean())
        return out


def segment(
    inputs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
    out_dir: Union[str, os.PathLike] = "out",
    model: Union[str, os.PathLike] = "shapes",
    task: Optional[str] = None,
    threshold: Optional[float] = None,
    batch_size: int = 1,
    device: str = "cpu",
    dtype: Optional[str] = None,
    label_ids_to_fuse: Optional[Iterable[int]] = None,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    predictor: Optional[Predictor] = None,
) -> Any:
    """Segment image files, folders (recursively) and glob patterns; write results to ``out_dir``.

    Per image ``<name>.overlay.png`` (the picture), ``<name>.ids.png`` (16-bit grey PNG, pixel =
    segment id, 0 = none) and ``<name>.json`` (image, size, task, model, segments with id, label,
    score, area, bbox, was_fused and a COCO RLE mask), where ``<name>`` mirrors the input's path
    relative to the inputs' common folder. With the instance task also ``coco_results.json`` (COCO
    results, as ``COCO.loadRes`` takes them) and ``images.json`` (the matching ``images`` and
    ``categories``; ``category_id`` = the model's label id). Bad inputs are reported one line
    each and skipped; existing outputs are kept unless ``overwrite``.

    Args:
        model: built-in name, checkpoint folder or hub id (ignored when ``predictor`` is given).
        progress: show a progress bar (None: only on a terminal).
        Others: see :meth:`Predictor.predict` and :meth:`Predictor.from_pretrained`.

    Returns:
        A :class:`mask2former.segment_files.SegmentReport` (done, failed, skipped, seconds,
        outputs, errors).
    """
    from .segment_files import segment_files

    return segment_files(
        inputs,
        out_dir,
        model=model,
        task=task,
        threshold=threshold,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        label_ids_to_fuse=label_ids_to_fuse,
        overwrite=overwrite,
        progress=progress,
        predictor=predictor,
    )
