"""Regenerate ``examples/shapes.png``, the image of the README's first command.

    python examples/make_example.py

It is sample 0 of the synthetic shapes dataset with seed 2024, rendered at 384x384; rendering is
deterministic, so the picture is reproducible bit for bit.
"""

from __future__ import annotations

import os

from mask2former.data.shapes import ShapesConfig, render_shapes
from mask2former.files import save_image

SEED, INDEX, SIZE = 2024, 0, 384


def main() -> str:
    sample = render_shapes(SEED, INDEX, ShapesConfig(height=SIZE, width=SIZE))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes.png")
    save_image(path, sample["image"], optimize=True)
    return path


if __name__ == "__main__":
    print(main())
