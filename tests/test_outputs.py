"""Atomic writes and fresh output directories: nothing a user gave is overwritten."""

from __future__ import annotations

import pytest

from tokensieve.outputs import fresh_directory, write_atomic


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_atomic(target, "first")
    write_atomic(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_interrupted_write_keeps_old_content(tmp_path):
    target = tmp_path / "out.txt"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_fresh_directory_picks_a_new_sibling(tmp_path):
    first = fresh_directory(tmp_path / "r")
    assert first == tmp_path / "r"
    assert fresh_directory(tmp_path / "r") == tmp_path / "r"  # empty: reused
    (first / "x").write_text("x")
    assert fresh_directory(tmp_path / "r") == tmp_path / "r-2"
    (tmp_path / "r-2" / "y").write_text("y")
    assert fresh_directory(tmp_path / "r") == tmp_path / "r-3"
    (tmp_path / "file").write_text("a file")
    assert fresh_directory(tmp_path / "file") == tmp_path / "file-2"
