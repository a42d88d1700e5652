"""Output folders appear whole or not at all."""

import os

import pytest

from hf_tinylm.output_folder import atomic_output_folder


def test_folder_appears_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "model"
    with atomic_output_folder(target) as staging:
        (staging / "config.json").write_text("{}")
        assert not target.exists()
    assert (target / "config.json").read_text() == "{}"
    assert os.listdir(tmp_path) == ["model"]


def test_failure_leaves_no_folder_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("kept")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_folder(target, overwrite=True) as staging:
            (staging / "half-written.bin").write_text("x")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == ["model"]
    assert os.listdir(target) == ["old.txt"]


def test_existing_folder_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        with atomic_output_folder(target):
            pass
    with atomic_output_folder(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert os.listdir(target) == ["new.txt"]


def test_finished_folder_has_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_output_folder(tmp_path / "model"):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
