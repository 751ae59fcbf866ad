"""Atomic writes: foreign folders are never replaced, outputs follow the umask."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from data_gen.contract import MANIFEST_COLUMNS, write_manifest
from llava_address.common.io import MARKER, NotOurFolderError, atomic_dir, atomic_path, atomic_write_text, read_marker


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_foreign_folder_and_file_are_never_replaced(tmp_path):
    own = tmp_path / "photos"
    own.mkdir()
    (own / "a.jpg").write_bytes(b"mine")
    (tmp_path / "file").write_text("mine")
    for target in (own, tmp_path / "file"):
        with pytest.raises(NotOurFolderError, match="never deleted or overwritten"):
            with atomic_dir(target, overwrite=True) as tmp:
                (tmp / "x").write_text("new")
    assert (own / "a.jpg").read_bytes() == b"mine" and sorted(p.name for p in own.iterdir()) == ["a.jpg"]
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "photos"]  # no partial folder left


def test_own_folder_is_marked_and_replaceable_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder holds nothing to lose: written into without overwrite
    with atomic_dir(out, marker={"kind": "test", "n": 1}) as tmp:
        (tmp / "x").write_text("1")
    assert read_marker(out) == {"written_by": "llava-address", "kind": "test", "n": 1}
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        with atomic_dir(out):
            pass
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "y"])
    (out / MARKER).write_text("not json")  # a damaged marker is no marker
    assert read_marker(out) is None


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as tmp:
            atomic_write_text(tmp / "g.txt", "y")
        with atomic_path(tmp_path / "lib.parquet") as tmp:  # a library writing into the temp path
            pd.DataFrame({"a": [1]}).to_parquet(tmp)
        row = {c: 1.0 if t.startswith("float") else "x" for c, t in MANIFEST_COLUMNS.items()}
        write_manifest(tmp_path / "d", pd.DataFrame([{**row, "split": "train"}]))
    finally:
        os.umask(old)
    for f in ("f.txt", "lib.parquet", "d/g.txt", "d/manifest.parquet"):
        assert _mode(tmp_path / f) == file_mode, f
    assert _mode(tmp_path / "d") == dir_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt", "lib.parquet"]  # no temp files left
