"""Decoded-image cache: built once and atomically, keyed by content, refused in one line when unusable;
the data module's cache modes, budget and worker rule."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.one_line import one_line_error
from wsol_lightning.data import cache as cache_module
from wsol_lightning.data.cache import cache_path, content_key, ensure_decoded
from wsol_lightning.data.datamodule import WSOLDataModule, auto_num_workers
from wsol_lightning.data.images import decode_resized

SIZES = [(40, 30), (25, 50), (33, 33), (60, 20)]


def _images(folder: Path, sizes=SIZES, seed=0):
    """Random JPEGs ``<folder>/<i>.jpg`` of the given (width, height); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, (width, height) in enumerate(sizes):
        path = folder / f"{index}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_cache_holds_each_image_decoded_and_resized_and_is_built_once(tmp_path, monkeypatch):
    paths = _images(tmp_path / "images")
    target = tmp_path / "cache" / "x.npy"
    decoded = ensure_decoded(target, paths, 16)
    assert decoded.shape == (4, 16, 16, 3) and target.is_file()
    pixels = decoded.open()
    for index, path in enumerate(paths):
        assert np.array_equal(pixels[index], decode_resized(path, 16))
    assert not list(target.parent.glob("*.tmp-*"))  # the temporary file was renamed, not left behind

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "decode_resized", no_decoding)
    assert ensure_decoded(target, paths, 16).shape == (4, 16, 16, 3)


def test_concurrent_builders_decode_once_and_readers_never_see_a_partial_file(tmp_path, monkeypatch):
    paths = _images(tmp_path / "images")
    target = tmp_path / "cache" / "x.npy"
    calls = []
    real = cache_module.decode_resized

    def counting(path, size):
        assert not target.exists()  # while building, the final name does not exist yet
        calls.append(path)
        if len(calls) == 1:
            time.sleep(0.3)  # the other builders reach the lock meanwhile
        return real(path, size)

    monkeypatch.setattr(cache_module, "decode_resized", counting)
    results, errors = [], []
    start = threading.Barrier(4)

    def build():
        start.wait()
        try:
            results.append(ensure_decoded(target, paths, 12, threads=1).open().copy())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(calls) == sorted(paths)  # four builders, one decode per image (flock)
    assert all(np.array_equal(r, results[0]) for r in results) and len(results) == 4


def test_key_follows_size_split_ids_and_file_contents(tmp_path):
    paths = _images(tmp_path / "images")
    ids = [Path(p).name for p in paths]
    key = content_key("CUB", "train", 16, tmp_path / "images", ids)
    assert key == content_key("CUB", "train", 16, tmp_path / "images", ids)
    others = {content_key("CUB", "train", 17, tmp_path / "images", ids),
              content_key("CUB", "val", 16, tmp_path / "images", ids),
              content_key("ILSVRC", "train", 16, tmp_path / "images", ids),
              content_key("CUB", "train", 16, tmp_path / "images", ids[::-1])}
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(paths[2])  # an image replaced in place
    others.add(content_key("CUB", "train", 16, tmp_path / "images", ids))
    assert key not in others and len(others) == 5
    assert cache_path(tmp_path, "CUB", "train", 16, key).name == f"CUB-train-16px-{key}.npy"
    message = one_line_error(content_key, "CUB", "train", 16, tmp_path / "images", ["missing.jpg"])
    assert message == f"{tmp_path / 'images' / 'missing.jpg'}: image file not found"


@pytest.mark.parametrize("damage", ["truncate", "reshape"])
def test_corrupt_cache_is_one_line_naming_the_file(tmp_path, damage):
    paths = _images(tmp_path / "images")
    target = tmp_path / "cache" / "x.npy"
    ensure_decoded(target, paths, 16)
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        np.save(target, np.zeros((4, 16, 15, 3), dtype=np.uint8))
    message = one_line_error(ensure_decoded, target, paths, 16)
    assert message.startswith(f"{target}: decoded-image cache is corrupt (") and "delete the file" in message


def test_unwritable_cache_folder_is_one_line_naming_it(tmp_path):
    paths = _images(tmp_path / "images")
    (tmp_path / "file").write_text("")
    folder = tmp_path / "file" / "cache"  # below a regular file: cannot be created, even by root
    message = one_line_error(ensure_decoded, folder / "x.npy", paths, 16)
    assert message.startswith(f"{folder}: decoded-image cache folder is not writable (")
    assert message.endswith("set --data.cache_dir or --data.cache off")


# ------------------------------------------------------------------ data module
def _cub(root: Path):
    """A CUB layout: 4 train and 4 val JPEGs with labels and boxes."""
    for split in ("train", "val"):
        paths = _images(root / "CUB" / split, seed=split == "val")
        ids = [f"{split}/{Path(p).name}" for p in paths]
        folder = root / "metadata" / "CUB" / split
        folder.mkdir(parents=True)
        (folder / "image_ids.txt").write_text("\n".join(ids))
        (folder / "class_labels.txt").write_text("\n".join(f"{x},{i % 2}" for i, x in enumerate(ids)))
        (folder / "image_sizes.txt").write_text("\n".join(f"{x},{w},{h}" for x, (w, h) in zip(ids, SIZES)))
        (folder / "localization.txt").write_text("\n".join(f"{x},1,1,10,10" for x in ids))


def _module(root: Path, **kwargs) -> WSOLDataModule:
    return WSOLDataModule(dataset_name="CUB", data_root=str(root), batch_size=4, num_workers=0, resize_size=20,
                          crop_size=16, eval_size=18, **kwargs)


def _batches(module: WSOLDataModule):
    """One training batch through the device transform (seeded) and one evaluation batch."""
    module.setup("fit")
    torch.manual_seed(5)
    train = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    return train, next(iter(module.val_dataloader()))


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    _cub(root)
    return root


def test_cached_and_streamed_batches_are_identical(cub_root, tmp_path):
    cached = _module(cub_root, cache="on", cache_dir=str(tmp_path / "c"))
    streamed = _module(cub_root, cache="off", cache_dir=str(tmp_path / "s"))
    (train_c, val_c), (train_s, val_s) = _batches(cached), _batches(streamed)
    assert cached.datasets["train"].decoded is not None and streamed.datasets["train"].decoded is None
    assert sorted(p.name.split("-")[1:3] for p in (tmp_path / "c").glob("*.npy")) == [["train", "20px"],
                                                                                       ["val", "18px"]]
    assert not (tmp_path / "s").exists()
    assert train_c["image"].shape == (4, 3, 16, 16) and train_c["image"].dtype == torch.float32
    assert torch.equal(train_c["image"], train_s["image"]) and torch.equal(train_c["label"], train_s["label"])
    assert val_c["image"].shape == (4, 3, 18, 18) and torch.equal(val_c["image"], val_s["image"])


def test_auto_streams_over_the_budget_or_when_unwritable_and_on_refuses(cub_root, tmp_path, capsys):
    # train at 20 px: 4 x 1200 B = 4800 B; val at 18 px: 3888 B
    module = _module(cub_root, cache="auto", cache_dir=str(tmp_path / "a"), cache_max_gb=6e-6)
    module.setup("fit")
    assert module.datasets["train"].decoded is not None and module.datasets["val"].decoded is None
    assert "decoded-image cache: streaming CUB/val" in capsys.readouterr().err
    forced = _module(cub_root, cache="on", cache_dir=str(tmp_path / "o"), cache_max_gb=1e-9)
    forced.setup("fit")
    assert forced.datasets["val"].decoded is not None  # `on` ignores the budget
    (tmp_path / "file").write_text("")
    blocked = tmp_path / "file" / "cache"
    module = _module(cub_root, cache="auto", cache_dir=str(blocked))
    module.setup("fit")
    assert module.datasets["train"].decoded is None
    assert f"{blocked}: decoded-image cache folder is not writable" in capsys.readouterr().err
    message = one_line_error(_module(cub_root, cache="on", cache_dir=str(blocked)).setup, "fit")
    assert message.startswith(f"{blocked}: decoded-image cache folder is not writable")


def test_default_cache_folder_is_under_the_data_root(tmp_path):
    assert _module(tmp_path).cache_dir == tmp_path / "decoded-cache"


@pytest.mark.parametrize("on_gpu,devices,cached,cpus,expected", [
    (False, 1, False, 16, 0), (False, 1, True, 2, 0),      # CPU: the step needs the cores
    (True, 1, False, 16, 15), (True, 1, True, 16, 4),      # one GPU: all but one core; cached: a few
    (True, 2, False, 16, 7), (True, 8, False, 16, 1),      # per device under DDP
    (True, 1, False, 1, 1), (True, 1, True, 3, 2),
])
def test_auto_num_workers_rule(on_gpu, devices, cached, cpus, expected):
    assert auto_num_workers(on_gpu, devices, cached, cpus) == expected


def test_cpu_loaders_use_no_workers_and_no_pinned_memory_by_default(cub_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    module = WSOLDataModule(dataset_name="CUB", data_root=str(cub_root), batch_size=4, resize_size=20, crop_size=16,
                            eval_size=18, cache_dir=str(tmp_path))
    assert module.hparams.num_workers == "auto" and module.hparams.cache == "auto"
    loader = module.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory


@pytest.mark.parametrize("kwargs,flag", [
    ({"cache": "yes"}, "--data.cache='yes' must be one of auto, on, off"),
    ({"cache_max_gb": 0}, "--data.cache_max_gb=0 must be a number > 0"),
    ({"num_workers": "many"}, "--data.num_workers='many' must be an integer >= 0 or auto"),
    ({"num_workers": -1}, "--data.num_workers=-1 must be an integer >= 0 or auto"),
])
def test_bad_cache_flags_are_refused(kwargs, flag):
    assert one_line_error(WSOLDataModule, **kwargs).startswith(flag)
