"""``shapes``: a synthetic panoptic dataset that needs no download.

Each image has textured "stuff" backgrounds (sky, grass, water) split by wavy boundaries and
several "thing" instances (circle, square, triangle, star, hexagon) with random colours, sizes,
rotations and occlusions. Sample ``i`` of seed ``s`` is drawn from its own generator seeded with
``(s, i)``, so it is the same however many samples are generated and in whichever order.

Labels are contiguous indices into :data:`SHAPES_CATEGORIES` (``category_id - 1``): things are
0-4 and stuff 5-7, so the label space is the same in the panoptic, instance and semantic views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..coco import mask_bbox
from .sample import Sample, segments_to_sample

__all__ = ["SHAPES_CATEGORIES", "ShapesConfig", "ShapesDataset", "render_shapes"]

SHAPES_CATEGORIES: List[Dict[str, Any]] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 0, 230]},
    {"id": 3, "name": "triangle", "isthing": 1, "color": [255, 180, 0]},
    {"id": 4, "name": "star", "isthing": 1, "color": [160, 0, 200]},
    {"id": 5, "name": "hexagon", "isthing": 1, "color": [0, 200, 200]},
    {"id": 6, "name": "sky", "isthing": 0, "color": [135, 206, 235]},
    {"id": 7, "name": "grass", "isthing": 0, "color": [60, 160, 60]},
    {"id": 8, "name": "water", "isthing": 0, "color": [30, 80, 160]},
]
_THINGS = [c["name"] for c in SHAPES_CATEGORIES if c["isthing"]]
_STUFF = [c["name"] for c in SHAPES_CATEGORIES if not c["isthing"]]
_CAT_ID = {c["name"]: c["id"] for c in SHAPES_CATEGORIES}


@dataclass(frozen=True)
class ShapesConfig:
    """Generation parameters.

    Sizes are radii as fractions of the shorter image side. ``max_occlusion`` is the largest
    fraction of an already placed instance's visible area that a new shape may cover; together
    with ``min_visible_area`` (pixels) it keeps every instance recognisable.
    """

    height: int = 256
    width: int = 256
    min_objects: int = 3
    max_objects: int = 9
    min_radius: float = 0.06
    max_radius: float = 0.2
    max_occlusion: float = 0.5
    min_visible_area: int = 64
    noise_std: float = 5.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(H, W) float32 noise, roughly unit variance, correlated over ``cell`` pixels."""
    small = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    img = Image.fromarray(small).resize((w + 2 * cell, h + 2 * cell), Image.BILINEAR)
    return np.asarray(img)[cell : cell + h, cell : cell + w]


def _texture(name: str, rng: np.random.Generator, h: int, w: int, where: np.ndarray) -> np.ndarray:
    """(n, 3) float32 colours of one stuff class's texture at the flat pixel indices ``where``.

    The texture's random fields are drawn for the whole (H, W) image (so the draws, and thus
    every other pixel of the image, do not depend on the band's shape); only the 3-channel
    colour arithmetic is done for the band's own pixels. Base colours are jittered per image.
    """
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    jitter = rng.uniform(-20, 20, size=3).astype(np.float32)
    if name == "sky":
        # Vertical gradient with soft white clouds.
        top = np.array([70, 130, 215], np.float32) + jitter
        bottom = np.array([170, 210, 245], np.float32) + jitter
        base = top + (bottom - top) * yy[where // w]
        clouds = np.clip(_smooth_noise(rng, h, w, 32) - 0.3, 0, None).reshape(-1)[where]
        return base + clouds[:, None] * np.float32(70.0)
    if name == "grass":
        # Fine high-frequency noise with vertical blade streaks.
        base = np.array([60, 150, 50], np.float32) + jitter
        blades = _smooth_noise(rng, h, w, 2) * 18 + np.sin(xx * rng.uniform(60, 120) * np.pi) * 8
        patch = _smooth_noise(rng, h, w, 24) * 12
        field = (blades + patch).reshape(-1)[where]
        return base + field[:, None] * np.array([0.6, 1.0, 0.4], np.float32)
    # water: horizontal ripples.
    base = np.array([30, 90, 170], np.float32) + jitter
    freq = rng.uniform(25, 45)
    phase = _smooth_noise(rng, h, w, 16) * 1.5
    ripples = (np.sin(yy * freq * np.pi + phase + xx * 3.0) * 20).reshape(-1)[where]
    return base + ripples[:, None] * np.array([0.5, 0.8, 1.0], np.float32)


def _stuff_layout(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, List[str]]:
    """Split the image into 1-3 bands along wavy, roughly horizontal boundaries.

    Returns:
        (H, W) int64 band index per pixel, and the stuff class name of each band.
    """
    n = int(rng.choice([1, 2, 3], p=[0.1, 0.45, 0.45]))
    names = [_STUFF[i] for i in rng.permutation(len(_STUFF))[:n]]
    xx = np.arange(w, dtype=np.float32) / w
    yy = np.arange(h, dtype=np.float32)[:, None]
    bases = np.sort(rng.uniform(0.2, 0.8, size=n - 1)) * h
    bands = np.zeros((h, w), dtype=np.int64)
    for base in bases:
        curve = np.full(w, base, dtype=np.float32)
        for _ in range(3):  # a few harmonics make the boundary wavy but smooth
            amp = rng.uniform(0.0, 0.06) * h
            curve += amp * np.sin(2 * np.pi * (rng.uniform(0.5, 3.0) * xx + rng.uniform()))
        bands += yy >= curve[None, :]
    if rng.uniform() < 0.25:  # sometimes the bands run vertically
        bands = np.ascontiguousarray(
            np.asarray(Image.fromarray(bands.astype(np.uint8).T).resize((w, h), Image.NEAREST))
        ).astype(np.int64)
    return bands, names


def _shape_polygon(name: str, cx: float, cy: float, r: float, angle: float) -> List[float]:
    """Outline of a thing as a flat ``[x0, y0, x1, y1, ...]`` list."""
    if name == "circle":
        k, radii = 48, np.array([r])
    elif name == "square":
        k, radii = 4, np.array([r])
    elif name == "triangle":
        k, radii = 3, np.array([r * 1.15])
    elif name == "star":
        k, radii = 10, np.array([r * 1.2, r * 0.5])
    else:  # hexagon
        k, radii = 6, np.array([r])
    t = angle + 2 * np.pi * np.arange(k) / k
    rr = np.resize(radii, k)
    return np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], axis=1).ravel().tolist()


def _draw(poly: List[float], h: int, w: int) -> np.ndarray:
    img = Image.new("1", (w, h), 0)
    ImageDraw.Draw(img).polygon(poly, fill=1)
    return np.asarray(img, dtype=bool)


def _place_things(
    rng: np.random.Generator, cfg: ShapesConfig, image: np.ndarray, ids: np.ndarray, next_id: int
) -> List[Tuple[int, str]]:
    """Paint things over ``image`` (in place) and write their ids into ``ids`` (in place).

    A placement is retried when it would hide too much of an earlier instance, so occlusions
    happen often but every instance keeps at least ``1 - max_occlusion`` of its visible area.
    """
    h, w = ids.shape
    side = min(h, w)
    pixels = image.reshape(-1, 3)  # views: flat pixel index -> RGB
    placed: List[Tuple[int, str]] = []
    visible: Dict[int, int] = {}
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        name = _THINGS[int(rng.integers(len(_THINGS)))]
        for _attempt in range(10):
            r = rng.uniform(cfg.min_radius, cfg.max_radius) * side
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            mask = _draw(_shape_polygon(name, cx, cy, r, rng.uniform(0, 2 * np.pi)), h, w)
            area = int(mask.sum())
            if area < cfg.min_visible_area:
                continue
            hidden = np.bincount(ids[mask], minlength=next_id)
            ok = all(
                hidden[i] <= cfg.max_occlusion * v and v - hidden[i] >= cfg.min_visible_area
                for i, v in visible.items()
            )
            if ok:
                break
        else:
            continue  # no acceptable placement for this object: skip it
        for i in visible:
            visible[i] -= int(hidden[i])
        visible[next_id] = area
        # Random colour far enough from the background under it, with a soft linear shading so
        # the fill is not perfectly flat.
        where = np.flatnonzero(mask)
        ys, xs = np.divmod(where, w)
        under = pixels[where].mean(axis=0)
        for _c in range(10):
            colour = rng.uniform(0, 255, size=3)
            if np.abs(colour - under).sum() > 120:
                break
        direction = rng.uniform(-1, 1, size=2) / side
        shade = 1.0 + (xs - cx) * direction[0] + (ys - cy) * direction[1]
        pixels[where] = colour[None, :] * shade[:, None]
        ids.reshape(-1)[where] = next_id
        placed.append((next_id, name))
        next_id += 1
    return placed


def render_shapes(seed: int, index: int, config: ShapesConfig = ShapesConfig()) -> Dict[str, Any]:
    """Render sample ``index`` of the dataset with seed ``seed``.

    Returns:
        ``{"image": (H, W, 3) uint8, "panoptic": (H, W) int64 segment ids (0 = void, unused
        here), "segments_info": [{"id", "category_id", "isthing", "area", "bbox", "iscrowd"}]}``
        with segment ids 1..n, stuff first.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    h, w = config.height, config.width
    bands, names = _stuff_layout(rng, h, w)
    image = np.zeros((h, w, 3), dtype=np.float32)
    pixels = image.reshape(-1, 3)  # a view: flat pixel index -> RGB
    for k, name in enumerate(names):
        where = np.flatnonzero(bands == k)
        pixels[where] = _texture(name, rng, h, w, where)
    ids = bands + 1  # stuff segment ids 1..n_bands
    things = _place_things(rng, config, image, ids, next_id=len(names) + 1)
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(config.noise_std)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)

    # Renumber to consecutive ids, dropping stuff bands hidden entirely under things.
    labels = [(k + 1, names[k]) for k in range(len(names))] + things
    areas = np.bincount(ids.ravel(), minlength=max(i for i, _ in labels) + 1)
    remap = np.zeros(areas.size, dtype=np.int64)
    segments: List[Dict[str, Any]] = []
    for old, name in labels:
        if areas[old] == 0:
            continue
        new = len(segments) + 1
        remap[old] = new
        cat = _CAT_ID[name]
        segments.append({"id": new, "category_id": cat, "isthing": int(cat <= len(_THINGS))})
    panoptic = remap[ids]
    for seg in segments:
        mask = panoptic == seg["id"]
        seg.update(area=int(mask.sum()), bbox=mask_bbox(mask), iscrowd=0)
    return {"image": image, "panoptic": panoptic, "segments_info": segments}


class ShapesDataset:
    """``num_samples`` shapes images of one seed, in the format of the dataset readers.

    ``dataset[i]`` gives ``{"image", "masks", "labels", "isthing", "iscrowd", "segment_ids",
    "file_name", "panoptic", "segments_info"}`` (see :func:`segments_to_sample`). Samples are
    rendered on access, never cached: rendering costs a few milliseconds.
    """

    categories: List[Dict[str, Any]] = SHAPES_CATEGORIES

    def __init__(self, num_samples: int, seed: int = 0, config: ShapesConfig = ShapesConfig()):
        if num_samples < 0:
            raise ValueError("num_samples must be >= 0")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.config = config

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        index %= self.num_samples
        raw = render_shapes(self.seed, index, self.config)
        arrays = segments_to_sample(raw["panoptic"], raw["segments_info"], self.categories)
        return Sample(**arrays, **raw, file_name=self.file_name(index))

    def file_name(self, index: int) -> str:
        """Sample ``index``'s ``file_name``, without rendering it."""
        return f"{index % self.num_samples:06d}.png"

    @property
    def label_names(self) -> List[str]:
        """Class names indexed by label (``category_id - 1``)."""
        return [c["name"] for c in self.categories]
