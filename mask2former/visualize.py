"""Overlay pictures of segmentations: translucent colour per segment, outlines, label boxes.

Colours are a pure function of the class id (:func:`class_color`), so a class looks the same in
every image and every run; instances of one class get slightly jittered shades of it
(:func:`instance_color`) so that touching instances stay distinguishable. Labels are drawn in a
solid box of the segment's colour with black or white text (whichever contrasts more) and a dark
border, which stays readable on any photo.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["class_color", "instance_color", "palette", "draw_overlay"]

Color = Tuple[int, int, int]
_GOLDEN = 0.618033988749895


def class_color(label_id: int) -> Color:
    """The colour of class ``label_id``: vivid, deterministic, and far from its neighbours' hues.

    Hues step by the golden ratio, which keeps any run of consecutive ids well spread around the
    colour wheel; saturation and brightness alternate so ids whose hues come close again (every
    ~13 ids) still differ.
    """
    k = int(label_id)
    hue = (0.08 + k * _GOLDEN) % 1.0
    sat = (0.85, 0.65, 0.95)[k % 3]
    val = (0.95, 0.78)[(k // 3) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (round(r * 255), round(g * 255), round(b * 255))


def instance_color(label_id: int, instance: int = 0) -> Color:
    """A shade of :func:`class_color` for the ``instance``-th segment of a class (0: the class
    colour itself). The jitter is seeded by the instance index, so it is deterministic too."""
    base = class_color(label_id)
    if instance <= 0:
        return base
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in base))
    rng = np.random.default_rng([int(label_id), int(instance)])
    dh, ds, dv = rng.uniform(-1.0, 1.0, size=3)
    # Small hue shift keeps the class recognisable; brightness carries most of the difference.
    h = (h + 0.045 * dh) % 1.0
    s = min(1.0, max(0.35, s + 0.2 * ds))
    v = min(1.0, max(0.4, v + 0.3 * dv))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 array of :func:`class_color` for ids 0..num_classes-1 (e.g. for a
    'P'-mode PNG of a semantic map)."""
    return np.array([class_color(i) for i in range(num_classes)], dtype=np.uint8).reshape(-1, 3)


def _to_rgb(image: Union[Image.Image, np.ndarray]) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) or a PIL image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        # Float images in 0..1 are scaled; anything else is clipped to 0..255.
        scale = 255.0 if arr.dtype.kind == "f" and arr.size and arr.max() <= 1.0 else 1.0
        arr = np.clip(arr.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    return arr


def _boundaries(seg: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a place where the segment id changes (both sides)."""
    edge = np.zeros(seg.shape, dtype=bool)
    dy = seg[1:, :] != seg[:-1, :]
    dx = seg[:, 1:] != seg[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    for _ in range(width - 1):  # thicken by one pixel per step (cheap shifted ORs)
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def _anchor(
    small: np.ndarray, seg_id: int, stride: int, fallback: Tuple[int, int]
) -> Tuple[int, int]:
    """(x, y) deep inside a segment: the point farthest from its border (on a coarse grid, so
    this stays cheap on big photos); the centroid of a segment too thin to show there."""
    from scipy.ndimage import distance_transform_edt

    mask = np.pad(small == seg_id, 1)
    if not mask.any():
        return fallback
    dist = distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return (int((x - 1) * stride + stride // 2), int((y - 1) * stride + stride // 2))


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: small bitmap font
        return ImageFont.load_default()


def _overlaps(box: Sequence[float], placed: List[Sequence[float]]) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)


def _label_box(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: Any,
    anchor: Tuple[int, int],
    size: Tuple[int, int],
    placed: List[Sequence[float]],
) -> Tuple[float, float, float, float]:
    """A box for ``text`` centred near ``anchor``, inside the image, avoiding placed boxes."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, round((bottom - top) * 0.25))
    bw, bh = (right - left) + 2 * pad, (bottom - top) + 2 * pad
    width, height = size
    best = None
    # Try the anchor, then above/below it in growing steps: first free spot wins.
    for step in (0, -1, 1, -2, 2, -3, 3):
        x0 = min(max(anchor[0] - bw / 2, 0), max(width - bw, 0))
        y0 = min(max(anchor[1] - bh / 2 + step * (bh + 1), 0), max(height - bh, 0))
        box = (x0, y0, x0 + bw, y0 + bh)
        if best is None:
            best = box
        if not _overlaps(box, placed):
            return box
    return best  # crowded: overlap rather than drop the label


def draw_overlay(
    image: Union[Image.Image, np.ndarray],
    segmentation: Any,
    segments_info: Sequence[Mapping[str, Any]],
    id2label: Optional[Mapping[int, str]] = None,
    alpha: float = 0.5,
    outline: bool = True,
    show_labels: bool = True,
    show_scores: bool = True,
    font_size: Optional[int] = None,
) -> Image.Image:
    """Draw a segmentation over its image.

    Args:
        image: (H, W, 3) array or PIL image.
        segmentation: (H, W) segment ids (numpy or torch); ids not listed in ``segments_info``
            (e.g. 0 or -1 for "no segment") are left undrawn.
        segments_info: ``[{"id", "label_id", "score"?, "label"?}]``; the label text is ``label``,
            else ``id2label[label_id]``, else the id; ``score`` is appended when present.
        id2label: class names.
        alpha: opacity of the fill (outlines and labels are opaque).
        outline, show_labels, show_scores: what to draw.
        font_size: label text height in pixels; default scales with the image.

    Returns:
        An RGB PIL image of the image's size.
    """
    rgb = _to_rgb(image)
    seg = segmentation.cpu().numpy() if hasattr(segmentation, "cpu") else np.asarray(segmentation)
    if seg.shape != rgb.shape[:2]:
        raise ValueError(f"segmentation {seg.shape} and image {rgb.shape[:2]} differ in size")
    colors = _segment_colors(segments_info)
    result, drawn = _fill(rgb, seg, colors, alpha, outline)
    if show_labels and colors:
        style = _LabelStyle(id2label or {}, show_scores, font_size)
        _draw_labels(result, seg, drawn, segments_info, colors, style)
    return result


def _segment_colors(segments_info: Sequence[Mapping[str, Any]]) -> Dict[int, Color]:
    """Segment id -> colour: the class colour, jittered for the 2nd, 3rd, ... segment of a class."""
    seen: Dict[int, int] = {}
    colors: Dict[int, Color] = {}
    for info in segments_info:
        label = int(info["label_id"])
        colors[int(info["id"])] = instance_color(label, seen.get(label, 0))
        seen[label] = seen.get(label, 0) + 1
    return colors


def _fill(
    rgb: np.ndarray, seg: np.ndarray, colors: Dict[int, Color], alpha: float, outline: bool
) -> Tuple[Image.Image, np.ndarray]:
    """(H, W, 3) uint8 image with the segments of ``colors`` blended in (and outlined); returns
    it as a PIL image, and the (H, W) bool map of the pixels drawn."""
    height, width = seg.shape
    ids = np.array(sorted(colors), dtype=np.int64)
    table = np.array([colors[i] for i in ids], dtype=np.float32).reshape(-1, 3)
    # Map ids to rows of the colour table; ids not listed get row -1 (not drawn).
    if len(ids):
        pos = np.searchsorted(ids, seg).clip(0, len(ids) - 1)
        row = np.where(ids[pos] == seg, pos, -1)
    else:
        row = np.full(seg.shape, -1)
    drawn = row >= 0

    out = rgb.astype(np.float32)
    fill = table[row[drawn]]
    out[drawn] = out[drawn] * (1.0 - alpha) + fill * alpha
    if outline and len(ids):
        thickness = max(1, round(min(height, width) / 320))
        edge = _boundaries(np.where(drawn, seg, -1), thickness) & drawn
        out[edge] = table[row[edge]]
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8)), drawn


@dataclass(frozen=True)
class _LabelStyle:
    """What the label boxes say, and how big: :func:`draw_overlay`'s label options."""

    id2label: Mapping[int, str]
    show_scores: bool
    font_size: Optional[int]  # None: scales with the image

    def text(self, info: Mapping[str, Any]) -> str:
        name = info.get("label") or self.id2label.get(int(info["label_id"]), str(info["label_id"]))
        score = info.get("score")
        return f"{name} {score:.2f}" if self.show_scores and score is not None else str(name)


def _draw_labels(
    result: Image.Image,
    seg: np.ndarray,
    drawn: np.ndarray,
    segments_info: Sequence[Mapping[str, Any]],
    colors: Dict[int, Color],
    style: _LabelStyle,
) -> None:
    """Draw a label box (in place) on every drawn segment of at least 16 pixels."""
    height, width = seg.shape
    size = style.font_size or int(min(max(min(height, width) / 24, 10), 32))
    font = _font(size)
    draw = ImageDraw.Draw(result)
    stride = max(1, math.ceil(max(height, width) / 256))
    small = seg[stride // 2 :: stride, stride // 2 :: stride]
    areas = {i: int(c) for i, c in zip(*np.unique(seg[drawn], return_counts=True))}
    entries = [s for s in segments_info if areas.get(int(s["id"]), 0) >= 16]
    placed: List[Sequence[float]] = []
    # Small segments first: they have fewer good spots, big ones can make room.
    for info in sorted(entries, key=lambda s: areas[int(s["id"])]):
        seg_id = int(info["id"])
        text = style.text(info)
        ys, xs = np.nonzero(seg == seg_id) if not (small == seg_id).any() else (None, None)
        fallback = (int(xs.mean()), int(ys.mean())) if xs is not None else (0, 0)
        anchor = _anchor(small, seg_id, stride, fallback)
        box = _label_box(draw, text, font, anchor, (width, height), placed)
        placed.append(box)
        _draw_label(draw, box, text, font, colors[seg_id], radius=max(2, size // 4))


def _draw_label(
    draw: ImageDraw.ImageDraw,
    box: Tuple[float, float, float, float],
    text: str,
    font: Any,
    color: Color,
    radius: int,
) -> None:
    """One label: a rounded box of the segment's colour with dark border, text centred in it."""
    # Rec. 601 luma decides the text colour that contrasts with the box.
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luma > 150 else (255, 255, 255)
    draw.rounded_rectangle(box, radius=radius, fill=color, outline=(20, 20, 20), width=1)
    # Centre the text's ink box in the label box (no ``anchor=``: bitmap fonts lack it).
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (box[0] + box[2] - (right - left)) / 2 - left
    y = (box[1] + box[3] - (bottom - top)) / 2 - top
    draw.text((x, y), text, fill=text_color, font=font)
