"""Training batches: augmentation, normalisation, and a resumable, shardable sample order.

Every random choice is derived from ``(seed, epoch, index)``: the order of an epoch from
``(seed, epoch)``, a sample's augmentation from ``(seed, epoch, index)``. So the batches after
step N are the same whether training ran straight through or was resumed at N, with any number
of data-loading workers, and each process of a multi-process run sees its own shard.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "TrainSamples",
    "ResumableBatchSampler",
    "WorkerFailure",
    "WorkerSafe",
    "collate",
    "collate_or_failure",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[[Dict[str, Any], np.random.Generator], Dict[str, Any]]


class TrainSamples(torch.utils.data.Dataset):
    """Wraps a dataset of samples (``image``, ``masks``, ``labels``; see ``mask2former.data``)
    and yields model inputs. Indexed by ``(epoch, index)`` pairs from
    :class:`ResumableBatchSampler`.

    Crowd regions (``iscrowd``) are not targets, as in the original recipe.
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
