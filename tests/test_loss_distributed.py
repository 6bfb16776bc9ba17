"""num_masks is averaged across processes (two CPU processes, gloo backend)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mask2former import Mask2FormerConfig
from mask2former.loss import Mask2FormerLoss, average_num_masks

# Rank 0 has 1 target, rank 1 has 3 (in two images): both must normalize by (1 + 3) / 2 = 2.
COUNTS = {0: [1, 0], 1: [2, 1]}


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.manual_seed(rank)
        counts = COUNTS[rank]
        class_labels = [torch.zeros(n, dtype=torch.long) for n in counts]
        num_masks = average_num_masks(class_labels, torch.device("cpu"))

        # The criterion divides the mask terms by that value: check it against a run without
        # torch.distributed, whose normalizer is the local count, 1 or 3.
        config = Mask2FormerConfig(num_labels=3, num_queries=4, train_num_points=50)
        loss_fn = Mask2FormerLoss(config)
        masks = [(torch.rand(n, 32, 32) > 0.5).float() for n in counts]
        logits = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4)
        torch.manual_seed(100)
        terms = loss_fn(*logits, masks, class_labels).terms()
        torch.save(
            {
                "num_masks": num_masks,
                "terms": {k: v.detach() for k, v in terms.items()},
                "inputs": (logits, masks, class_labels),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_num_masks_is_averaged_across_processes(tmp_path):
    world_size = 2
    mp.spawn(
        _worker,
        args=(world_size, str(tmp_path / "init"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    config = Mask2FormerConfig(num_labels=3, num_queries=4, train_num_points=50)
    loss_fn = Mask2FormerLoss(config)
    for rank in range(world_size):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(result["num_masks"]) == 2.0
        (logits, masks, class_labels) = result["inputs"]
        local = sum(len(c) for c in class_labels)
        assert not dist.is_initialized()
        torch.manual_seed(100)
        single = loss_fn(*logits, masks, class_labels).terms()
        # Same seed and inputs: the mask terms differ exactly by the normalizer 2 vs local count.
        for key in ("loss_mask", "loss_dice"):
            expected = single[key] * local / 2.0
            assert torch.allclose(result["terms"][key], expected, rtol=1e-5), (rank, key)
        assert torch.allclose(result["terms"]["loss_cross_entropy"], single["loss_cross_entropy"])
