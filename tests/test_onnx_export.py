"""ONNX export and the onnxruntime backend (issue 23): graphs of standard operators with dynamic
batch, height and width, equal to PyTorch at sizes other than the export size; the same
segments through every front end; ``torch.export`` with dynamic sizes."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.cli import main
from mask2former.export import InputBounds, export_onnx, export_program
from mask2former.export.onnx_export import ExportError, check_standard_operators
from mask2former.export.program import QueryLogitsModule
from mask2former.inference.onnx_runner import load_onnx_runner
from mask2former.predictor import Predictor

from .reference_models import make_reference

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "shapes.png")
# Sizes other than the export's example (2 x 250 x 292): a batch of 2, sides not multiples of
# 32 (nor of the Swin window), and a larger image.
SIZES = [(2, 3, 226, 298), (1, 3, 317, 450), (1, 3, 384, 640)]


def _relative_errors(model, runner, shape):
    pixels = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.inference_mode():
        expected = QueryLogitsModule(model.eval())(pixels)
    got = runner(pixels)
    errors = []
    for ref, out in zip(expected, (got.class_queries_logits, got.masks_queries_logits)):
        assert out.shape == ref.shape
        errors.append(float((out - ref).abs().max() / (ref.max() - ref.min())))
    return errors


@pytest.fixture(scope="module")
def builtin_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "shapes"
    report = export_onnx("shapes", out, log=lambda _: None)
    return out, report


@pytest.fixture(scope="module")
def swin_export(tmp_path_factory):
    """A small Swin-backbone model saved by transformers 4.37.2, exported."""
    _, folder = make_reference(tmp_path_factory.mktemp("swin"))
    out = tmp_path_factory.mktemp("onnx") / "swin"
    export_onnx(folder, out, bounds=InputBounds(max_batch=4, max_side=1024), log=lambda _: None)
    return folder, out


def _standard_and_valid(folder):
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    onnx.checker.check_model(proto)
    check_standard_operators(proto)
    names = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
    assert names == (["pixel_values"], ["class_queries_logits", "masks_queries_logits"])
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1] == 3
    assert all(d.dim_param for i, d in enumerate(dims) if i != 1)  # B, H, W are dynamic


def test_builtin_model_exports_and_matches_pytorch(builtin_export):
    folder, report = builtin_export
    assert sorted(os.listdir(folder)) == [
        "config.json",
        "model.onnx",
        "onnx_export.json",
        "preprocessor_config.json",
    ]
    _standard_and_valid(folder)
    assert report.checks and all(max(c.class_error, c.mask_error) < 1e-3 for c in report.checks)
    model = Mask2FormerForUniversalSegmentation.from_pretrained("shapes")
    runner = load_onnx_runner(folder)
    assert runner.info.id2label == {int(k): v for k, v in model.config.id2label.items()}
    for shape in SIZES:
        assert max(_relative_errors(model, runner, shape)) < 1e-3, shape


def test_swin_model_saved_by_transformers_exports_and_matches_pytorch(swin_export):
    source, folder = swin_export
    _standard_and_valid(folder)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(source)
    runner = load_onnx_runner(folder)
    for shape in SIZES + [(1, 3, 224, 224)]:  # 224: one Swin window in the last stage
        assert max(_relative_errors(model, runner, shape)) < 1e-3, shape
    info = json.loads((folder / "onnx_export.json").read_text())
    assert info["input_bounds"] == {"max_batch": 4, "min_side": 64, "max_side": 1024}
    with pytest.raises(ValueError, match="batch of 5 images: the ONNX graph takes 1..4"):
        runner(torch.zeros(5, 3, 128, 128))
    with pytest.raises(ValueError, match="input width 2000"):
        runner(torch.zeros(1, 3, 128, 2000))


def test_segment_gives_the_same_segments_on_both_backends(builtin_export, tmp_path):
    folder, _ = builtin_export
    assert main(["segment", EXAMPLE, "--out", str(tmp_path / "t"), "--no-progress"]) == 0
    args = ["segment", EXAMPLE, "--out", str(tmp_path / "o"), "--model", str(folder)]
    assert main(args + ["--backend", "onnxruntime", "--no-progress"]) == 0
    torch_segments = json.loads((tmp_path / "t" / "shapes.json").read_text())["segments"]
    onnx_segments = json.loads((tmp_path / "o" / "shapes.json").read_text())["segments"]
    assert [s["label"] for s in onnx_segments] == [s["label"] for s in torch_segments]
    for a, b in zip(torch_segments, onnx_segments):
        assert abs(a["area"] - b["area"]) <= 0.01 * a["area"]
    assert len(torch_segments) >= 5


def test_predictor_and_evaluate_take_the_backend(builtin_export):
    from mask2former.evaluation.evaluate import evaluate

    folder, _ = builtin_export
    predictor = Predictor.from_pretrained(folder, backend="onnxruntime")
    assert predictor.model is None and predictor.id2label
    result = predictor.predict([EXAMPLE])[0]
    reference = Predictor.from_pretrained("shapes").predict([EXAMPLE])[0]
    assert np.mean(result.segmentation == reference.segmentation) > 0.999
    scores = {}
    for backend, model in (("onnxruntime", folder), ("torch", "shapes")):
        report = evaluate(model=str(model), max_images=4, backend=backend, progress=False)
        scores[backend] = report.results
    assert set(scores["torch"]) == {"panoptic", "instance", "semantic"}
    for task, metrics in scores["torch"].items():
        for name, value in metrics.items():
            if isinstance(value, float):  # PQ, AP, mIoU, ...: the same numbers
                got = scores["onnxruntime"][task][name]
                assert got == pytest.approx(value, abs=1e-6, nan_ok=True), (task, name)


def test_torch_export_with_dynamic_height_and_width():
    model = Mask2FormerForUniversalSegmentation.from_pretrained("shapes")
    program = export_program(model, InputBounds(max_batch=4, max_side=1024))
    exported = program.module()
    for shape in [(1, 3, 200, 333), (3, 3, 256, 256)]:
        pixels = torch.randn(*shape)
        with torch.no_grad():
            expected = QueryLogitsModule(model)(pixels)
            got = exported(pixels)
        for a, b in zip(expected, got):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_export_refuses_what_it_cannot_do(builtin_export, tmp_path, capsys):
    folder, _ = builtin_export
    before = (folder / "model.onnx").stat().st_mtime_ns
    assert main(["export", "--out", str(folder)]) == 1
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert (folder / "model.onnx").stat().st_mtime_ns == before
    assert main(["export", "--out", str(tmp_path / "x"), "--opset", "12"]) == 1
    assert "opset 12: this exporter writes opsets 18.." in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "y"), "--min-side", "16"]) == 1
    assert "64 <= min_side" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(FileNotFoundError, match="no model.onnx"):
        load_onnx_runner(tmp_path)
    code = main(["segment", EXAMPLE, "--out", str(tmp_path / "s"), "--backend", "onnxruntime"])
    assert code == 1 and "no model.onnx" in capsys.readouterr().err


def test_custom_domain_operators_are_refused():
    node = helper.make_node("MultiScaleDeformableAttn", ["x"], ["y"], domain="mmdeploy")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ExportError, match="mmdeploy::MultiScaleDeformableAttn"):
        check_standard_operators(helper.make_model(graph))


def test_missing_extra_is_one_line(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ImportError, match=r"pip install 'mask2former\[onnx\]'"):
        export_onnx("shapes", tmp_path / "z")
    assert not (tmp_path / "z").exists()


def test_a_graph_that_differs_from_pytorch_writes_nothing(builtin_export, tmp_path, monkeypatch):
    import mask2former.export.onnx_export as onnx_export

    folder, _ = builtin_export
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    monkeypatch.setattr(onnx_export, "_to_onnx", lambda *args: proto)
    bad = onnx_export.SizeCheck((1, 3, 64, 64), 0.0, 0.5)
    monkeypatch.setattr(onnx_export, "_compare", lambda *args: [bad])
    with pytest.raises(ExportError, match="differs from PyTorch by 5.0e-01"):
        export_onnx("shapes", tmp_path / "out", log=lambda _: None)
    assert os.listdir(tmp_path) == []  # not even a temporary folder is left


def test_float16_graph_runs_in_onnxruntime_and_reports_its_cost(tmp_path):
    out = tmp_path / "fp16"
    report = export_onnx("shapes", out, dtype="float16", log=lambda _: None)
    assert report.dtype == "float16" and "float16" in report.lines()[0]
    worst = max(max(c.class_error, c.mask_error) for c in report.checks)
    assert 1e-5 < worst < 5e-2  # half precision shows, within the export's float16 limit
    info = json.loads((out / "onnx_export.json").read_text())
    assert info["dtype"] == "float16"
    _standard_and_valid(out)
    proto = onnx.load(os.path.join(out, "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in
    half = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(half) > 10  # the weights are half precision
    reference = Predictor.from_pretrained("shapes").predict([EXAMPLE])[0].segments
    segments = Predictor.from_pretrained(out).predict([EXAMPLE])[0].segments
    assert [s["label"] for s in segments] == [s["label"] for s in reference]
    for a, b in zip(reference, segments):
        assert abs(a["area"] - b["area"]) <= 0.01 * a["area"]
    with pytest.raises(ExportError, match="bfloat16"):
        export_onnx("shapes", tmp_path / "bf16", dtype="bfloat16")
