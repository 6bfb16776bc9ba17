"""The pieces of the training recipe, each a plain function: the datasets, the model for
their classes, the image processor saved with it, the augmented and normalised samples, and
the evaluation during training. :func:`mask2former.training.run.train` puts them together;
``mask2former train`` and ``pretrain-backbone`` only map their options to them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from ..checkpoint import HEAD_PREFIXES
from ..config import Mask2FormerConfig
from ..data.augment import LargeScaleJitter, ResizeShortestEdgeCrop
from ..data.loading import open_dataset
from ..modeling.mask2former import Mask2FormerForUniversalSegmentation
from ..processing.image_processor import Mask2FormerImageProcessor
from .data import TrainSamples, Transform
from .labels import dataset_labels, note_label_change, set_task
from .presets import model_config

__all__ = [
    "VALIDATION_SEED",
    "DataSettings",
    "ModelSettings",
    "build_model",
    "open_training_set",
    "open_validation_set",
    "augmentation",
    "training_processor",
    "training_samples",
    "validation_evaluator",
    "validation_previews",
]

# The generated split scored during training and pretraining: never a training seed (0 by
# default) nor the split the figures are reported on (12345).
VALIDATION_SEED = 99991


@dataclass
class DataSettings:
    """The training data: ``data`` is a dataset folder or "shapes" (``num_train`` images
    generated from ``data_seed``, ``image_size`` pixels square), read for ``task``; samples are
    augmented to ``crop``-pixel squares (scale range ``min_scale``..``max_scale`` for the
    large-scale jitter); ``cache`` keeps every sample in memory after its first read;
    ``eval_images`` of the validation split are scored during training."""

    data: str = "shapes"
    task: str = "panoptic"
    num_train: int = 2000
    cache: bool = False
    data_seed: int = 0
    image_size: int = 256
    crop: int = 256
    min_scale: float = 0.1
    max_scale: float = 2.0
    eval_images: int = 50

    def check(self) -> None:
        """Raises ValueError for a scale range that is empty."""
        if self.min_scale > self.max_scale:
            raise ValueError(f"--min-scale {self.min_scale} is above --max-scale {self.max_scale}")


@dataclass
class ModelSettings:
    """The model to train: the architecture ``model_config`` (a preset name or config.json)
    from scratch, or the model ``init`` (folder, name, hub id) to fine-tune; the other fields,
    when set, change its config (``decoder_layers``, ``num_queries``, the loss's points per
    mask ``num_points``, the matcher's ``matcher_class_cost``, ``mask_loss`` "points" or
    "dense")."""

    model_config: str = "shapes-tiny"
    init: Optional[str] = None
    decoder_layers: Optional[int] = None
    num_queries: Optional[int] = None
    num_points: Optional[int] = None
    matcher_class_cost: Optional[float] = None
    mask_loss: Optional[str] = None

    def overrides(self) -> Dict[str, Any]:
        """The config fields these settings change. They are applied before the model is
        built, as the criterion and matcher read their weights and point counts then."""
        options = {
            "decoder_layers": self.decoder_layers,
            "num_queries": self.num_queries,
            "train_num_points": self.num_points,
            "matcher_class_cost": self.matcher_class_cost,
            "mask_loss_sampling": self.mask_loss,
        }
        return {key: value for key, value in options.items() if value is not None}


def open_training_set(data: DataSettings) -> Any:
    """The training dataset (samples as in :mod:`mask2former.data.sample`)."""
    return open_dataset(
        data.data,
        task=data.task,
        num=data.num_train,
        seed=data.data_seed,
        image_size=data.image_size,
    )


def open_validation_set(data: DataSettings) -> Any:
    """The held-out images scored while training: ``eval_images`` of the data's validation
    split (a generated one, from :data:`VALIDATION_SEED`, for "shapes")."""
    return open_dataset(
        data.data,
        task=data.task,
        num=data.eval_images,
        seed=VALIDATION_SEED,
        image_size=data.image_size,
    )


def _only_class_head(message: str) -> bool:
    """Whether a re-initialisation warning of from_pretrained names only the class head."""
    if not message.startswith("re-initialised") or ": " not in message:
        return False
    names = message.rsplit(": ", 1)[1].split(", ")
    return all(name.startswith(HEAD_PREFIXES) for name in names)


def _load_init(
    init: str, id2label: Dict[int, str], overrides: Dict[str, Any], head_noted: bool
) -> Mask2FormerForUniversalSegmentation:
    """The ``init`` model for these classes and config overrides. Its warning about a
    re-initialised class head is dropped when the label note already said so."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            init,
            ignore_mismatched_sizes=True,
            # Only a new decoder depth adds or removes tensors (new query counts are size
            # mismatches, which ignore_mismatched_sizes covers); any other missing tensor
            # stays an error.
            reinit_missing="decoder_layers" in overrides,
            id2label=id2label,
            **overrides,
        )
    for w in caught:
        if not (head_noted and _only_class_head(str(w.message))):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def build_model(
    settings: ModelSettings, train_set: Any, task: str, command: str = "train"
) -> Mask2FormerForUniversalSegmentation:
    """The model to train (from ``settings.init`` or ``settings.model_config``) for the
    classes of ``train_set`` (see :func:`~mask2former.training.labels.label_source`), with
    ``task`` and the stuff classes recorded in its config. Notes name ``command``."""
    init = settings.init
    init_labels = Mask2FormerConfig.from_pretrained(init).id2label if init else None
    id2label = dataset_labels(train_set, init_labels, settings.model_config, command)
    overrides = settings.overrides()
    if init:
        head_noted = note_label_change(init, init_labels, id2label, command)
        model = _load_init(init, id2label, overrides, head_noted)
        set_task(model.config, train_set, task)
        return model
    config = model_config(settings.model_config, id2label)
    if overrides:
        config = type(config).from_dict({**config.to_dict(), **overrides})
    set_task(config, train_set, task)
    return Mask2FormerForUniversalSegmentation(config)


def training_processor(crop: int) -> Mask2FormerImageProcessor:
    """The image processor saved with a trained model: inputs resized as the training crops,
    normalised with the mean and std the training samples are (see :func:`training_samples`)."""
    return Mask2FormerImageProcessor(size={"shortest_edge": crop, "longest_edge": 4 * crop})


def augmentation(data: DataSettings, ignore_index: int = 255) -> Transform:
    """The recipe's augmentation of ``data``: semantic data is resized on the short side and
    cropped (``ignore_index`` on padding, ADE20K-style), other data gets the large-scale
    jitter over ``min_scale``..``max_scale`` (COCO-style); both end in ``crop`` squares."""
    if data.task == "semantic":
        return ResizeShortestEdgeCrop(data.crop, ignore_index=ignore_index)
    return LargeScaleJitter(data.crop, data.min_scale, data.max_scale)


def training_samples(
    dataset: Any, transform: Optional[Transform], processor: Mask2FormerImageProcessor, seed: int
) -> TrainSamples:
    """``dataset``'s samples as model inputs, augmented by ``transform`` (random choices from
    ``seed``) and normalised with ``processor``'s image mean and std: a model trained on them
    is used with the processor saved beside it, so both must normalise alike."""
    return TrainSamples(
        dataset, transform, seed=seed, mean=processor.image_mean, std=processor.image_std
    )


def validation_evaluator(
    data: DataSettings, processor: Mask2FormerImageProcessor, eval_every: int
) -> Optional[Callable[[nn.Module], Dict[str, float]]]:
    """``evaluate(model) -> {"PQ"|"PQ_th"|"PQ_st"|"AP"|"mIoU": value}`` on the validation images (every task
    the data's task serves), or None when training evaluates nothing."""
    from ..evaluation.runner import evaluate_model

    if not (eval_every or data.eval_images):
        return None
    val_set = open_validation_set(data)
    tasks = ["panoptic", "instance", "semantic"] if data.task == "panoptic" else [data.task]

    def evaluate(m: nn.Module) -> Dict[str, float]:
        # On the model's own device: evaluate_model moves the model there.
        device = next(m.parameters()).device
        results = evaluate_model(
            m, processor, val_set, tasks=tasks, device=device, batch_size=4,
            max_images=data.eval_images,
        )  # fmt: skip
        flat = {}
        # PQ of all classes, of things and of stuff; mask AP; mIoU.
        keys = (("PQ", "panoptic"), ("PQ_th", "panoptic"), ("PQ_st", "panoptic"))
        for key, task in keys + (("AP", "instance"), ("mIoU", "semantic")):
            if key in results.get(task, {}):
                flat[key] = round(float(results[task][key]), 2)
        return flat

    return evaluate


def validation_previews(
    data: DataSettings, processor: Mask2FormerImageProcessor, count: int = 4
) -> Optional[Callable[[nn.Module], List[Any]]]:
    """``previews(model) -> [RGB picture]``: the model's predictions (for the data's task, with
    the model's own defaults, as ``segment`` makes them) on the first ``count`` validation
    images, drawn as ``segment`` draws its overlays; the same images every time, so TensorBoard
    shows them change over the run. None when no validation image is scored."""
    import numpy as np

    from ..inference.options import ModelInfo
    from ..inference.pipeline import Pipeline
    from ..inference.runner import TorchRunner
    from ..visualize import draw_overlay

    if not data.eval_images or count < 1:
        return None
    val_set = open_validation_set(data)
    images: List[np.ndarray] = []  # read at the first evaluation: a run may write no pictures

    def previews(m: nn.Module) -> List[Any]:
        try:
            if not images:
                n = min(count, data.eval_images, len(val_set))
                images.extend(np.asarray(val_set[i]["image"]) for i in range(n))
            info = ModelInfo.from_config(m.config)
            pipeline = Pipeline(TorchRunner(m), processor)
            results = pipeline.predict(images, info.options(data.task), batch_size=4)
            return [
                np.asarray(draw_overlay(image, r.segmentation, r.segments, info.id2label))
                for image, r in zip(images, results)
            ]
        except Exception as e:  # pictures must not cost the evaluation's metrics, nor the run
            message = f"no prediction pictures for TensorBoard: {type(e).__name__}: {e}"
            warnings.warn(message, stacklevel=2)
            return []

    return previews
