"""``mask2former plot`` (training curves) and ``evaluate --plot`` (per-class bar charts)."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from PIL import Image

from mask2former.cli import main
from mask2former.evaluation.plot import PLOT_EXTRA, plot_results
from mask2former.training.curves import read_log, read_runs

BUILTIN_LOG = Path(__file__).resolve().parents[1] / "mask2former/weights/shapes/training_log.jsonl"


def write_log(folder: Path, scale: float, name: str = "log.jsonl") -> Path:
    """A small trainer-like log: window records every 10 steps, an evaluation every 20."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(10, 61, 10):
        record = {"step": step, "loss": scale * 10 / step, "lr": 1e-4, "steps_per_s": 2.0,
                  "loss_mask": scale / step, "loss_dice": 2 * scale / step, "grad_norm": 5.0}  # fmt: skip
        lines.append(json.dumps(record))
        if step % 20 == 0:
            lines.append(json.dumps({"step": step, "eval/PQ": step / scale, "eval/mIoU": 50.0}))
    (folder / name).write_text("\n".join(lines) + "\n")
    return folder / name


def png_size(path: Path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_plot_draws_two_runs_and_the_builtin_log(tmp_path, capsys):
    write_log(tmp_path / "run_a", 1.0)
    write_log(tmp_path / "run_b", 2.0)
    out = tmp_path / "curves.png"
    runs = [str(tmp_path / "run_a"), str(tmp_path / "run_b"), str(BUILTIN_LOG)]
    code = main(["plot", *runs, "--out", str(out), "--width", "640", "--height", "480"])
    assert code == 0
    assert png_size(out) == (640, 480)
    assert "run_a, run_b, shapes" in capsys.readouterr().out


def test_plot_default_size_and_a_run_folder_with_training_log(tmp_path):
    write_log(tmp_path / "model", 1.0, name="training_log.jsonl")
    out = tmp_path / "sub" / "curves.png"  # a missing folder is made
    assert main(["plot", str(tmp_path / "model"), "--out", str(out)]) == 0
    # 7 panels (loss, 2 terms, lr, grad_norm, 2 metrics) in 3 columns: 3 rows of 300 + legend.
    assert png_size(out) == (1500, 960)


def test_read_log_skips_what_cannot_be_drawn(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"step": 1, "loss": 2.0, "grad_norm": "inf", "steps_per_s": 3}\n'
        "\n"
        '{"step": 2, "loss": null, "grad_norm": 1.5, "note": "warm-up", "eval/error": "E: x"}\n'
        '{"step": 3, "loss": "NaN", "eval/PQ": 12}\n'
    )
    log = read_log(str(path), "run")
    assert log.series == {"loss": ([1], [2.0]), "grad_norm": ([2], [1.5]), "eval/PQ": ([3], [12.0])}


def test_same_names_are_told_apart(tmp_path):
    a = write_log(tmp_path / "a" / "run", 1.0)
    b = write_log(tmp_path / "b" / "run", 1.0)
    names = [log.name for log in read_runs([str(a.parent), str(b.parent), str(b)])]
    assert len(set(names)) == 3, names


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"step": 20, "loss": 1.0', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"loss": 1.0}', "no step"),
        ('{"step": "20", "loss": 1.0}', "no step"),
        ('{"step": 20, "loss": "high"}', "'loss' is 'high', not a number"),
        ('{"step": 20, "eval/PQ": [1]}', "'eval/PQ' is [1], not a number"),
    ],
)
def test_a_bad_line_is_one_line_naming_file_and_line(tmp_path, capsys, line, problem):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 10, "loss": 2.0}\n' + line + "\n")
    out = tmp_path / "curves.png"
    assert main(["plot", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path} line 2: " in err and problem in err
    assert not out.exists()


def test_missing_runs_and_empty_logs_are_refused(tmp_path, capsys):
    out = str(tmp_path / "curves.png")
    assert main(["plot", str(tmp_path / "nowhere"), "--out", out]) == 1
    assert "no such run folder or log file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty"), "--out", out]) == 1
    assert "no log.jsonl, training_log.jsonl, pretrain_log.jsonl" in capsys.readouterr().err
    (tmp_path / "empty" / "log.jsonl").write_text("\n")
    assert main(["plot", str(tmp_path / "empty"), "--out", out]) == 1
    assert "no log records" in capsys.readouterr().err


def test_an_existing_out_is_refused_unless_overwrite(tmp_path, capsys):
    run = write_log(tmp_path / "run", 1.0)
    out = tmp_path / "curves.png"
    out.write_bytes(b"keep")
    assert main(["plot", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists (use --overwrite to replace it)" in err
    assert out.read_bytes() == b"keep"
    args = ["plot", str(run), "--out", str(out), "--overwrite", "--width", "900"]
    assert main([*args, "--height", "700"]) == 0
    assert png_size(out) == (900, 700)


@pytest.fixture
def no_matplotlib(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_matplotlib_is_one_line(tmp_path, capsys, no_matplotlib):
    run = write_log(tmp_path / "run", 1.0)
    out = tmp_path / "curves.png"
    assert main(["plot", str(run), "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"mask2former plot: error: {PLOT_EXTRA}\n"
    assert not out.exists()


def test_evaluate_plot_refuses_before_evaluating(tmp_path, capsys, no_matplotlib):
    # Both refusals come before the model loads: these calls take no evaluation time.
    out = tmp_path / "classes.png"
    assert main(["evaluate", "--plot", str(out), "--no-progress"]) == 1
    assert capsys.readouterr().err == f"mask2former evaluate: error: {PLOT_EXTRA}\n"
    out.write_bytes(b"keep")
    assert main(["evaluate", "--plot", str(out), "--no-progress"]) == 1
    assert "--plot" in capsys.readouterr().err and out.read_bytes() == b"keep"


def test_evaluate_plot_writes_a_png(tmp_path, capsys):
    out = tmp_path / "classes.png"
    assert main(["evaluate", "--max-images", "4", "--plot", str(out), "--no-progress"]) == 0
    assert f"per-class chart written to {out}" in capsys.readouterr().out
    width, height = png_size(out)
    assert width == 3 * 460 and height >= 360  # panoptic, instance and semantic panels


def test_plot_results_draws_undefined_classes_as_dashes(tmp_path):
    # As read back from --json: NaN became null. A semantic-only result has one panel.
    results = {"semantic": {"mIoU": 40.0, "per_class": {"a": {"IoU": 80.0}, "b": {"IoU": None}}}}
    plot_results(results, str(tmp_path / "s.png"))
    assert png_size(tmp_path / "s.png") == (460, 360)
    with pytest.raises(ValueError, match="no per-class results"):
        plot_results({"semantic": {"mIoU": 1.0}}, str(tmp_path / "t.png"))
