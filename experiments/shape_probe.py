"""Can the ``shapes-tiny`` Swin backbone learn to tell the five shapes apart, and how fast?

The classifier experiments of ``mask2former/weights/shapes/RECIPE.md``: the backbone is trained
alone, with a small head, in one of three set-ups, and the accuracy on the things of a held-out
seed is printed every ``--eval-every`` steps (chance is 0.2):

* ``crop``: tight crops around each thing (its box times ``--margin``), resized to ``--size``
  pixels, average-pooled last stage, linear head. ``--test-margin`` also scores crops framed
  differently, which exposes a classifier that learned the framing instead of the shape.
* ``mask-pool``: whole images; every stage is pooled inside each segment's mask (dilated by one
  cell), concatenated, linear head. This is what a Mask2Former query has to work with.
* ``per-pixel``: whole images; a 1x1-conv head on all stages, upsampled, per-pixel
  cross-entropy; an instance is scored by the majority vote of its pixels.

    OMP_NUM_THREADS=1 python experiments/shape_probe.py mask-pool --steps 800
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mask2former.data.shapes import SHAPES_CATEGORIES, ShapesConfig, ShapesDataset
from mask2former.modeling.swin import build_swin_backbone
from mask2former.training.data import IMAGENET_MEAN, IMAGENET_STD, TrainSamples, collate
from mask2former.training.presets import preset_config
from mask2former.training.pretrain import mask_pooled_features

NUM_THINGS = sum(c["isthing"] for c in SHAPES_CATEGORIES)


def thing_crops(
    dataset: ShapesDataset, margin: Tuple[float, float], size: int, rng: np.random.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, size, size) normalised crops of every thing and their (N,) labels."""
    mean, std = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255
    crops, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        image = Image.fromarray(sample["image"])
        for mask, label, isthing in zip(sample["masks"], sample["labels"], sample["isthing"]):
            if not isthing:
                continue
            ys, xs = np.nonzero(mask)
            cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
            half = max(np.ptp(ys), np.ptp(xs)) / 2 * rng.uniform(*margin) + 2
            box = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
            crops.append(np.asarray(image.crop(box).resize((size, size), Image.BILINEAR)))
            labels.append(int(label))
    x = torch.tensor((np.stack(crops) - mean) / std, dtype=torch.float32).permute(0, 3, 1, 2)
    return x, torch.tensor(labels)


class ConvBackbone(nn.Module):
    """A plain CNN with the Swin preset's strides (4-32) and widths, to compare inductive biases:
    (B, 3, H, W) -> four (B, C_i, H / 2^(i+2), W / 2^(i+2)) maps."""

    def __init__(self, widths: List[int]):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )

        ins = [3] + widths[:-1]
        strides = [4] + [2] * (len(widths) - 1)
        self.stages = nn.ModuleList(block(i, o, s) for i, o, s in zip(ins, widths, strides))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Probe(nn.Module):
    """The backbone and a head for one set-up; ``forward`` gives (logits, labels) per item."""

    def __init__(
        self,
        setup: str,
        window: Optional[int] = None,
        depths: Optional[List[int]] = None,
        cnn: bool = False,
    ):
        super().__init__()
        config = preset_config("shapes-tiny", {0: "thing"}).backbone_config
        config.drop_path_rate = 0.0
        config.window_size = window or config.window_size
        config.depths = depths or config.depths
        self.setup = setup
        widths = [config.embed_dim * 2**i for i in range(len(config.depths))]
        self.backbone = ConvBackbone(widths) if cnn else build_swin_backbone(config)
        classes = len(SHAPES_CATEGORIES)
        if setup == "crop":
            self.head = nn.Linear(widths[-1], NUM_THINGS)
        elif setup == "mask-pool":
            self.head = nn.Linear(sum(widths), classes)
        else:
            self.head = nn.Sequential(
                nn.Conv2d(sum(widths), 64, 1), nn.ReLU(), nn.Conv2d(64, classes, 1)
            )

    def dense_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, classes, H, W) per-pixel logits of the ``per-pixel`` set-up."""
        features = self.backbone(pixel_values)
        size = features[0].shape[-2:]
        stacked = torch.cat(
            [features[0]]
            + [
                F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                for f in features[1:]
            ],
            1,
        )
        return F.interpolate(
            self.head(stacked), scale_factor=4, mode="bilinear", align_corners=False
        )

    def forward(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.setup == "crop":
            x, y = batch
            return self.head(self.backbone(x)[-1].mean((2, 3))), y
        if self.setup == "mask-pool":
            features = self.backbone(batch["pixel_values"])
            logits = [
                self.head(mask_pooled_features([f[i] for f in features], masks))
                for i, masks in enumerate(batch["mask_labels"])
            ]
            return torch.cat(logits), torch.cat(batch["class_labels"])
        logits = self.dense_logits(batch["pixel_values"])
        target = torch.full(logits[:, 0].shape, 255, dtype=torch.long)
        for i, (masks, labels) in enumerate(zip(batch["mask_labels"], batch["class_labels"])):
            for m, label in zip(masks, labels):
                target[i][m > 0] = label
        return logits, target


@torch.no_grad()
def thing_accuracy(model: Probe, batches) -> float:
    model.eval()
    hits = []
    for batch in batches:
        if model.setup == "per-pixel":
            pred = model.dense_logits(batch["pixel_values"]).argmax(1)
            for i, (masks, labels) in enumerate(zip(batch["mask_labels"], batch["class_labels"])):
                for m, label in zip(masks, labels):
                    if label < NUM_THINGS:
                        vote = torch.bincount(pred[i][m > 0], minlength=len(SHAPES_CATEGORIES))
                        hits.append(float(vote.argmax() == label))
        else:
            logits, labels = model(batch)
            keep = labels < NUM_THINGS
            hits += (logits[keep].argmax(1) == labels[keep]).float().tolist()
    model.train()
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("setup", choices=["crop", "mask-pool", "per-pixel"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images", type=int, default=20000, help="training images (seed 0)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--radius", type=float, default=None, help="one shape radius (fraction)")
    parser.add_argument("--margin", type=float, nargs=2, default=[1.6, 1.6], help="crop: range")
    parser.add_argument("--test-margin", type=float, default=2.4, help="crop: second test")
    parser.add_argument("--size", type=int, default=32, help="crop: side in pixels")
    parser.add_argument("--window", type=int, default=None, help="Swin window (preset: 7)")
    parser.add_argument("--depths", type=int, nargs=4, default=None, help="(preset: 1 1 2 1)")
    parser.add_argument("--cnn", action="store_true", help="a plain CNN instead of the Swin")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    one_size = {"min_radius": args.radius, "max_radius": args.radius} if args.radius else {}
    shapes = ShapesConfig(height=args.image_size, width=args.image_size, **one_size)
    model = Probe(args.setup, args.window, args.depths, args.cnn)
    if args.setup == "crop":
        train_x, train_y = thing_crops(ShapesDataset(1500, 0, shapes), args.margin, args.size, rng)
        held_out = ShapesDataset(200, 999, shapes)
        tests = {
            f"x{m:g}": [thing_crops(held_out, (m, m), args.size, rng)]
            for m in (1.6, args.test_margin)
        }
    else:
        train = TrainSamples(ShapesDataset(args.images, 0, shapes), None)
        held_out = TrainSamples(ShapesDataset(64, 999, shapes), None)
        tests = {
            "": [collate([held_out[(0, i)] for i in range(k, k + 16)]) for k in (0, 16, 32, 48)]
        }
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    start = time.time()
    for step in range(1, args.steps + 1):
        if args.setup == "crop":
            idx = torch.randint(len(train_y), (64,))
            batch = (train_x[idx].flip(3) if step % 2 else train_x[idx], train_y[idx])
        else:
            batch = collate([train[(0, int(i))] for i in rng.integers(args.images, size=8)])
        logits, labels = model(batch)
        loss = F.cross_entropy(logits, labels, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0:
            scores = " ".join(
                f"thing acc{(' ' + k) if k else ''} {thing_accuracy(model, b):.3f}"
                for k, b in tests.items()
            )
            print(
                f"step {step} {time.time() - start:.0f}s loss {loss.item():.3f} {scores}",
                flush=True,
            )


if __name__ == "__main__":
    main()
