"""Saved score maps: the one-read fast path returns what ``np.load`` does, anything else goes to ``np.load``."""

import numpy as np
import pytest

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.scoremaps import _read_saved_map, load_scoremap


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saved_maps_read_as_np_load_reads_them(tmp_path, dtype):
    scoremap = np.random.default_rng(0).random((224, 224)).astype(dtype)
    np.save(tmp_path / "a.npy", scoremap)
    fast = _read_saved_map(str(tmp_path / "a.npy"), 224)
    assert fast is not None and fast.dtype == dtype and fast.flags.writeable
    assert np.array_equal(fast, scoremap)
    assert np.array_equal(load_scoremap(str(tmp_path), "a"), scoremap)


@pytest.mark.parametrize("array", [
    np.asfortranarray(np.random.default_rng(1).random((224, 224))),   # Fortran order
    np.random.default_rng(2).random((224, 224)).astype(">f8"),         # big-endian
    np.random.default_rng(3).random((224, 224)).astype(np.float16),    # not an accepted dtype
    np.random.default_rng(4).random((224, 223)),                        # another shape
])
def test_other_layouts_go_to_np_load(tmp_path, array):
    np.save(tmp_path / "b.npy", array)
    assert _read_saved_map(str(tmp_path / "b.npy"), 224) is None
    if array.dtype in (np.float32, np.float64) and array.shape == (224, 224):
        assert np.array_equal(load_scoremap(str(tmp_path), "b"), array)
    else:
        with pytest.raises(WSOLInputError, match="^b: score map (dtype|has shape)"):
            load_scoremap(str(tmp_path), "b")


def test_a_truncated_file_is_refused_naming_the_image(tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((224, 224), np.float32))
    data = (tmp_path / "c.npy").read_bytes()
    (tmp_path / "c.npy").write_bytes(data[:-10])
    with pytest.raises(WSOLInputError, match="^c: score map unreadable"):
        load_scoremap(str(tmp_path), "c")


def test_maps_read_into_one_buffer_are_each_the_file_until_the_next_read(tmp_path):
    """evaluate.py's loop reads every map into one buffer (no 200 KB allocation per map)."""
    from wsol_lightning.metrics.scoremaps import ReadBuffer

    first, second = (np.random.default_rng(seed).random((224, 224)).astype(np.float32) for seed in (5, 6))
    np.save(tmp_path / "a.npy", first)
    np.save(tmp_path / "b.npy", second)
    buffer = ReadBuffer()
    a = load_scoremap(str(tmp_path), "a", into=buffer)
    assert np.array_equal(a, first) and a.flags.writeable
    b = load_scoremap(str(tmp_path), "b", into=buffer)
    assert np.array_equal(b, second) and np.shares_memory(a, b)  # the same memory: a now holds b


def test_values_are_left_to_the_caller_only_when_asked(tmp_path):
    np.save(tmp_path / "n.npy", np.full((224, 224), np.nan, np.float32))
    assert np.isnan(load_scoremap(str(tmp_path), "n", check_values=False)).all()
    with pytest.raises(WSOLInputError, match="^n: score map contains NaN$"):
        load_scoremap(str(tmp_path), "n")
