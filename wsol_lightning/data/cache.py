"""Decoded-image cache: every image of a split decoded and resized once, then memory-mapped.

Decoding a JPEG of CUB's size (about 500x375) and resizing it costs a few
milliseconds of CPU per image, every epoch, in every trial of a study; a
ResNet50 step in bf16 on a modern GPU wants thousands of images a second. The
cache decodes each image of a split once, resizes it to the split's square
size (``resize_size`` for train, ``eval_size`` for val/test) exactly as the
loader would (PIL bilinear, the resize of ``torchvision.transforms.Resize`` on
PIL images) and stores the uint8 pixels as one ``[N, S, S, 3]`` ``.npy`` file.
Every later epoch, trial, loader worker, tuning worker and DDP rank maps that
file (``np.load(mmap_mode="r")``): the operating system's page cache holds one
copy for all of them.

File: ``<cache_dir>/<dataset>-<split>-<S>px-<key>.npy``, where ``key`` hashes
the dataset, split, size, resize method, the image folder and, per image of the
split's metadata in order, its id, file size and modification time; any change
of these makes a new file (old ones are left for the user to delete).

Concurrency: a builder holds an exclusive ``flock`` on ``<file>.lock`` (others
wait, then map the finished file), writes ``<file>.tmp-<pid>-<random>``, flushes
and fsyncs it, and renames it onto the final name. A reader therefore sees
either no file or a complete one, also on filesystems without ``flock`` (there
two builders may both decode; the last rename wins, with equal contents).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import hashlib
import json
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from wsol_lightning.data.images import decode_resized
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.files import probe_writable
from wsol_lightning.machine import usable_cpus

#: Bumped when the file layout or the resize changes (old files are then not reused).
CACHE_VERSION = 1
#: How images are resized (part of the key): PIL's bilinear filter, as torchvision's Resize on PIL images.
RESAMPLE = "PIL.Image.BILINEAR"


def decoded_nbytes(count: int, size: int) -> int:
    """Bytes of the pixels of ``count`` images at ``size`` x ``size`` x 3 uint8."""
    return count * size * size * 3


def default_budget_bytes() -> int:
    """Default cache budget: half of this machine's RAM, so the cached splits stay in the page cache."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def content_key(dataset_name: str, split: str, size: int, image_dir: os.PathLike | str,
                image_ids: Sequence[str]) -> str:
    """Hash naming a cache file: dataset, split, size, resize, image folder and each image's id, size and mtime.

    Raises:
        WSOLInputError: an image file is missing (named).
    """
    digest = hashlib.sha256()
    folder = os.path.abspath(image_dir)
    digest.update(json.dumps([CACHE_VERSION, RESAMPLE, dataset_name, split, int(size), folder]).encode())
    for image_id in image_ids:
        path = os.path.join(folder, image_id)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise WSOLInputError(f"{path}: image file not found") from None
        digest.update(f"\n{image_id}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def cache_path(cache_dir: os.PathLike | str, dataset_name: str, split: str, size: int, key: str) -> Path:
    """Where the cache file of these images lives."""
    return Path(cache_dir) / f"{dataset_name}-{split}-{size}px-{key}.npy"


@dataclass(frozen=True)
class DecodedImages:
    """A complete cache file: ``[N, S, S, 3]`` uint8 pixels, row ``i`` = the split's ``i``-th image id."""

    path: Path
    shape: Tuple[int, int, int, int]

    def open(self) -> np.ndarray:
        """Memory-map the file read-only (call once per process); a damaged file is a one-line error."""
        return open_decoded(self.path, self.shape)


def open_decoded(path: Path, shape: Tuple[int, int, int, int]) -> np.ndarray:
    """Map a cache file and check it holds ``shape`` uint8 pixels.

    Raises:
        WSOLInputError: ``path: decoded-image cache is corrupt (...)`` for a truncated,
            misshaped or unreadable file.
    """
    try:
        pixels = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise WSOLInputError(f"{path}: decoded-image cache is corrupt ({type(error).__name__}: {error}); "
                             f"delete the file to rebuild it") from None
    if pixels.dtype != np.uint8 or tuple(pixels.shape) != tuple(shape):
        raise WSOLInputError(f"{path}: decoded-image cache is corrupt (holds {pixels.dtype} {tuple(pixels.shape)}, "
                             f"expected uint8 {tuple(shape)}); delete the file to rebuild it")
    return pixels


def check_writable(cache_dir: Path) -> None:
    """Create ``cache_dir`` and check a file can be written there.

    Raises:
        WSOLInputError: ``cache_dir: decoded-image cache folder is not writable (...)``.
    """
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(cache_dir)
    except OSError as error:
        raise WSOLInputError(f"{cache_dir}: decoded-image cache folder is not writable "
                             f"({error.strerror or error}); set --data.cache_dir or --data.cache off") from None


def free_bytes(cache_dir: Path) -> int:
    """Free space on the filesystem of ``cache_dir`` (which must exist)."""
    return shutil.disk_usage(cache_dir).free


def ensure_decoded(target: Path, image_paths: Sequence[str], size: int, threads: Optional[int] = None,
                   label: str = "") -> DecodedImages:
    """The cache file ``target`` of ``image_paths`` at ``size``, built once (see the module docstring).

    Args:
        target: the file, from :func:`cache_path`.
        image_paths: the images, in the split's order.
        size: side of the stored squares.
        threads: decoding threads (PIL releases the GIL while decoding and resizing);
            default: the usable CPUs.
        label: what is decoded, for the one line printed when building (``CUB/train``).

    Returns:
        The finished cache.

    Raises:
        WSOLInputError: unwritable folder, unreadable image (named), or a corrupt existing file.
    """
    shape = (len(image_paths), size, size, 3)
    if target.is_file():
        open_decoded(target, shape)
        return DecodedImages(target, shape)
    check_writable(target.parent)
    with open(target.with_name(target.name + ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # no flock on this filesystem: temp file + rename still keep readers safe
            pass
        if not target.is_file():  # another process may have built it while this one waited
            _build(target, image_paths, size, threads or usable_cpus(), label)
    open_decoded(target, shape)
    return DecodedImages(target, shape)


def _build(target: Path, image_paths: Sequence[str], size: int, threads: int, label: str) -> None:
    shape = (len(image_paths), size, size, 3)
    print(f"decoded-image cache: decoding {len(image_paths)} images of {label or target.stem} at {size} px once, "
          f"into {target} ({decoded_nbytes(len(image_paths), size) / 1e6:.0f} MB)", file=sys.stderr, flush=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

        def fill(index: int) -> None:
            pixels[index] = decode_resized(image_paths[index], size)

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(fill, range(len(image_paths))):
                pass
        pixels.flush()
        del pixels
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        raise WSOLInputError(f"{target.parent}: cannot write the decoded-image cache ({error.strerror or error}); "
                             f"set --data.cache_dir or --data.cache off") from None
    finally:
        if tmp.exists():
            tmp.unlink()
