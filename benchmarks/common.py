"""Shared helpers for the benchmarks: the Swin-T model pair, timing and memory measurement.

The reference (transformers 4.37.2) builds the model with random weights and saves it with its
own ``save_pretrained``; ours loads that folder with ``from_pretrained``, so both run the same
weights. Timings alternate ours and the reference inside one process and report medians, because
other jobs share this machine and its speed drifts over seconds.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch

__all__ = [
    "build_reference",
    "load_ours",
    "randomize_",
    "alternate",
    "peak_rss_mb",
    "format_ratio",
    "make_training_batch",
]

SWIN_T = dict(
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    out_features=["stage1", "stage2", "stage3", "stage4"],
)


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Random weights at a trained model's magnitude (default init gives near-zero masks, so
    the masked attention would sit on its threshold and say little about accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif p.dim() == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen) * scale * (3.0 / fan_in) ** 0.5)


def build_reference(folder: str, seed: int = 0, realistic: bool = True):
    """The Swin-T, 133-class, 100-query reference model with random weights, saved in ``folder``.

    ``realistic`` scales the weights (see :func:`randomize_`) and centres the mask features on
    a random image, so that masks cover parts of the image as a trained model's do.
    """
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    config = Mask2FormerConfig(backbone_config=SwinConfig(**SWIN_T), num_labels=133)
    config.num_queries = 100
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    if realistic:
        randomize_(model, seed)
        with torch.no_grad():
            pixels = torch.randn(1, 3, 384, 384, generator=torch.Generator().manual_seed(seed))
            level = model.model.pixel_level_module
            feats = level.encoder(pixels).feature_maps
            mask_features = level.decoder(feats).mask_features
            proj = level.decoder.mask_projection
            std = mask_features.std(dim=(0, 2, 3)).clamp_min(1e-6)
            proj.bias.sub_(mask_features.mean(dim=(0, 2, 3))).div_(std)
            proj.weight.div_(std[:, None, None, None])
    model.save_pretrained(folder)
    return model


def load_ours(folder: str, dtype: torch.dtype = torch.float32):
    from mask2former import Mask2FormerForUniversalSegmentation

    return Mask2FormerForUniversalSegmentation.from_pretrained(folder, torch_dtype=dtype).eval()


def make_training_batch(
    batch: int, size: int, num_labels: int = 133, masks_per_image: int = 4, seed: int = 0
) -> Tuple[torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
    """Pixels (B, 3, size, size), and per image a few random rectangle masks with class ids."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, size, size, generator=gen)
    masks, classes = [], []
    for _ in range(batch):
        m = torch.zeros(masks_per_image, size, size)
        for i in range(masks_per_image):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=gen).tolist()
            m[i, y0 : y0 + h, x0 : x0 + w] = 1.0
        masks.append(m)
        classes.append(torch.randint(0, num_labels, (masks_per_image,), generator=gen))
    return pixels, masks, classes


def alternate(
    cases: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> Dict[str, List[float]]:
    """Run every case ``warmup`` times, then ``repeats`` rounds of each case in turn.

    Returns the wall times (seconds) per case. Alternating inside one round means a slow spell
    of the machine hits every case alike, so ratios of medians stay fair.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def format_ratio(name: str, ref: Sequence[float], ours: Sequence[float]) -> str:
    r, o = median(ref), median(ours)
    return f"{name:<34} ref {r * 1000:9.1f} ms   ours {o * 1000:9.1f} ms   ratio {r / o:6.2f}x"
