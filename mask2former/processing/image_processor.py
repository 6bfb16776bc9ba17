"""``Mask2FormerImageProcessor``: model inputs from images and label maps, segmentations from the
model's outputs, and ``preprocessor_config.json`` in the published layout."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .._config_base import (
    INT32,
    MAX_LABELS,
    ConfigError,
    check_bool,
    check_float,
    check_int,
    optional,
)
from . import postprocess
from .batch import BatchFeature
from .encoding import as_list, encode_batch
from .labels import segmentation_map_to_binary_masks
from .later_settings import LATER_KEYS, read_later_settings, read_pad_size
from .preprocess import PreprocessSettings, prepare_image, prepare_map, split_maps
from .processor_checks import (
    channel_stats,
    check_resample,
    pop_max_size,
    read_reduce_labels,
    read_size,
)
from .processor_files import CONFIG_NAME, ProcessorFiles
from .rle import binary_mask_to_rle  # exported here too, as transformers does
from .transforms import (
    _channels_last,
    _is_torch_tensor,
    normalize_size,
    to_label_array,
)

__all__ = ["Mask2FormerImageProcessor", "CONFIG_NAME", "binary_mask_to_rle"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
BILINEAR = 2  # PIL.Image.Resampling.BILINEAR
# Keys of published files that only say which class wrote them.
_TYPE_KEYS = (
    "image_processor_type",
    "feature_extractor_type",
    "processor_class",
    "_processor_class",
)
MAX_SIZE_DIVISOR = 1024  # published: 32
_ARGUMENTS = (
    "do_resize",
    "size",
    "size_divisor",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "ignore_index",
    "reduce_labels",
)


class Mask2FormerImageProcessor(ProcessorFiles):
    """Prepares images (and label maps) for Mask2Former and turns its outputs into segmentations.

    Preprocessing resizes (``size``: ``{"shortest_edge", "longest_edge"}``, ``{"height",
    "width"}`` or an int shortest edge with longest edge 1333; sides rounded up to a multiple of
    ``size_divisor``), rescales, normalizes and pads bottom/right to the largest image of the batch,
    as transformers 4.37.2 does (PIL resizing, so pixels agree). Differences from the reference:

    - EXIF orientation of PIL images is applied before anything else (the reference ignores it);
      grayscale, RGBA, palette and 16-bit images are converted to RGB.
    - Float images are resized in float precision (the reference goes through 8 bits).
    - Label maps may hold ids above 255 (the reference's 8-bit resize fails on them).
    - Binary ``mask_labels`` are padded with 0 (the reference pads with ``ignore_index``), and a map
      with no label left gives (0, H, W) masks and empty ``class_labels`` (the reference raises).

    The settings are public attributes; ``to_dict``, ``from_dict``, ``to_json_string``,
    ``to_json_file``, ``from_json_file``, ``from_pretrained`` and ``save_pretrained`` follow
    transformers (:class:`~mask2former.processing.processor_files.ProcessorFiles`).

    Post-processing: see :mod:`mask2former.processing.postprocess`.
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    _SETTING_KEYS = (
        _ARGUMENTS
        + (
            "do_reduce_labels",
            "max_size",
            "_max_size",
            "size_divisibility",
            "num_labels",
        )
        + LATER_KEYS
    )
    # pad_size is a setting of transformers 5.x's processors, which write it also when None (and
    # 4.37.2 reads the key as a plain attribute); the other later keys stay out while unset.
    _OMIT_WHEN_NONE = tuple(key for key in LATER_KEYS if key != "pad_size")

    def __init__(
        self,
        do_resize: bool = True,
        size: Union[int, Tuple[int, int], Dict[str, int], None] = None,
        size_divisor: int = 32,
        resample: int = BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Union[float, Sequence[float], None] = None,
        image_std: Union[float, Sequence[float], None] = None,
        ignore_index: Optional[int] = None,
        reduce_labels: Optional[bool] = None,
        **kwargs: Any,
    ) -> None:
        """Arguments as in transformers 4.37.2 (``reduce_labels`` is also read as
        ``do_reduce_labels``; None is False); each is checked here, and a bad value is a
        ValueError (ConfigError) that names it. ``image_mean``/``image_std`` may be one number
        for all three channels. Other keyword arguments (e.g. ``num_labels``) become attributes,
        written back by ``save_pretrained``."""
        # Deprecated names still found in published files.
        divisor_key = "size_divisor"
        if "size_divisibility" in kwargs:
            size_divisor, divisor_key = kwargs.pop("size_divisibility"), "size_divisibility"
        written_by_4x = "_max_size" in kwargs
        self._max_size = pop_max_size(kwargs)
        for key in _TYPE_KEYS:
            kwargs.pop(key, None)
        self.do_resize = check_bool("do_resize", do_resize)
        self.size = read_size(size, self._max_size)
        # None (an explicit "no rounding") is kept working: it was accepted before.
        self.size_divisor = check_int(
            divisor_key, 0 if size_divisor is None else size_divisor, 0, MAX_SIZE_DIVISOR
        )
        self.resample = check_resample("resample", resample)
        self.do_rescale = check_bool("do_rescale", do_rescale)
        self.rescale_factor = check_float(
            "rescale_factor", rescale_factor, 0.0, 1000.0, low_open=True
        )
        self.do_normalize = check_bool("do_normalize", do_normalize)
        mean = IMAGENET_MEAN if image_mean is None else image_mean
        std = IMAGENET_STD if image_std is None else image_std
        self.image_mean = channel_stats("image_mean", mean, positive=False)
        self.image_std = channel_stats("image_std", std, positive=True)
        self.ignore_index = optional(partial(check_int, low=INT32[0], high=INT32[1]))(
            "ignore_index", ignore_index
        )
        self.reduce_labels = read_reduce_labels(reduce_labels, kwargs, written_by_4x)
        if "num_labels" in kwargs:
            kwargs["num_labels"] = optional(partial(check_int, low=1, high=MAX_LABELS))(
                "num_labels", kwargs["num_labels"]
            )
        # Keys of transformers 5.x (later_settings.py says what each does here).
        for key, value in read_later_settings(kwargs).items():
            setattr(self, key, value)
        self._set_unknown(kwargs)

    def _set_unknown(self, kwargs: Dict[str, Any]) -> None:
        """Other keys become attributes (as in transformers), written back by ``to_dict``."""
        for key, value in kwargs.items():
            if not isinstance(key, str) or not key or hasattr(type(self), key):
                # "preprocess" or "to_dict" would replace a method.
                raise ConfigError(
                    f"{key}: not a setting of {type(self).__name__} (the name of one of its "
                    "methods or properties)"
                )
            setattr(self, key, value)

    @property
    def do_reduce_labels(self) -> bool:
        """``reduce_labels`` under its transformers 5.x name."""
        return self.reduce_labels

    @do_reduce_labels.setter
    def do_reduce_labels(self, value: bool) -> None:
        self.reduce_labels = value

    # ------------------------------------------------------------------ preprocessing
    def __call__(self, images: Any, segmentation_maps: Any = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: Union[Dict[int, int], List[Dict[int, int]], None] = None,
        do_resize: Optional[bool] = None,
        size: Union[int, Tuple[int, int], Dict[str, int], None] = None,
        size_divisor: Optional[int] = None,
        resample: Optional[int] = None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean: Union[float, Sequence[float], None] = None,
        image_std: Union[float, Sequence[float], None] = None,
        ignore_index: Optional[int] = None,
        reduce_labels: Optional[bool] = None,
        return_tensors: Optional[str] = None,
        data_format: Optional[str] = None,
        input_data_format: Optional[str] = None,
        pad_size: Optional[Dict[str, int]] = None,
        device: Optional[str] = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Model inputs for one image or a batch (PIL images, arrays or tensors, or lists of them).

        Returns a :class:`BatchFeature` with ``pixel_values`` (B, 3, H, W) (or (B, H, W, 3) with
        ``data_format="channels_last"``), ``pixel_mask`` (B, H, W) int64 (1 = real pixel), and with
        ``segmentation_maps`` also ``mask_labels`` (list of (N_i, H, W) float32) and
        ``class_labels`` (list of (N_i,) int64). ``return_tensors``: "pt" for torch tensors, "np"
        for numpy arrays, None for lists of numpy arrays. ``pad_size`` ({"height", "width"}) pads
        to that size instead of the largest image; ``device`` moves "pt" tensors there. Unset
        arguments take the processor's settings (``data_format``: "channels_first").
        """
        kwargs.pop("pad_and_return_pixel_mask", None)  # deprecated no-op of the reference
        if kwargs:
            raise TypeError(f"preprocess() got unexpected arguments: {sorted(kwargs)}")
        input_data_format = input_data_format or self.input_data_format
        settings = PreprocessSettings(
            do_resize=self.do_resize if do_resize is None else do_resize,
            size=self.size if size is None else normalize_size(size, self._max_size),
            size_divisor=self.size_divisor if size_divisor is None else size_divisor,
            resample=self.resample if resample is None else int(resample),
            do_rescale=self.do_rescale if do_rescale is None else do_rescale,
            rescale_factor=self.rescale_factor if rescale_factor is None else rescale_factor,
            do_normalize=self.do_normalize if do_normalize is None else do_normalize,
            image_mean=self.image_mean if image_mean is None else image_mean,
            image_std=self.image_std if image_std is None else image_std,
        )
        image_list, batched = as_list(images, "images")
        map_list = split_maps(segmentation_maps, batched, len(image_list))
        processed, labels, warned = [], [], False
        for i, image in enumerate(image_list):
            pixels, orig, out_size, rescaled = prepare_image(image, i, settings, input_data_format)
            if rescaled and not warned:
                warnings.warn(
                    "images look already rescaled to 0..1; set do_rescale=False if so",
                    stacklevel=2,
                )
                warned = True
            processed.append(pixels)
            if map_list is not None:
                labels.append(prepare_map(map_list[i], i, orig, out_size, settings.do_resize))
        return_tensors = return_tensors or self.return_tensors
        batch = encode_batch(
            processed,
            labels if map_list is not None else None,
            instance_id_to_semantic_id,
            self.ignore_index if ignore_index is None else ignore_index,
            self.reduce_labels if reduce_labels is None else reduce_labels,
            return_tensors,
            data_format or self.data_format or "channels_first",
            self.pad_size if pad_size is None else read_pad_size(pad_size),
        )
        return self._to_device(batch, device, return_tensors)

    def _to_device(self, batch: BatchFeature, device: Optional[str], return_tensors: Any):
        """The batch on ``device`` (or the ``device`` setting); torch tensors only."""
        device = device or self.device
        if device is None:
            return batch
        if return_tensors != "pt":
            raise ValueError(f"device={device!r} needs return_tensors='pt' (torch tensors)")
        return batch.to(device)

    def encode_inputs(
        self,
        pixel_values_list: Sequence[Any],
        segmentation_maps: Optional[Sequence[Any]] = None,
        instance_id_to_semantic_id: Union[Dict[int, int], List[Dict[int, int]], None] = None,
        ignore_index: Optional[int] = None,
        reduce_labels: bool = False,
        return_tensors: Optional[str] = None,
        input_data_format: Optional[str] = None,
        pad_size: Optional[Dict[str, int]] = None,
    ) -> BatchFeature:
        """Pad already processed images to the largest one (or ``pad_size``, {"height",
        "width"}, or the ``pad_size`` setting), make ``pixel_mask``, and turn each
        segmentation map into binary masks with one class each (``[[2, 6, 7, 9]]`` gives four
        masks with classes [2, 6, 7, 9]). Images are (C, H, W) (or (H, W, C)) arrays/tensors; the
        output keeps channels first as the model expects."""
        pixel_list, _ = as_list(pixel_values_list, "pixel_values_list")
        arrays = []
        for i, pv in enumerate(pixel_list):
            arr = pv.detach().cpu().numpy() if _is_torch_tensor(pv) else np.asarray(pv)
            if arr.ndim != 3:
                raise ValueError(f"pixel_values_list[{i}] must be 3-d, got shape {arr.shape}")
            arrays.append(_channels_last(arr, input_data_format, f"pixel_values_list[{i}]"))
        maps = None
        if segmentation_maps is not None:
            map_items, _ = as_list(segmentation_maps, "segmentation_maps")
            if len(map_items) != len(arrays):
                raise ValueError(f"got {len(arrays)} images but {len(map_items)} segmentation maps")
            maps = [
                prepare_map(m, i, arr.shape[:2], arr.shape[:2], False, "pixel_values_list")
                for i, (m, arr) in enumerate(zip(map_items, arrays))
            ]
        return encode_batch(
            arrays,
            maps,
            instance_id_to_semantic_id,
            self.ignore_index if ignore_index is None else ignore_index,
            self.reduce_labels if reduce_labels is None else reduce_labels,
            return_tensors,
            "channels_first",
            self.pad_size if pad_size is None else read_pad_size(pad_size),
        )

    def convert_segmentation_map_to_binary_masks(
        self,
        segmentation_map: Any,
        instance_id_to_semantic_id: Optional[Dict[int, int]] = None,
        ignore_index: Optional[int] = None,
        reduce_labels: Optional[bool] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """(N, H, W) float32 masks and (N,) int64 classes of one label map."""
        return segmentation_map_to_binary_masks(
            to_label_array(segmentation_map),
            instance_id_to_semantic_id,
            self.ignore_index if ignore_index is None else ignore_index,
            self.reduce_labels if reduce_labels is None else reduce_labels,
        )

    # ------------------------------------------------------------------ post-processing
    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    ) -> list:
        """See :func:`mask2former.processing.postprocess.post_process_semantic_segmentation`."""
        return postprocess.post_process_semantic_segmentation(
            outputs, target_sizes=target_sizes, image_sizes=image_sizes
        )

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        top_k: Optional[int] = None,
    ) -> List[Dict[str, Any]]:
        """See :func:`mask2former.processing.postprocess.post_process_instance_segmentation`."""
        return postprocess.post_process_instance_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            target_sizes=target_sizes,
            return_coco_annotation=return_coco_annotation,
            return_binary_maps=return_binary_maps,
            image_sizes=image_sizes,
            top_k=top_k,
        )

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Optional[Set[int]] = None,
        target_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
        merge_fused: bool = False,
    ) -> List[Dict[str, Any]]:
        """See :func:`mask2former.processing.postprocess.post_process_panoptic_segmentation`."""
        return postprocess.post_process_panoptic_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            label_ids_to_fuse=label_ids_to_fuse,
            target_sizes=target_sizes,
            image_sizes=image_sizes,
            merge_fused=merge_fused,
        )
