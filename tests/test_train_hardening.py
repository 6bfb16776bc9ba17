"""Training and pretraining on the user's side: output folders, resume, broken checkpoints,
non-finite updates, dataset errors with workers, unnamed classes, and what reaches the terminal.

Every test is a reproducer of a defect of the commands as they were; training runs are tiny
(a 64-pixel 8-image dataset, 1 or 2 steps of 2 images).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import pytest
import torch

from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.checkpoint import CheckpointError
from mask2former.cli import main
from mask2former.data import DatasetError
from mask2former.data.loading import check_labels, describe_label_mismatch, open_dataset
from mask2former.training import TrainingDiverged
from mask2former.training.checkpointing import (
    latest_checkpoint,
    load_training_state,
    save_checkpoint,
)
from mask2former.training.console import one_line_warnings

from .test_training import make_trainer, tiny_config

SMALL = ["--batch-size", "2", "--num-train", "8", "--image-size", "64", "--crop", "64",
         "--eval-images", "0", "--no-progress", "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A shapes dataset folder (panoptic, instances, semantic PNGs, categories.json)."""
    folder = tmp_path_factory.mktemp("shapes") / "d"
    assert main(["shapes", "--out", str(folder), "--num", "8", "--seed", "1", "--size", "64"]) == 0
    return folder


@pytest.fixture(scope="module")
def model_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(tiny_config().to_json_string())
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model of 8 classes named c0..c7."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(tiny_config()).save_pretrained(folder)
    return folder


def train(capsys, data, config, out, *extra):
    """Run ``mask2former train`` on the tiny setup; returns (exit code, stderr lines)."""
    args = ["train", "--data", str(data), "--model-config", str(config), "--out", str(out),
            *SMALL, *extra]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def one_error(lines, *parts):
    """The lines are exactly one error line holding every part."""
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in lines[0], lines
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def log_steps(out):
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


# -- 1. the output folder holds one run ------------------------------------------------------


def test_train_refuses_a_used_folder_before_loading_anything(capsys, data, model_config, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data, model_config, out, "--steps", "1")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # --data names nothing: the folder is refused first, so the dataset is never opened.
    code, err = train(capsys, tmp_path / "no-such-data", model_config, out, "--steps", "1")
    assert code == 1
    one_error(err, "is not empty", "--resume", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert log_steps(out) == [1]


def test_overwrite_starts_over_and_keeps_other_files(capsys, data, model_config, tmp_path):
    out = tmp_path / "run"
    extra = ["--checkpoint-every", "1", "--keep", "5"]
    assert train(capsys, data, model_config, out, "--steps", "2", *extra)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, err = train(capsys, data, model_config, out, "--steps", "1", "--overwrite", *extra)
    assert code == 0 and any("removed the previous run" in line for line in err)
    assert sorted(p.name for p in out.iterdir()) == [
        "final", "latest", "log.jsonl", "notes.txt", "step-0000001", "tensorboard",
    ]  # fmt: skip
    assert log_steps(out) == [1]  # one run's log, not two mixed
    assert len(list((out / "tensorboard").iterdir())) == 1  # the old run's events are gone
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_and_overwrite_exclude_each_other(capsys, data, model_config, tmp_path):
    code, err = train(capsys, data, model_config, tmp_path, "--resume", "--overwrite")
    assert code == 2 and len(err) == 1 and "not allowed with" in err[0]


def test_resume_without_a_checkpoint(capsys, data, model_config, tmp_path):
    # An empty (or missing) folder: a new run, said in a note.
    code, err = train(capsys, data, model_config, tmp_path / "new", "--steps", "1", "--resume")
    assert code == 0 and any("no checkpoint" in line and "note:" in line for line in err)
    # A folder with files but no checkpoint (a run killed before its first one): refused.
    used = tmp_path / "used"
    used.mkdir()
    (used / "log.jsonl").write_text('{"step": 1}\n')
    code, err = train(capsys, data, model_config, used, "--steps", "1", "--resume")
    assert code == 1
    one_error(err, "has no checkpoint", "--overwrite")


def test_out_is_a_file(capsys, data, model_config, tmp_path):
    (tmp_path / "f").write_text("x")
    code, err = train(capsys, data, model_config, tmp_path / "f", "--steps", "1")
    assert code == 1
    one_error(err, "is a file")


def _pretrain(capsys, data, config, out, *extra):
    args = ["pretrain-backbone", "--data", str(data), "--model-config", str(config),
            "--out", str(out), "--num-train", "4", "--image-size", "64", "--crop", "64",
            "--steps", "1", "--batch-size", "2", "--eval-images", "0", "--no-progress", *extra]  # fmt: skip
    code = main(args)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_pretrain_refuses_a_used_folder(capsys, data, model_config, tmp_path):
    out = tmp_path / "pre"
    assert _pretrain(capsys, data, model_config, out)[0] == 0
    weights = (out / "model.safetensors").read_bytes()
    code, err = _pretrain(capsys, data, model_config, out, "--seed", "3")
    assert code == 1
    one_error(err, "is not empty", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == weights
    code, err = _pretrain(capsys, data, model_config, out, "--seed", "3", "--overwrite")
    assert code == 0
    assert len((out / "pretrain_log.jsonl").read_text().splitlines()) == 1  # not appended
    assert (out / "model.safetensors").read_bytes() != weights
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


# -- 2. every file through mask2former.files ---------------------------------------------------


def test_planted_symlinks_at_the_old_temporary_names_are_not_followed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    victim_dir = tmp_path / "victim_dir"
    victim_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    # The names the old writer used: checkpoint folder and latest pointer.
    os.symlink(victim_dir, run / f".step-0000001.tmp{pid}")
    os.symlink(victim, run / f"latest.tmp{pid}")
    model = Mask2FormerForUniversalSegmentation(tiny_config())
    state = {"step": 1}
    save_checkpoint(str(run), 1, model, state)
    assert list(victim_dir.iterdir()) == [] and victim.read_text() == "precious"
    assert latest_checkpoint(str(run)) == str(run / "step-0000001")
    assert os.path.islink(run / f"latest.tmp{pid}")  # left alone, not written through
    # No temporary of the new writer is left behind.
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_planted_log_symlink_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(victim, out / "log.jsonl")
    trainer = make_trainer(out, max_steps=1)
    with pytest.raises(OSError, match="symlink"):
        trainer.fit()
    assert victim.read_text() == "precious"


def test_a_checkpoint_whose_latest_names_a_path_outside_is_refused(tmp_path):
    (tmp_path / "latest").write_text("../elsewhere\n")
    with pytest.raises(CheckpointError, match="does not name a checkpoint"):
        latest_checkpoint(str(tmp_path))


# -- 3. non-finite updates are never saved ------------------------------------------------------


def test_a_non_finite_gradient_stops_before_the_update(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4)
    trainer.fit(until=2)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # The loss stays finite; one gradient becomes infinite (as with a huge learning rate).
    param = next(trainer.model.parameters())
    param.register_hook(lambda grad: grad * float("inf"))
    trainer.config.clip_norm = 0.0  # no clipping, as with --clip 0
    with pytest.raises(
        TrainingDiverged, match=r"gradient norm is (inf|NaN) at step 3.*step-0000002"
    ):
        trainer.fit()
    assert trainer.step == 2 and latest_checkpoint(str(tmp_path)).endswith("step-0000002")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, good[k]), k


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4)  # a checkpoint every 2 steps
    trainer.fit(until=2)
    real_step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step == 3:  # the update of step 4: its loss was finite, its weights are not
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("inf"))
        return out

    trainer.optimizer.step = poisoned_step
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite after step 4.*step-0000002"):
        trainer.fit()
    assert latest_checkpoint(str(tmp_path)).endswith("step-0000002")
    assert not (tmp_path / "step-0000004").exists()


def test_a_huge_learning_rate_stops_with_the_last_good_checkpoint(
    capsys, data, model_config, tmp_path
):
    out = tmp_path / "run"
    code, err = train(capsys, data, model_config, out, "--steps", "6", "--lr", "3000", "--clip",
                      "0", "--checkpoint-every", "1", "--keep", "10")  # fmt: skip
    assert code == 1
    line = one_error(err, "training stopped")
    checkpoint = latest_checkpoint(str(out))
    if checkpoint is not None:
        assert os.path.basename(checkpoint) in line
    for path in out.glob("step-*"):
        model = Mask2FormerForUniversalSegmentation.from_pretrained(path)
        assert all(torch.isfinite(v).all() for v in model.state_dict().values()), path.name
    assert not (out / "final").exists()


def test_pretraining_stops_before_a_non_finite_update(tmp_path):
    from mask2former.data import LargeScaleJitter, ShapesConfig, ShapesDataset
    from mask2former.training import TrainSamples
    from mask2former.training.pretrain import (
        MaskPooledClassifier,
        PretrainConfig,
        pretrain_backbone,
    )

    torch.manual_seed(0)
    backbone = Mask2FormerForUniversalSegmentation(tiny_config()).model.pixel_level_module.encoder
    classifier = MaskPooledClassifier(backbone, num_labels=8)
    classifier.head.weight.register_hook(lambda grad: grad * float("inf"))
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    data = TrainSamples(
        ShapesDataset(4, seed=3, config=ShapesConfig(64, 64)), LargeScaleJitter(64, 1.0, 1.0)
    )
    config = PretrainConfig(output_dir=str(tmp_path), steps=2, batch_size=2, progress=False)
    with pytest.raises(TrainingDiverged, match="gradient norm is (inf|nan) at step 1"):
        pretrain_backbone(classifier, data, config)
    assert all(torch.equal(v, before[k]) for k, v in classifier.state_dict().items())


# -- 4. a folder without a dataset --------------------------------------------------------------


def test_a_folder_without_a_dataset_is_a_dataset_error(capsys, tmp_path, model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no dataset found") as caught:
        open_dataset(str(empty))
    assert caught.value.path == str(empty)
    for args in (
        ["train", "--data", str(empty), "--out", str(tmp_path / "r")],
        ["pretrain-backbone", "--data", str(empty), "--out", str(tmp_path / "p")],
        ["evaluate", "--data", str(empty), "--model", str(model_dir)],
    ):
        assert main(args) == 1, args
        one_error(capsys.readouterr().err.splitlines(), "no dataset found", str(empty))


# -- 5. dataset errors with data-loading workers --------------------------------------------


def test_a_broken_image_is_the_same_error_with_workers(capsys, data, model_config, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    for image in (broken / "images").iterdir():
        image.write_bytes(b"not an image")
    messages = []
    for workers in ("0", "2"):
        code, err = train(capsys, broken, model_config, tmp_path / f"w{workers}", "--steps", "1",
                          "--workers", workers)  # fmt: skip
        assert code == 1
        messages.append(one_error(err, "cannot read image"))
    assert messages[0] == messages[1]


def test_dataset_errors_survive_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(DatasetError("a/b.png", "cannot read image")))
    assert isinstance(error, DatasetError) and str(error) == "a/b.png: cannot read image"
    assert error.path == "a/b.png" and error.problem == "cannot read image"


# -- 6. devices and hostile training states --------------------------------------------------


@pytest.mark.parametrize("command", ["train", "pretrain-backbone"])
def test_an_unknown_device_is_refused_at_parse_time(capsys, command, tmp_path):
    assert main([command, "--out", str(tmp_path / "o"), "--device", "foo"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--device" in err[0] and "foo" in err[0]


def _evil_pickle(path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {path.parent / 'PWNED'}",))

    torch.save({"step": Evil()}, path)


def _without(key):
    def mutate(state, path):
        del state[key]
        torch.save(state, path)

    return mutate


def _replace(key, value):
    def mutate(state, path):
        state[key] = value
        torch.save(state, path)

    return mutate


HOSTILE = {
    "truncated": lambda state, path: path.write_bytes(path.read_bytes()[:1000]),
    "empty": lambda state, path: path.write_bytes(b""),
    "random bytes": lambda state, path: path.write_bytes(os.urandom(4096)),
    "code": lambda state, path: _evil_pickle(path),
    "not a dict": lambda state, path: torch.save([1, 2, 3], path),
    "no optimizer": _without("optimizer"),
    "no settings": _without("train_config"),
    "step is text": _replace("step", "x"),
    "rng is a list": _replace("torch_rng", [1, 2]),
    "optimizer is a tensor": _replace("optimizer", torch.zeros(3)),
    "settings are not JSON": _replace("train_config", "{nope"),
    "scheduler is behind": _replace("scheduler", {"last_epoch": 99}),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-step run of the tiny trainer with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("finished")
    make_trainer(out, max_steps=2, checkpoint_every=1).fit()
    return out


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_training_state_is_a_checkpoint_error(name, finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / "step-0000002" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    HOSTILE[name](state, path)
    with pytest.raises(CheckpointError, match="step-0000002/training_state.pt") as caught:
        load_training_state(str(run / "step-0000002"))
    assert "\n" not in str(caught.value) and "weights_only` set to `False" not in str(caught.value)
    trainer = make_trainer(run, max_steps=2, checkpoint_every=1)
    with pytest.raises(CheckpointError):
        trainer.resume()
    assert not (run / "step-0000002" / "PWNED").exists()


def test_a_state_of_another_model_is_a_checkpoint_error(finished_run, tmp_path):
    """A well-formed state whose optimiser slots do not fit this model's parameters."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    path = run / "step-0000002" / "training_state.pt"
    state = torch.load(path, weights_only=True)
    for slots in state["optimizer"]["state"].values():
        slots["exp_avg"] = torch.zeros(7, 7)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="training_state.pt does not fit"):
        make_trainer(run, max_steps=2).resume()


def test_resume_from_the_command_line_with_a_hostile_state(capsys, data, model_config, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data, model_config, out, "--steps", "1")[0] == 0
    _evil_pickle(out / "step-0000001" / "training_state.pt")
    code, err = train(capsys, data, model_config, out, "--steps", "1", "--resume")
    assert code == 1
    one_error(err, "training_state.pt", "refused unread")
    assert not (out / "step-0000001" / "PWNED").exists()


# -- 7. semantic folders: where the class names come from -----------------------------------


@pytest.fixture
def semantic(data, tmp_path):
    """The shapes data as a semantic folder only (images/ + semantic/, no names)."""
    folder = tmp_path / "sem"
    folder.mkdir()
    shutil.copytree(data / "images", folder / "images")
    shutil.copytree(data / "semantic", folder / "semantic")
    return folder


def _trained_labels(out):
    return json.loads((out / "final" / "config.json").read_text())["id2label"]


def test_a_semantic_folder_without_names_says_how_to_name_them(capsys, semantic, tmp_path):
    code, err = train(capsys, semantic, "shapes-tiny", tmp_path / "r", "--task", "semantic")
    assert code == 1
    one_error(err, "names no classes", "categories.json", "--init", "--model-config")


def test_semantic_classes_from_init_or_model_config(
    capsys, semantic, model_config, model_dir, tmp_path
):
    for source in (["--init", str(model_dir)], ["--model-config", str(model_config)]):
        out = tmp_path / source[0].strip("-")
        code, err = train(capsys, semantic, model_config, out, "--task", "semantic", "--steps",
                          "1", *source)  # fmt: skip
        assert code == 0, err
        assert _trained_labels(out) == {str(i): f"c{i}" for i in range(8)}


def test_semantic_categories_json_comes_first(capsys, data, semantic, model_dir, tmp_path):
    shutil.copy(data / "categories.json", semantic / "categories.json")
    names = [c["name"] for c in json.loads((data / "categories.json").read_text())]
    dataset = open_dataset(str(semantic), task="semantic")
    assert dataset.label_names == names and dataset.num_labels == len(names)
    out = tmp_path / "r"
    code, _ = train(capsys, semantic, "shapes-tiny", out, "--task", "semantic", "--steps", "1",
                    "--init", str(model_dir))  # fmt: skip
    assert code == 0
    assert _trained_labels(out) == {str(i): n for i, n in enumerate(names)}


def test_a_bad_categories_json_is_a_dataset_error(semantic):
    (semantic / "categories.json").write_text('[{"id": 1}]')
    with pytest.raises(DatasetError, match=r"categories.json: category #0"):
        open_dataset(str(semantic), task="semantic")


def test_semantic_label_values_past_the_classes_are_a_dataset_error(capsys, semantic, tmp_path):
    """Classes from a config with fewer names than the PNGs' values: the file is named."""
    config = tiny_config()
    config = type(config).from_dict(
        {**config.to_dict(), "id2label": {0: "a", 1: "b"}, "label2id": None}
    )
    path = tmp_path / "two.json"
    path.write_text(config.to_json_string())
    code, err = train(capsys, semantic, path, tmp_path / "r", "--task", "semantic", "--steps", "1")
    assert code == 1 and "using the 2 classes of --model-config" in err[0]
    one_error(err[1:], "semantic", ">= num_labels=2")


# -- 8. a model of other classes -------------------------------------------------------------


def test_fine_tuning_on_other_classes_says_so(capsys, data, model_config, model_dir, tmp_path):
    # The shapes panoptic data has 8 classes named circle..water; the model 8 named c0..c7.
    code, err = train(capsys, data, model_config, tmp_path / "a", "--steps", "1", "--init",
                      str(model_dir))  # fmt: skip
    assert code == 0
    assert len(err) == 1 and "warning:" in err[0] and "'c0' in the model, 'circle'" in err[0]
    # Its instances.json has the 5 thing classes: a new class head, said in one line.
    code, err = train(capsys, data, model_config, tmp_path / "b", "--steps", "1", "--init",
                      str(model_dir), "--task", "instance")  # fmt: skip
    assert code == 0
    assert len(err) == 1 and "note:" in err[0] and "new class head" in err[0], err


def test_check_labels():
    shapes = open_dataset("shapes", num=1)
    names = dict(enumerate(shapes.label_names))
    check_labels(names, shapes)  # the same classes
    check_labels({i: f"LABEL_{i}" for i in range(8)}, shapes)  # unnamed: the count matches
    with pytest.raises(ValueError, match="the dataset has 8 classes.*the model only 5"):
        check_labels({i: names[i] for i in range(5)}, shapes)
    with pytest.raises(ValueError, match="class 0 is 'disc' in the model, 'circle'"):
        check_labels({**names, 0: "disc"}, shapes)

    class Things:  # an instances dataset: the panoptic model's first classes
        label_names = shapes.label_names[:5]

    check_labels(names, Things())
    assert describe_label_mismatch(names, dict(enumerate(Things.label_names))) is not None
    assert describe_label_mismatch(names, None) is None


# -- 9. resume keeps the run's options; bad values are refused when parsed ------------------


def test_resume_refuses_changed_options(capsys, data, model_config, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data, model_config, out, "--steps", "1")[0] == 0
    for option, value, saved in (("--lr", "0.5", "0.0001"), ("--batch-size", "4", "2"),
                                 ("--schedule", "poly", "step"), ("--seed", "3", "0")):  # fmt: skip
        args = (
            [a for a in SMALL if a not in ("--batch-size", "2")]
            if option == "--batch-size"
            else SMALL
        )
        code = main(["train", "--data", str(data), "--model-config", str(model_config), "--out",
                     str(out), *args, "--steps", "2", "--resume", option, value])  # fmt: skip
        err = capsys.readouterr().err.splitlines()
        assert code == 1
        one_error(err, option, saved, value)
    assert log_steps(out) == [1]  # nothing ran


def test_resume_may_extend_the_steps(capsys, data, model_config, tmp_path):
    out = tmp_path / "run"
    assert train(capsys, data, model_config, out, "--steps", "1")[0] == 0
    code, err = train(capsys, data, model_config, out, "--steps", "2", "--resume")
    assert code == 0 and any("--steps 2 (the run had 1)" in line for line in err), err
    assert log_steps(out) == [1, 2]
    code, err = train(capsys, data, model_config, out, "--steps", "1", "--resume")
    assert code == 1
    one_error(err, "is at step 2, past --steps 1")


def test_a_longer_run_follows_its_own_schedule_from_the_resumed_step(tmp_path):
    make_trainer(tmp_path, max_steps=2, schedule="poly").fit()
    longer = make_trainer(tmp_path, max_steps=4, schedule="poly")
    assert longer.resume() and longer.step == 2
    head = next(g for g in longer.optimizer.param_groups if g["name"] == "head")
    assert head["lr"] == pytest.approx(1e-3 * (1 - 2 / 4) ** 0.9)  # not the old schedule's 0


def test_trainer_resume_refuses_changed_options(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    with pytest.raises(ValueError, match="lr=0.001, not 0.5"):
        make_trainer(run, max_steps=2, lr=0.5).resume()


BAD_VALUES = {
    "train": [("--steps", "0"), ("--batch-size", "0"), ("--grad-accum", "0"), ("--lr", "-1"),
              ("--lr", "nan"), ("--eval-every", "-1"), ("--keep", "0"), ("--workers", "-1"),
              ("--crop", "0"), ("--num-train", "0"), ("--clip", "-1"), ("--log-every", "0"),
              ("--checkpoint-every", "-2"), ("--warmup", "-1"), ("--weight-decay", "-0.1")],
    "pretrain-backbone": [("--steps", "0"), ("--batch-size", "0"), ("--lr", "-1"),
                          ("--eval-every", "0"), ("--eval-images", "-1"), ("--crop", "0")],
}  # fmt: skip


@pytest.mark.parametrize(
    "command,option,value", [(c, o, v) for c, pairs in BAD_VALUES.items() for o, v in pairs]
)
def test_bad_values_are_refused_at_parse_time(capsys, command, option, value, tmp_path):
    assert main([command, "--out", str(tmp_path / "o"), option, value]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and option in err[0], err
    assert not (tmp_path / "o").exists()


# -- 10. warnings in one line ----------------------------------------------------------------


def test_float16_skipped_steps_do_not_warn(tmp_path):
    """The gradient scaler skips the first float16 steps (overflow while it finds its scale);
    torch's warning about the scheduler stepping alone is expected and dropped."""
    trainer = make_trainer(tmp_path, max_steps=3, amp="float16", checkpoint_every=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit()
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]


def test_warnings_print_as_one_line_notes():
    with one_line_warnings("train"):
        text = warnings.formatwarning("first line\nsecond line", UserWarning, "/x/y.py", 3)
    assert text == "mask2former train: note: first line\n"
    assert "y.py" in warnings.formatwarning("m", UserWarning, "/x/y.py", 3)  # restored
