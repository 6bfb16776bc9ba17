"""Speed and memory of our Mask2Former against transformers 4.37.2 on the same weights.

Builds a Swin-T Mask2Former (133 classes, 100 queries) with random weights in the reference,
saves it with the reference's ``save_pretrained`` and loads it with our ``from_pretrained``.
Every timed case runs ours and the reference alternately in this one process (other jobs share
the machine, so only ratios measured side by side mean anything) and prints medians after warm-up
calls, with the ratio reference time / our time (higher is better for us).

Peak memory: each (implementation, case) runs in a fresh subprocess that loads the model, resets
the kernel's resident-set high-water mark (``/proc/self/clear_refs``), runs the case once and
reads ``VmHWM``. We print the peak minus the resident size just before the call, i.e. the memory
the call itself needed on top of the loaded model (all allocations: PyTorch tensors, oneDNN/MKL
scratch, allocator slack), and the absolute peak of the process.

The newest transformers (5.x) conflicts with 4.37.2, so it lives in its own virtual environment
with our package installed beside it: ``--tf5-python PATH`` (default: $MASK2FORMER_TF5_PYTHON)
runs this script again under that interpreter on the same saved weights, and its lines are
printed after ours-vs-4.37.2 (each ratio is still measured side by side inside one process).

``--batch 8`` adds folder throughput: 8 photos per call, images per second, the reference's
processor + model + panoptic post-processing against our pipeline at batch size 8.

Usage: python benchmarks/bench_model.py [--repeats 5] [--warmup 3] [--threads 2]
       [--sizes 800x1088,384x384] [--skip-train] [--skip-bf16] [--skip-e2e] [--skip-memory]
       [--batch 8] [--memory-reuse]
       [--tf5-python PATH]

Both libraries run with glibc's allocation defaults, as a Python user gets them.
``--memory-reuse`` makes the process keep large freed blocks for reuse, as the ``mask2former``
command does (:func:`mask2former.enable_memory_reuse`); the setting is the whole process's, so
the reference gets it too, and gains more from it than we do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    alternate,
    build_reference,
    format_ratio,
    load_ours,
    make_training_batch,
)

PHOTO_SIZE = (427, 640)


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]


def forward_fn(model, pixels: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return model(pixels)

    return run


def train_fn(model, batch) -> Callable[[], object]:
    pixels, masks, classes = batch

    def run():
        model.zero_grad(set_to_none=True)
        out = model(pixels, mask_labels=masks, class_labels=classes)
        out.loss.backward()
        return out.loss

    return run


def photo() -> object:
    """A 427x640 RGB photo (scikit-image's astronaut, resized) as a uint8 array."""
    import numpy as np
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize(PHOTO_SIZE[::-1], Image.BILINEAR)
    return np.asarray(img)


def end_to_end_fn(model, processor, image) -> Callable[[], object]:
    """The reference's way: processor, model, panoptic post-processing at the photo's size."""

    def run():
        with torch.inference_mode():
            inputs = processor(images=image, return_tensors="pt")
            out = model(inputs["pixel_values"])
            return processor.post_process_panoptic_segmentation(out, target_sizes=[PHOTO_SIZE])

    return run


def pipeline_fn(model, image, count: int = 1) -> Callable[[], object]:
    """Ours: the inference pipeline every front end uses (the same settings as the reference's
    defaults: threshold 0.5, no fused classes), results at the photo's size; ``count`` copies
    of the image in one call, batched by ``count``."""
    from mask2former import Mask2FormerImageProcessor
    from mask2former.inference import Pipeline, TaskOptions, TorchRunner

    pipeline = Pipeline(TorchRunner(model), Mask2FormerImageProcessor())
    options = TaskOptions("panoptic", threshold=0.5)

    def run():
        return pipeline.predict([image] * count, options, batch_size=count)

    return run


def batch_end_to_end_fn(model, processor, image, count: int) -> Callable[[], object]:
    """The reference on ``count`` photos at once: one processor call, one forward pass."""

    def run():
        with torch.inference_mode():
            inputs = processor(images=[image] * count, return_tensors="pt")
            out = model(inputs["pixel_values"])
            return processor.post_process_panoptic_segmentation(
                out, target_sizes=[PHOTO_SIZE] * count
            )

    return run


def bf16_deviation(folder: str, pixels: torch.Tensor) -> Dict[str, float]:
    """How much our bfloat16 forward moves the outputs of our float32 forward."""
    with torch.inference_mode():
        f32 = load_ours(folder)(pixels)
        b16 = load_ours(folder, torch.bfloat16)(pixels.bfloat16())
    m32, m16 = f32.masks_queries_logits, b16.masks_queries_logits.float()
    c32, c16 = f32.class_queries_logits, b16.class_queries_logits.float()
    return {
        "mask_logits_max_abs": (m32 - m16).abs().max().item(),
        "mask_logits_mean_abs": (m32 - m16).abs().mean().item(),
        "mask_logits_std_f32": m32.std().item(),
        "mask_sign_flips_pct": 100 * ((m32 > 0) != (m16 > 0)).float().mean().item(),
        "class_logits_max_abs": (c32 - c16).abs().max().item(),
        "class_logits_mean_abs": (c32 - c16).abs().mean().item(),
        "class_argmax_agree_pct": 100 * (c32.argmax(-1) == c16.argmax(-1)).float().mean().item(),
    }


# ---------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(spec: dict) -> dict:
    """Run one case once in this (fresh) process; return its peak resident memory."""
    import gc

    torch.set_num_threads(spec["threads"])
    folder, impl, case = spec["folder"], spec["impl"], spec["case"]
    dtype = torch.bfloat16 if impl == "ours-bf16" else torch.float32
    if impl == "ref":
        from transformers import Mask2FormerForUniversalSegmentation as RefModel

        model = RefModel.from_pretrained(folder).eval()
    else:
        model = load_ours(folder, dtype)
    if case == "train":
        model.train()
        fn = train_fn(model, make_training_batch(2, 384))
    else:
        h, w = (int(v) for v in case.split("x"))
        fn = forward_fn(
            model, torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)
        )
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    return {"call_mb": (peak - before) / 1024, "process_mb": peak / 1024}


def measure_memory(folder: str, impl: str, case: str, threads: int) -> dict:
    spec = json.dumps({"folder": folder, "impl": impl, "case": case, "threads": threads})
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", spec],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case")
    parser.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed rounds per case first (both libraries take 3-4 calls to settle: "
        "allocator growth, oneDNN primitive caches)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--sizes", default="800x1088,384x384", help="forward sizes, HxW,...")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--folder", help="reuse/write the reference checkpoint here")
    parser.add_argument("--batch", type=int, default=0, help="also folder throughput at this batch")
    parser.add_argument(
        "--tf5-python",
        default=os.environ.get("MASK2FORMER_TF5_PYTHON"),
        help="python of a venv with transformers 5.x and this package (default: "
        "$MASK2FORMER_TF5_PYTHON); its run follows ours on the same weights",
    )
    parser.add_argument(
        "--memory-reuse",
        action="store_true",
        help="keep freed blocks for reuse, as the mask2former command does; it applies to the "
        "whole process, so both libraries (and the reference gains more: 800x1088 8.1 -> 6.7 s)",
    )
    parser.add_argument("--reuse-folder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return

    import transformers

    from mask2former import enable_memory_reuse

    reuse = enable_memory_reuse() if args.memory_reuse else False
    torch.set_num_threads(args.threads)
    folder = args.folder or tempfile.mkdtemp(prefix="m2f_bench_")
    ref = load_reference(folder) if args.reuse_folder else build_reference(folder).eval()
    ours = load_ours(folder)
    ours_bf16 = None if args.skip_bf16 else load_ours(folder, torch.bfloat16)
    print(f"reference: transformers {transformers.__version__}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"repeats {args.repeats} after {args.warmup} warm-up rounds, "
        f"memory reuse {'on' if reuse else 'off'} (the whole process, both libraries)"
    )
    print("ratio = reference time / our time (higher is better for us)\n")

    sizes = parse_sizes(args.sizes)
    gen = torch.Generator().manual_seed(0)
    for h, w in sizes:
        pixels = torch.randn(1, 3, h, w, generator=gen)
        cases = {"ref": forward_fn(ref, pixels), "ours": forward_fn(ours, pixels)}
        if ours_bf16 is not None:
            cases["ours-bf16"] = forward_fn(ours_bf16, pixels.bfloat16())
        times = alternate(cases, args.repeats, args.warmup)
        print(format_ratio(f"forward {h}x{w} float32", times["ref"], times["ours"]))
        if ours_bf16 is not None:
            print(
                format_ratio(
                    f"forward {h}x{w} ours bf16 vs ref f32", times["ref"], times["ours-bf16"]
                )
            )

    if not args.skip_e2e:
        run_end_to_end(ref, ours, ours_bf16, args.repeats, args.warmup)
    if args.batch:
        run_throughput(ref, ours, args.batch, args.repeats, args.warmup)

    if not args.skip_train:
        ref.train()
        ours.train()
        batch = make_training_batch(2, 384)
        times = alternate(
            {"ref": train_fn(ref, batch), "ours": train_fn(ours, batch)}, args.repeats, args.warmup
        )
        print(format_ratio("train step 2x384x384", times["ref"], times["ours"]))
        ref.eval()
        ours.eval()

    if ours_bf16 is not None:
        h, w = sizes[0]
        dev = bf16_deviation(folder, torch.randn(1, 3, h, w, generator=gen))
        print(f"\nbfloat16 vs float32 (ours, {h}x{w}, random weights):")
        for key, value in dev.items():
            print(f"  {key:<26} {value:.4g}")

    if not args.skip_memory:
        print("\npeak memory (fresh process, one call): call = peak RSS - RSS before the call")
        cases = [f"{h}x{w}" for h, w in sizes] + ([] if args.skip_train else ["train"])
        impls = ["ref", "ours"] + ([] if args.skip_bf16 else ["ours-bf16"])
        for case in cases:
            row = []
            for impl in impls:
                if impl == "ours-bf16" and case == "train":
                    continue
                m = measure_memory(folder, impl, case, args.threads)
                row.append(f"{impl} {m['call_mb']:7.0f} MB (process {m['process_mb']:6.0f})")
            print(f"  {case:<10} " + "   ".join(row))

    if args.tf5_python and not args.reuse_folder:
        run_transformers5(args, folder)


def load_reference(folder: str):
    from transformers import Mask2FormerForUniversalSegmentation as RefModel

    return RefModel.from_pretrained(folder).eval()


def run_transformers5(args: argparse.Namespace, folder: str) -> None:
    """This script again under the transformers 5.x interpreter, on the same weights."""
    command = [args.tf5_python, os.path.abspath(__file__), "--folder", folder, "--reuse-folder"]
    command += ["--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)]
    command += ["--sizes", args.sizes, "--skip-memory", "--batch", str(args.batch)]
    for flag in ("skip_train", "skip_bf16", "skip_e2e", "memory_reuse"):
        if getattr(args, flag):
            command.append("--" + flag.replace("_", "-"))
    print("\n--- the same cases against transformers 5.x (its own environment) ---\n", flush=True)
    subprocess.run(command, check=True)


def run_throughput(ref, ours, count: int, repeats: int, warmup: int) -> None:
    """Images per second on ``count`` photos per call (a folder's worth of work)."""
    from transformers import Mask2FormerImageProcessor as RefProcessor
    from transformers.utils import logging

    logging.set_verbosity_error()
    image = photo()
    cases = {
        "ref": batch_end_to_end_fn(ref, RefProcessor(), image, count),
        "ours": pipeline_fn(ours, image, count),
    }
    times = alternate(cases, repeats, warmup)
    print(format_ratio(f"end to end, batch of {count} photos", times["ref"], times["ours"]))
    r, o = (sorted(times[k])[len(times[k]) // 2] for k in ("ref", "ours"))
    print(f"{'':<34} images/s: ref {count / r:.2f}, ours {count / o:.2f}")


def run_end_to_end(ref, ours, ours_bf16, repeats: int, warmup: int) -> None:
    from transformers import Mask2FormerImageProcessor as RefProcessor
    from transformers.utils import logging

    logging.set_verbosity_error()  # the reference warns on every call without fused classes
    image = photo()
    cases = {"ref": end_to_end_fn(ref, RefProcessor(), image), "ours": pipeline_fn(ours, image)}
    if ours_bf16 is not None:
        cases["ours-bf16"] = pipeline_fn(ours_bf16, image)
    times = alternate(cases, repeats, warmup)
    print(format_ratio("end to end 427x640 panoptic", times["ref"], times["ours"]))
    if ours_bf16 is not None:
        print(format_ratio("end to end, ours bf16 vs ref f32", times["ref"], times["ours-bf16"]))


if __name__ == "__main__":
    main()
