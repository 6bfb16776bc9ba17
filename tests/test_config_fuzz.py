"""Every field of config.json and preprocessor_config.json, set to each of a list of bad values.

Loading such a file must either work (and then the model must build and run one tiny forward
pass with labels, or the processor must preprocess an image) or raise a ValueError whose message
starts with the file's path and names the field, and each case must finish in seconds: a bad
value must be refused by validation, never reach the model as a TypeError, a hang or an absurd
allocation.

Run with ``-s`` to see how many (field, value) cases were tried.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import threading
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch

from mask2former import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
)
from mask2former.hub import BUILTIN_MODELS_DIR
from tests.test_image_processor import PUBLISHED_PROCESSOR_CONFIG

SHAPES = os.path.join(BUILTIN_MODELS_DIR, "shapes")
STAGES = ["stage1", "stage2", "stage3", "stage4"]
# A hang guard, not a speed check: a case still running after this long is a hang (such as
# building 10^12 decoder layers); every case takes well under a second when it is refused.
CASE_LIMIT_S = 60.0

# Wrong types, wrong signs, zero, small values that may break a relation between fields, and
# huge values (as a float and as an int; NaN and infinity are not JSON, so 1e308 stands in).
BAD_VALUES: List[Any] = [
    None,
    "abc",
    "",
    [],
    [1],
    {},
    {"a": 1},
    True,
    False,
    0,
    1,
    3,
    -1,
    20.5,
    1e12,
    10**12,
    1e308,
    -1e308,
]

# (fields, values) tried per source file; summed and checked by the last test.
COUNTS: Dict[str, int] = {}


def _tiny_swin_config() -> Dict[str, Any]:
    """``Mask2FormerConfig()`` (a Swin model, with every field of the default config) shrunk so
    that building and running it takes milliseconds."""
    config = Mask2FormerConfig().to_dict()
    config["backbone_config"].update(
        embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=2
    )
    config.update(
        feature_size=32,
        mask_feature_size=32,
        hidden_dim=32,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=4,
        num_queries=5,
        train_num_points=64,
        id2label={"0": "a", "1": "b", "2": "c"},
        label2id={"a": 0, "b": 1, "c": 2},
        # Extra keys of the published files.
        torch_dtype="float32",
        architectures=["Mask2FormerForUniversalSegmentation"],
    )
    Mask2FormerConfig.from_dict(config)  # valid as it stands
    return config


def _published_processor_config() -> Dict[str, Any]:
    """A preprocessor_config.json in the older published layout (deprecated key names)."""
    return dict(PUBLISHED_PROCESSOR_CONFIG)


def _read(path: str) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


MODEL_SOURCES = {
    "shapes": _read(os.path.join(SHAPES, "config.json")),  # ResNet backbone
    "swin": _tiny_swin_config(),
}
PROCESSOR_SOURCES = {
    "shapes": _read(os.path.join(SHAPES, "preprocessor_config.json")),
    "published": _published_processor_config(),
}


def _paths(data: Dict[str, Any], nested: Tuple[str, ...]) -> List[Tuple[str, ...]]:
    """Every top-level key, and every key of the nested objects named in ``nested``."""
    out = [(key,) for key in sorted(data)]
    for parent in nested:
        if isinstance(data.get(parent), dict):
            out += [(parent, key) for key in sorted(data[parent])]
    return out


def _cases(sources: Dict[str, Dict[str, Any]], nested: Tuple[str, ...]) -> List[Any]:
    return [
        pytest.param(name, path, id=f"{name}-{'.'.join(path)}")
        for name, data in sources.items()
        for path in _paths(data, nested)
    ]


def _with_value(data: Dict[str, Any], path: Tuple[str, ...], value: Any) -> Dict[str, Any]:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = copy.deepcopy(value)
    return out


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the case after ``seconds`` (a hang fails instead of stalling the suite)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals need the main thread; the elapsed-time check still applies
        return

    def expire(signum, frame):
        raise CaseTimeout(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_case(
    folder: str,
    file_name: str,
    data: Dict[str, Any],
    path: Tuple[str, ...],
    value: Any,
    load: Callable[[str], Any],
    use: Callable[[Any], None],
) -> str:
    """Write ``data`` to ``folder/file_name``, load it and use what loads; "accepted" or
    "refused". Fails on an error that is not a ValueError naming the file and the field, on a
    failure while using an accepted value, and on a case that hangs (CASE_LIMIT_S)."""
    file = os.path.join(folder, file_name)
    with open(file, "w", encoding="utf-8") as f:
        json.dump(data, f)
    case = f"{'.'.join(path)} = {value!r}"
    message = None
    try:
        with _deadline(CASE_LIMIT_S):
            try:
                loaded = load(folder)
            except ValueError as e:
                message = str(e)
            else:
                use(loaded)
    except CaseTimeout:
        pytest.fail(f"{case}: {file_name} case did not finish in {CASE_LIMIT_S} s")
    except Exception as e:  # a TypeError from loading, or anything from using what loaded
        stage = "loading" if message is None and "loaded" not in locals() else "using it"
        pytest.fail(f"{case}: {stage} raised {type(e).__name__}: {e}")
    if message is None:
        return "accepted"
    _check_message(message, file, path, case)
    return "refused"


def _check_message(message: str, file: str, path: Tuple[str, ...], case: str) -> None:
    assert message.startswith(file + ":"), (
        f"{case}: message does not start with the file: {message}"
    )
    assert path[-1] in message, f"{case}: message does not name {path[-1]!r}: {message}"
    if len(path) > 1 and path[0] == "backbone_config":
        assert "backbone_config." in message, f"{case}: message lacks backbone_config.: {message}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; with several, a busy machine (other test runs)
    makes each case 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_forward(config: Mask2FormerConfig) -> None:
    """Build the model and run one forward pass, with one labelled mask so that the loss
    fields are used too, on a 64x64 input."""
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config)
    channels = config.backbone_config.num_channels
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 8:40] = 1
    with torch.no_grad():
        out = model(
            torch.randn(1, channels, 64, 64),
            mask_labels=[mask],
            class_labels=[torch.tensor([0])],
            return_dict=True,  # a fuzzed config may say return_dict false, which is valid
        )
    assert out.class_queries_logits.shape == (1, config.num_queries, config.num_labels + 1)
    assert math.isfinite(float(out.loss)), f"loss {float(out.loss)}"


def _preprocess(processor: Mask2FormerImageProcessor) -> None:
    """Preprocess one small image, with a label map where the processor can encode one."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    seg = rng.integers(0, 4, (20, 30))
    with_labels = not processor.reduce_labels or processor.ignore_index is not None
    batch = processor(image, seg if with_labels else None, return_tensors="pt")
    assert batch.pixel_values.shape[:2] == (1, 3)
    assert torch.isfinite(batch.pixel_values).all()


def _fuzz(
    tmp_path,
    source: str,
    base: Dict[str, Any],
    path: Tuple[str, ...],
    file_name: str,
    load: Callable[[str], Any],
    use: Callable[[Any], None],
) -> None:
    outcomes = [
        _run_case(str(tmp_path), file_name, _with_value(base, path, value), path, value, load, use)
        for value in BAD_VALUES
    ]
    COUNTS[source] = COUNTS.get(source, 0) + len(outcomes)
    # The list must exercise the checks: most of its values are wrong for any field.
    assert outcomes.count("refused") >= 1 or path[-1] in _IGNORED_KEYS, (path, outcomes)


# Keys whose value nothing reads (dropped on load, or kept only to be written back).
_IGNORED_KEYS = {
    "num_hidden_layers",
    "out_indices",
    "image_processor_type",
    "feature_extractor_type",
    "architectures",
    "in_channels",  # an extra key of the default Swin backbone (as the reference writes it)
}


@pytest.mark.parametrize("source,path", _cases(MODEL_SOURCES, ("backbone_config",)))
def test_config_json_field(tmp_path, source, path):
    _fuzz(
        tmp_path,
        f"config.json ({source})",
        MODEL_SOURCES[source],
        path,
        "config.json",
        Mask2FormerConfig.from_pretrained,
        _tiny_forward,
    )


@pytest.mark.parametrize("source,path", _cases(PROCESSOR_SOURCES, ("size",)))
def test_preprocessor_config_json_field(tmp_path, source, path):
    _fuzz(
        tmp_path,
        f"preprocessor_config.json ({source})",
        PROCESSOR_SOURCES[source],
        path,
        "preprocessor_config.json",
        Mask2FormerImageProcessor.from_pretrained,
        _preprocess,
    )


def test_fuzz_count():
    """Runs after the cases above (file order); prints and checks how many were tried."""
    expected = sum(
        len(_paths(data, nested)) * len(BAD_VALUES)
        for sources, nested in (
            (MODEL_SOURCES, ("backbone_config",)),
            (PROCESSOR_SOURCES, ("size",)),
        )
        for data in sources.values()
    )
    total = sum(COUNTS.values())
    print(f"\nconfig fuzz: {total} of {expected} (field, value) cases tried: {COUNTS}")
    if total < expected:
        pytest.skip(f"only {total} of the {expected} fuzz cases ran in this session")
    assert total == expected and expected > 1500
