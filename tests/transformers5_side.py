"""The transformers 5.x half of the 5.x parity test (tests/test_transformers5_parity.py).

Run by that test with the Python of a separate virtual environment that has transformers 5.x
(it cannot be installed beside the 4.37.2 oracle). Not a test file itself:

    python tests/transformers5_side.py WORKDIR

WORKDIR holds what the test wrote: ``config.json`` (a tiny Mask2Former config), ``ours/`` (our
saved model and processor), ``pixels.safetensors`` and ``image.png``. This script writes:

- ``theirs/``: a randomised 5.x model and its processor, saved by 5.x;
- ``results.safetensors``: 5.x's logits for ``theirs/`` and for ``ours/`` (as 5.x loads it),
  the pixel values 5.x's processors make of ``image.png`` (its own and ours, as loaded by 5.x),
  and 5.x's semantic map of its own model's output;
- ``info.json``: the version and 5.x's loading info for ``ours/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_models import center_mask_features, randomize  # noqa: E402  (pure torch)


def main(work: Path) -> None:
    import transformers
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
    )

    transformers.logging.set_verbosity_error()
    pixels = load_file(work / "pixels.safetensors")["pixel_values"]
    image = np.asarray(Image.open(work / "image.png").convert("RGB"))
    results = {}

    config = Mask2FormerConfig.from_dict(json.loads((work / "config.json").read_text()))
    torch.manual_seed(1)
    model = randomize(Mask2FormerForUniversalSegmentation(config), seed=1).eval()
    center_mask_features(model.model)
    model.save_pretrained(work / "theirs")
    processor = Mask2FormerImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    processor.save_pretrained(work / "theirs")

    with torch.no_grad():
        out = model(pixel_values=pixels)
    results["theirs.class_queries_logits"] = out.class_queries_logits
    results["theirs.masks_queries_logits"] = out.masks_queries_logits
    maps = processor.post_process_semantic_segmentation(out, target_sizes=[(70, 90)] * len(pixels))
    results["theirs.semantic"] = torch.stack(maps).to(torch.int64)
    results["theirs.processed"] = processor(images=image, return_tensors="pt")["pixel_values"]

    ours, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        work / "ours", output_loading_info=True
    )
    with torch.no_grad():
        out = ours.eval()(pixel_values=pixels)
    results["ours.class_queries_logits"] = out.class_queries_logits
    results["ours.masks_queries_logits"] = out.masks_queries_logits
    our_processor = Mask2FormerImageProcessor.from_pretrained(work / "ours")
    results["ours.processed"] = our_processor(images=image, return_tensors="pt")["pixel_values"]

    save_file({k: v.contiguous() for k, v in results.items()}, work / "results.safetensors")
    info = {k: [list(x) if isinstance(x, tuple) else x for x in v] for k, v in info.items()}
    summary = {"version": transformers.__version__, "loading_info": info}
    (work / "info.json").write_text(json.dumps(summary, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
