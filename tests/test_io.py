"""Atomic writes (lstmkit/io.py): the old file survives a failed write, the new one is on disk
before it takes the old one's place, and nothing is left beside it."""

import os

import pytest

from lstmkit import io


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("old")

    def fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.atomic_write(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_the_data_and_the_folder_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "table.md"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    io.write_text(path, "new")
    assert path.read_text() == "new"
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(path.parent / ".table.md."))  # the temporary, before
    assert events[2][1] == str(path.parent)  # the folder, after
