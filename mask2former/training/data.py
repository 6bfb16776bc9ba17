"""Training batches: augmentation, normalisation, and a resumable, shardable sample order.

Every random choice is derived from ``(seed, epoch, index)``: the order of an epoch from
``(seed, epoch)``, a sample's augmentation from ``(seed, epoch, index)``. So the batches after
step N are the same whether training ran straight through or was resumed at N, with any number
of data-loading workers, and each process of a multi-process run sees its own shard.
"""

from __future__ import annotations

import itertools
import os
import pickle
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

# The image processor's defaults: a model trained with them is used with them (the recipe
# passes its processor's image_mean and image_std explicitly).
from ..processing.image_processor import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "TrainSamples",
    "ResumableBatchSampler",
    "RandomBatchSampler",
    "WorkerFailure",
    "WorkerSafe",
    "collate",
    "collate_or_failure",
    "batch_iterator",
    "to_device",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

Transform = Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]]


class TrainSamples(torch.utils.data.Dataset):
    """Wraps a dataset of samples (``image``, ``masks``, ``labels``; see ``mask2former.data``)
    and yields model inputs. Indexed by ``(epoch, index)`` pairs from
    :class:`ResumableBatchSampler`.

    Crowd regions (``iscrowd``) are not targets, as in the original recipe. ``mean``/``std``
    (per channel, of pixel values in [0, 1]) normalise the images: they must be the image
    processor's that is saved with the trained model.
    """

    def __init__(
        self,
        dataset: Sequence[Dict[str, Any]],
        transform: Optional[Transform],
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        epoch, index = key
        sample = self.dataset[index]
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            sample = self.transform(sample, rng)
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        masks = np.asarray(sample["masks"], dtype=bool)
        labels = np.asarray(sample["labels"], dtype=np.int64)
        if "iscrowd" in sample and len(masks):
            keep = ~np.asarray(sample["iscrowd"], dtype=bool)
            masks, labels = masks[keep], labels[keep]
        return {
            "pixel_values": (image.float() - self.mean) / self.std,
            "mask_labels": torch.from_numpy(masks).float(),
            "class_labels": torch.from_numpy(labels),
        }


def to_device(batch: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """A collated batch with its images and targets on ``device`` (images left as they are
    when None)."""
    pixels = batch["pixel_values"]
    return {
        "pixel_values": None if pixels is None else pixels.to(device),
        "mask_labels": [m.to(device) for m in batch["mask_labels"]],
        "class_labels": [c.to(device) for c in batch["class_labels"]],
    }


def collate(items: List[Dict[str, torch.Tensor]]) -> Dict[str, Any]:
    """Stack images (all of one size after augmentation); keep targets as per-image lists."""
    sizes = {tuple(item["pixel_values"].shape) for item in items}
    if len(sizes) != 1:
        raise ValueError(
            f"a training batch needs images of one size, got {sorted(sizes)}; use a fixed-size "
            "crop augmentation"
        )
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "mask_labels": [item["mask_labels"] for item in items],
        "class_labels": [item["class_labels"] for item in items],
    }


class WorkerFailure:
    """A user error (a broken dataset file, a bad setting) met in a data-loading worker, carried
    to the main process as a value.

    PyTorch re-raises a worker's exception in the main process by calling its type with one
    message that holds the worker's whole traceback, or as a ``RuntimeError`` when the type
    does not take one argument, so the one-line error a user gets with ``--workers 0`` would
    become a traceback. Returned instead of a batch, the original exception is raised again
    as it was (see :meth:`raise_`).
    """

    def __init__(self, error: Exception):
        self.error = _portable(error)

    def raise_(self) -> None:
        raise self.error


def _portable(error: Exception) -> Exception:
    """``error`` if it survives pickling (the trip to the main process), else a ValueError
    with its message: an exception that cannot be sent would leave the main process waiting."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ValueError(str(error))
    return error


# The errors a user can cause and fix (the dataset's files, the crop size): carried as they
# are. Anything else stays an exception with the worker's traceback, which a bug needs.
_USER_ERRORS = (ValueError, OSError)


class WorkerSafe(torch.utils.data.Dataset):
    """``dataset`` for data-loading workers: a user error while reading an item is returned as
    a :class:`WorkerFailure` instead of raised (use with :func:`collate_or_failure`)."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except _USER_ERRORS as e:
            return WorkerFailure(e)


def collate_or_failure(items: List[Any]) -> Any:
    """:func:`collate`, or the first :class:`WorkerFailure` among ``items`` (or of collating)."""
    for item in items:
        if isinstance(item, WorkerFailure):
            return item
    try:
        return collate(items)
    except _USER_ERRORS as e:
        return WorkerFailure(e)


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless batches of ``(epoch, index)`` for one process, starting after ``start_batch``.

    Epoch ``e`` is a permutation drawn from ``(seed, e)``; process ``rank`` of ``world_size``
    takes every ``world_size``-th index of it; incomplete batches at the end of an epoch are
    dropped so every process runs the same number of steps.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        per_rank = num_samples // world_size
        if per_rank < batch_size:
            raise ValueError(
                f"{num_samples} samples are too few for batches of {batch_size} on "
                f"{world_size} process(es)"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.batches_per_epoch = per_rank // batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, 7919, epoch]).permutation(self.num_samples)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        batch = self.start_batch
        while True:
            epoch, offset = divmod(batch, self.batches_per_epoch)
            order = self.epoch_order(epoch)
            for b in range(offset, self.batches_per_epoch):
                chunk = order[b * self.batch_size : (b + 1) * self.batch_size]
                yield [(epoch, int(i)) for i in chunk]
            batch = (epoch + 1) * self.batches_per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


class RandomBatchSampler(torch.utils.data.Sampler):
    """Endless batches of ``(epoch, index)`` drawn at random, with replacement, from one
    generator seeded with ``seed`` (backbone pretraining's order); starts after
    ``start_batch``. A batch's epoch is the number of samples drawn before it divided by
    ``num_samples``, so the augmentation of a sample differs from one pass to the next."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, start_batch: int = 0):
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        rng = np.random.default_rng(self.seed)
        for batch in itertools.count():
            indices = rng.integers(self.num_samples, size=self.batch_size)
            if batch >= self.start_batch:
                epoch = batch * self.batch_size // self.num_samples
                yield [(epoch, int(i)) for i in indices]

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


def batch_iterator(
    dataset: torch.utils.data.Dataset,
    batch_sampler: torch.utils.data.Sampler,
    num_workers: int,
    seed: int,
) -> Iterator[Any]:
    """The collated batches of ``batch_sampler`` (with ``num_workers`` loading processes, a
    user error of the dataset comes back as a :class:`WorkerFailure`, to raise as it was).

    The loader has its own generator (from ``seed``), so creating it does not draw from the
    global random state (which would make a resumed run differ from an uninterrupted one).
    Torch's long warning about more workers than cores (given twice) is one line instead.
    """
    workers = num_workers > 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"This DataLoader will create")
        batches = iter(
            torch.utils.data.DataLoader(
                WorkerSafe(dataset) if workers else dataset,
                batch_sampler=batch_sampler,
                collate_fn=collate_or_failure if workers else collate,
                num_workers=num_workers,
                generator=torch.Generator().manual_seed(seed),
                persistent_workers=workers,
            )
        )
    cores = _cpu_count()
    if num_workers > cores:
        warnings.warn(
            f"{num_workers} data-loading workers on {cores} CPU cores may slow training down",
            stacklevel=4,  # the trainer's caller
        )
    return batches


def _cpu_count() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every system
        return os.cpu_count() or 1
