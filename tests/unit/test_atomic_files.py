"""Atomic checkpoint saves and result files: a write stopped at any byte leaves the previous file whole."""

import os

import pytest
import torch

from wsol_lightning import checkpoint_io, files
from wsol_lightning.checkpoint_io import AtomicCheckpointIO


def _save_cut_short(obj, file, *args, **kwargs):
    """What a Ctrl-C in the middle of torch.save leaves: some bytes written, then KeyboardInterrupt."""
    file.write(b"PK\x03\x04 half a zip archive")
    raise KeyboardInterrupt


def test_a_save_interrupted_midway_keeps_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "weights": torch.arange(4.0)}, target)
    monkeypatch.setattr(checkpoint_io.torch, "save", _save_cut_short)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "weights": torch.zeros(4)}, target)
    assert os.listdir(target.parent) == ["last.ckpt"]
    saved = torch.load(target, weights_only=True)
    assert saved["epoch"] == 1 and torch.equal(saved["weights"], torch.arange(4.0))


def test_the_file_is_written_beside_its_target_and_renamed_over_it(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))
    target = tmp_path / "best-epoch03.ckpt"
    target.write_bytes(b"old")
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, target)
    ((source, destination),) = renames
    assert os.path.dirname(source) == str(tmp_path) and destination == target  # same filesystem: atomic rename
    assert torch.load(target, weights_only=True) == {"epoch": 3}
    assert os.listdir(tmp_path) == ["best-epoch03.ckpt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as a plain open() would create it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_result_file_stopped_midway_keeps_the_previous_one(tmp_path):
    target = files.write_text_atomically(tmp_path / "out" / "metrics.json", '{"localization": 61.2}\n')
    with pytest.raises(KeyboardInterrupt):
        with files.replaced_atomically(target) as file:
            file.write(b'{"localiz')
            raise KeyboardInterrupt
    assert target.read_text() == '{"localization": 61.2}\n' and os.listdir(target.parent) == ["metrics.json"]
