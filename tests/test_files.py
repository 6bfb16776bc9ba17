"""The one safe writer (mask2former.files): atomic, exclusive temporary files, never through a
symlink, nothing left behind on failure, no replacing unless allowed; and confined_path."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from mask2former.files import (
    UnsafePathError,
    append_text,
    atomic_directory,
    confined_path,
    open_atomic,
    remove_stale_temporaries,
    save_image,
    write_json,
    write_text,
)


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "out.json").symlink_to(victim)
    write_json(folder / "out.json", {"a": 1})
    assert victim.read_text() == "precious"
    assert not (folder / "out.json").is_symlink()
    assert (folder / "out.json").read_text() == '{"a": 1}\n'


def test_temporary_names_are_unpredictable_and_links_there_are_never_opened(tmp_path):
    """Symlinks planted under every name the old writers used (``x.tmp``, ``x.tmp<PID>``, ...)
    are left alone, and two writes of one file use different temporary names."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    for name in (
        "model.safetensors.tmp",
        f"a.ids.tmp{os.getpid()}.png",
        f"latest.tmp{os.getpid()}",
    ):
        (out / name).symlink_to(victim)
    seen = set()
    for _ in range(2):
        with open_atomic(out / "a.ids.png") as f:
            seen |= {n for n in os.listdir(out) if n.startswith(".a.ids.png.")}
            f.write(b"data")
    assert len(seen) == 2 and victim.read_text() == "precious"
    assert (out / "a.ids.png").read_bytes() == b"data"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with open_atomic(target, "w") as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        write_json(target, {"x": float("nan")})
    assert os.listdir(tmp_path) == ["r.json"]


def test_overwrite_false_refuses_existing_files_and_links(tmp_path):
    (tmp_path / "a").write_text("mine")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for name in ("a", "link"):
        with pytest.raises(FileExistsError):
            write_text(tmp_path / name, "new", overwrite=False)
    assert (tmp_path / "a").read_text() == "mine"
    write_text(tmp_path / "b", "new", overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "link"]


def test_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644


def test_save_image_round_trip(tmp_path):
    ids = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    save_image(tmp_path / "ids.png", ids)
    assert (np.asarray(Image.open(tmp_path / "ids.png")) == ids).all()


def test_append_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "log.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="symlink"):
        append_text(tmp_path / "log.jsonl", "line\n")
    assert victim.read_text() == "precious"
    append_text(tmp_path / "new.jsonl", "a\n")
    append_text(tmp_path / "new.jsonl", "b\n")
    assert (tmp_path / "new.jsonl").read_text() == "a\nb\n"


def test_atomic_directory(tmp_path):
    with atomic_directory(tmp_path / "step-1") as tmp:
        write_text(os.path.join(tmp, "f"), "1")
    assert (tmp_path / "step-1" / "f").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_directory(tmp_path / "step-1") as tmp:
            pass
    with pytest.raises(KeyError):
        with atomic_directory(tmp_path / "step-2") as tmp:
            raise KeyError("killed")
    assert sorted(os.listdir(tmp_path)) == ["step-1"]
    with atomic_directory(tmp_path / "step-1", replace=True) as tmp:
        write_text(os.path.join(tmp, "g"), "2")
    assert os.listdir(tmp_path / "step-1") == ["g"]


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../x.png", "a/../../x.png", "..", "", "C:\\x.png", "a\\..\\..\\x"]
)
def test_confined_path_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(UnsafePathError, match="file_name"):
        confined_path(tmp_path, name, what="file_name")


def test_confined_path_keeps_sub_folders_and_refuses_symlinked_exits(tmp_path):
    assert confined_path(tmp_path, "a/b/c.png") == os.path.join(tmp_path, "a", "b", "c.png")
    assert confined_path(tmp_path, "./c.png") == os.path.join(tmp_path, "c.png")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (tmp_path / "exit").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        confined_path(tmp_path, "exit/x.png")


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".a.json.k3j2.tmp").write_text("half")
    (tmp_path / ".b.json.k3j2.tmp").write_text("other file's")
    remove_stale_temporaries(tmp_path, "a.json")
    assert sorted(os.listdir(tmp_path)) == [".b.json.k3j2.tmp"]
