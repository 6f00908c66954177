"""LightningDataModule of the WSOL benchmarks and of the embedded ``synthetic`` data.

Every constructor argument is a ``--data.*`` flag of the CLI (LightningCLI reads
the signature). Paths follow wsolevaluation: images at
``<data_root>/<dataset_name>/<image_id>``, metadata at
``<metadata_root>/<dataset_name>/<split>/``, masks at
``<mask_root>/<dataset_name>/<mask_path>`` (``OpenImages``).

``dataset_name=synthetic`` (the default) needs no download: the data are
generated once under ``<data_root>/synthetic-<key>/`` (see
:mod:`wsol_lightning.data.synthetic`), and that folder serves as data, metadata
and mask root, so ``--data.metadata_root`` / ``--data.mask_root`` are refused with it.

Splits: ``train`` (labels only), ``val`` (the benchmark's train-fullsup, used for
model selection and tuning) and ``test``. Flags are checked at construction and
metadata in :meth:`setup`, each problem as one line naming the flag or file.

Input pipeline. Loaders only decode and resize: training batches are uint8
``[B, R, R, 3]`` at ``resize_size``; :meth:`WSOLDataModule.on_after_batch_transfer`
crops, flips and normalizes them on the training device (the same distribution
as wsolevaluation's torchvision transforms, see :mod:`wsol_lightning.data.images`).
Evaluation batches are float32 ``[B, 3, E, E]``, normalized in the loader.

Decoded-image cache (``--data.cache``, :mod:`wsol_lightning.data.cache`): each
split's images are decoded and resized once (train at ``resize_size``, val/test
at ``eval_size``; uint8) into ``<cache_dir>/<dataset>-<split>-<S>px-<key>.npy``,
which every later epoch, trial, worker and DDP rank memory-maps. ``auto`` (the
default) caches a split while the run's cached splits total at most
``--data.cache_max_gb`` (default: half the RAM, so they stay in the page cache)
and fit on the cache's disk, and streams (decodes every read) otherwise or when
the folder is not writable, saying so in one line; ``on`` always caches (an
unwritable folder or a full disk is an error); ``off`` always streams.
Where it stops paying: the cache costs one decode pass up front (what the first
epoch would do anyway) and ``N x S x S x 3`` bytes: CUB is 5994 x 256^2 x 3 = 1.2 GB
for train plus 0.9 GB for test at 224, the default synthetic data 25 MB; it pays
from the second epoch or trial on. ILSVRC's train split is 1.28M x 256^2 x 3 =
252 GB (235 GiB): larger than half the RAM of most machines, so it streams (give
it ``--data.num_workers`` and cores, or a GPU decoder), while its test split
(50k x 224^2 x 3 = 7.5 GB) and val split are cached. A cache bigger than RAM would turn every
read into a random disk read, which is why the budget is RAM, not disk.

Workers (``--data.num_workers auto``): 0 on CPU (decoding the default 64 px PNGs
costs ~0.5 ms an image against ~4 ms of training step, and workers only take
cores from the step: measured faster with 0 on 2 cores); on a GPU, one per
usable CPU per device minus one for the training process (at most 4 when the
split is cached, where a worker only copies rows). Pinned memory when the
trainer runs on a CUDA device; workers persist across epochs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from wsol_lightning.data.cache import (DecodedImages, cache_path, check_writable, content_key, decoded_nbytes,
                                       default_budget_bytes, ensure_decoded, free_bytes)
from wsol_lightning.data.datasets import IMAGENET_MEAN, IMAGENET_STD, WSOLDataset, collate
from wsol_lightning.data.images import random_crop_flip_normalize
from wsol_lightning.data.metadata import Metadata, load_metadata
from wsol_lightning.data.synthetic import DATASET_NAME as SYNTHETIC, SyntheticSpec, ensure_synthetic_dataset, \
    synthetic_normalization
from wsol_lightning.errors import WSOLInputError
from wsol_lightning.machine import usable_cpus

DATASET_NAMES = ("CUB", "ILSVRC", "OpenImages", "synthetic")
DatasetName = Literal["CUB", "ILSVRC", "OpenImages", "synthetic"]
CacheMode = Literal["auto", "on", "off"]
CACHE_MODES = ("auto", "on", "off")

#: (resize, crop, eval) sizes when the flags are left out.
DEFAULT_SIZES = {SYNTHETIC: (72, 64, 64), "real": (256, 224, 224)}

Normalization = Tuple[Tuple[float, float, float], Tuple[float, float, float]]


def _flag(name: str) -> str:
    return f"--data.{name}"


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise WSOLInputError(f"{_flag(name)}={value!r} must be an integer >= {low}")


class WSOLDataModule(LightningDataModule):
    """Train/val/test loaders of CUB, ILSVRC, OpenImages or the embedded synthetic data.

    Args:
        dataset_name: ``CUB``, ``ILSVRC``, ``OpenImages`` or ``synthetic`` (generated, default).
        data_root: images are at ``<data_root>/<dataset_name>/<image_id>``; for synthetic,
            where the generated data are cached.
        metadata_root: metadata folder (default ``<data_root>/metadata``); not for synthetic.
        mask_root: masks are at ``<mask_root>/<dataset_name>/`` (default ``data_root``); not for synthetic.
        batch_size: images per batch (per device).
        num_workers: loader worker processes; ``auto`` (default): 0 when training on CPU
            (the step needs the cores; measured faster with 0 on the default data), on a
            GPU the usable CPUs per device minus one (at most 4 for a cached split).
        cache: decoded-image cache, ``auto`` (default: cache each split while the run's
            cached splits fit in ``cache_max_gb`` and on disk, else stream), ``on`` or ``off``.
        cache_dir: folder of the cache files (default ``<data_root>/decoded-cache``).
        cache_max_gb: budget of ``cache=auto`` in GB (default: half of this machine's RAM).
        resize_size: training images are resized to this square (default 72 synthetic, 256 otherwise).
        crop_size: then randomly cropped to this square (default 64 synthetic, 224 otherwise).
        eval_size: evaluation images are resized to this square (default 64 synthetic, 224 otherwise).
        synthetic_num_train: synthetic training images.
        synthetic_num_val: synthetic validation images (boxes and masks).
        synthetic_num_test: synthetic test images (boxes and masks).
    """

    def __init__(
        self,
        dataset_name: DatasetName = "synthetic",
        data_root: str = "data",
        metadata_root: Optional[str] = None,
        mask_root: Optional[str] = None,
        batch_size: int = 32,
        num_workers: Union[int, Literal["auto"]] = "auto",
        cache: CacheMode = "auto",
        cache_dir: Optional[str] = None,
        cache_max_gb: Optional[float] = None,
        resize_size: Optional[int] = None,
        crop_size: Optional[int] = None,
        eval_size: Optional[int] = None,
        synthetic_num_train: int = 1200,
        synthetic_num_val: int = 500,
        synthetic_num_test: int = 500,
    ) -> None:
        super().__init__()
        if dataset_name not in DATASET_NAMES:
            raise WSOLInputError(f"{_flag('dataset_name')}={dataset_name!r} must be one of {', '.join(DATASET_NAMES)}")
        _check_int("batch_size", batch_size, 1)
        if num_workers != "auto" and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                      or num_workers < 0):
            raise WSOLInputError(f"{_flag('num_workers')}={num_workers!r} must be an integer >= 0 or auto")
        if cache not in CACHE_MODES:
            raise WSOLInputError(f"{_flag('cache')}={cache!r} must be one of {', '.join(CACHE_MODES)}")
        if cache_max_gb is not None and (isinstance(cache_max_gb, bool) or not isinstance(cache_max_gb, (int, float))
                                         or not cache_max_gb > 0):
            raise WSOLInputError(f"{_flag('cache_max_gb')}={cache_max_gb!r} must be a number > 0")
        for name, value in (("resize_size", resize_size), ("crop_size", crop_size), ("eval_size", eval_size)):
            if value is not None:
                _check_int(name, value, 8)
        for name, value in (("synthetic_num_train", synthetic_num_train), ("synthetic_num_val", synthetic_num_val),
                            ("synthetic_num_test", synthetic_num_test)):
            _check_int(name, value, 1)
        self.is_synthetic = dataset_name == SYNTHETIC
        if self.is_synthetic:
            for name, value in (("metadata_root", metadata_root), ("mask_root", mask_root)):
                if value is not None:
                    raise WSOLInputError(f"{_flag(name)}={value!r} is not used with {_flag('dataset_name')}=synthetic "
                                         f"(its data are generated under {_flag('data_root')})")
        defaults = DEFAULT_SIZES[SYNTHETIC if self.is_synthetic else "real"]
        self.resize_size = defaults[0] if resize_size is None else resize_size
        self.crop_size = defaults[1] if crop_size is None else crop_size
        self.eval_size = defaults[2] if eval_size is None else eval_size
        if self.crop_size > self.resize_size:
            raise WSOLInputError(f"{_flag('crop_size')}={self.crop_size} must not exceed "
                                 f"{_flag('resize_size')}={self.resize_size}")
        self.save_hyperparameters()

        self.dataset_name = dataset_name
        self.data_root = data_root
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache = cache
        self.cache_dir = Path(cache_dir) if cache_dir else Path(data_root) / "decoded-cache"
        self.cache_budget = default_budget_bytes() if cache_max_gb is None else int(cache_max_gb * 1e9)
        self._cached_bytes = 0
        self._normalization: Optional[Normalization] = None
        self.synthetic_spec = SyntheticSpec(num_train=synthetic_num_train, num_val=synthetic_num_val,
                                            num_test=synthetic_num_test) if self.is_synthetic else None
        self._metadata: Dict[str, Metadata] = {}
        self.datasets: Dict[str, WSOLDataset] = {}
        self._synthetic_root: Optional[Path] = None
        self._metadata_root = None if self.is_synthetic else Path(metadata_root or Path(data_root) / "metadata")
        self._mask_root = None if self.is_synthetic else Path(mask_root or data_root)

    # ----------------------------------------------------------------- paths
    def _synthetic(self) -> Path:
        if self._synthetic_root is None:
            self._synthetic_root = ensure_synthetic_dataset(self.data_root, self.synthetic_spec)
        return self._synthetic_root

    @property
    def metadata_root(self) -> Path:
        """Folder holding ``<dataset_name>/<split>/`` metadata."""
        return self._synthetic() / "metadata" if self.is_synthetic else self._metadata_root

    @property
    def image_dir(self) -> Path:
        """Folder the image ids are relative to."""
        return (self._synthetic() if self.is_synthetic else Path(self.data_root)) / self.dataset_name

    @property
    def mask_dir(self) -> Path:
        """Folder the mask paths are relative to."""
        return (self._synthetic() / "masks" if self.is_synthetic else self._mask_root) / self.dataset_name

    def metadata(self, split: str) -> Metadata:
        """The validated metadata of ``split`` (loaded once)."""
        if split not in self._metadata:
            self._metadata[split] = load_metadata(self.metadata_root, self.dataset_name, split)
        return self._metadata[split]

    # ------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of classes (synthetic: from the spec; otherwise from the train labels)."""
        if self.is_synthetic:
            return self.synthetic_spec.num_classes
        return self.metadata("train").num_classes

    @property
    def has_masks(self) -> bool:
        """Whether the val split has masks (PxAP is computed)."""
        return self.is_synthetic or self.metadata("val").has_masks

    @property
    def normalization(self) -> Normalization:
        """``(mean, std)`` per RGB channel used to normalize images."""
        if self._normalization is None:
            self._normalization = synthetic_normalization(self._synthetic()) if self.is_synthetic else \
                (IMAGENET_MEAN, IMAGENET_STD)
        return self._normalization

    # --------------------------------------------------------------- hooks
    def prepare_data(self) -> None:
        """Generate the synthetic data (once, on the first process of each node)."""
        if self.is_synthetic:
            self._synthetic()

    def setup(self, stage: Optional[str] = None) -> None:
        """Load and validate the metadata of the splits ``stage`` needs and check folders, then build datasets.

        Every split's metadata is checked before any image is decoded (a malformed line is reported
        as such, not as the first image the decoded-image cache could not read).
        """
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                  None: ("train", "val", "test")}.get(stage, ("train", "val", "test"))
        splits = [split for split in splits if split not in self.datasets]
        checked = {}
        for split in splits:
            metadata = self.metadata(split)
            image_dir = self.image_dir
            if not image_dir.is_dir():
                raise WSOLInputError(f"{image_dir}: image folder not found (set {_flag('data_root')}; images are "
                                     f"read from <data_root>/{self.dataset_name}/<image_id>)")
            mask_dir = None
            if metadata.has_masks and split != "train":
                mask_dir = self.mask_dir
                if not mask_dir.is_dir():
                    raise WSOLInputError(f"{mask_dir}: mask folder not found (set {_flag('mask_root')}; masks are "
                                         f"read from <mask_root>/{self.dataset_name}/<mask_path>)")
            checked[split] = (metadata, image_dir, mask_dir)
        mean, std = self.normalization
        for split, (metadata, image_dir, mask_dir) in checked.items():
            size = self.resize_size if split == "train" else self.eval_size
            decoded = self._decoded_images(metadata, image_dir, size)
            self.datasets[split] = WSOLDataset(metadata, image_dir, size, (mean, std), mask_dir=mask_dir,
                                               decoded=decoded)

    # ---------------------------------------------------------------- cache
    def _decoded_images(self, metadata: Metadata, image_dir: Path, size: int) -> Optional[DecodedImages]:
        """The split's decoded-image cache, built if needed; ``None`` to stream (see the module docstring)."""
        if self.cache == "off":
            return None
        label = f"{self.dataset_name}/{metadata.split}"
        nbytes = decoded_nbytes(len(metadata), size)
        if self.cache == "auto" and self._cached_bytes + nbytes > self.cache_budget:
            _note(f"decoded-image cache: streaming {label} ({nbytes / 1e9:.1f} GB at {size} px would bring the "
                  f"run's cache over {_flag('cache_max_gb')}={self.cache_budget / 1e9:.1f}; --data.cache on forces it)")
            return None
        target = cache_path(self.cache_dir, self.dataset_name, metadata.split, size,
                            content_key(self.dataset_name, metadata.split, size, image_dir, metadata.image_ids))
        if not target.is_file():
            try:
                check_writable(self.cache_dir)
            except WSOLInputError as error:
                if self.cache == "on":
                    raise
                _note(f"decoded-image cache: streaming {label}: {error}")
                return None
            free = free_bytes(self.cache_dir)
            if free < nbytes:
                message = (f"{self.cache_dir}: {free / 1e9:.1f} GB free, the decoded-image cache of {label} needs "
                           f"{nbytes / 1e9:.1f} GB; set {_flag('cache_dir')} or {_flag('cache')} off")
                if self.cache == "on":
                    raise WSOLInputError(message)
                _note(f"decoded-image cache: streaming {label}: {message}")
                return None
        decoded = ensure_decoded(target, [str(image_dir / image_id) for image_id in metadata.image_ids], size,
                                 label=label)
        self._cached_bytes += nbytes
        return decoded

    # -------------------------------------------------------------- loaders
    def _on_gpu(self) -> Tuple[bool, int]:
        """Whether the batches go to a CUDA device, and how many devices this node trains on."""
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda", max(1, int(trainer.num_devices))
        return torch.cuda.is_available(), max(1, torch.cuda.device_count())

    def loader_workers(self, split: str) -> int:
        """Worker processes of ``split``'s loader: ``--data.num_workers``, or the automatic rule."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        on_gpu, devices = self._on_gpu()
        return auto_num_workers(on_gpu, devices, cached=self.datasets[split].decoded is not None)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        sampler = None
        trainer = self.trainer
        if split != "train" and trainer is not None and trainer.world_size > 1:
            # Lightning's default DistributedSampler pads a split to a multiple of the world size by
            # repeating images, which the metrics would count twice (5 images on 2 ranks scored as 6).
            # Each image once instead; ranks may run one batch fewer, which evaluation allows (DDP syncs
            # buffers on the first no-grad forward only; metric states and top-1 counts are summed).
            # Lightning keeps a DistributedSampler it is given.
            sampler = UnrepeatedDistributedSampler(self.datasets[split], num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        workers = self.loader_workers(split)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._on_gpu()[0],
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------ device transform
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Crop, flip and normalize uint8 training batches on their device (evaluation batches pass as they are)."""
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) \
                and batch["image"].dtype == torch.uint8:
            batch["image"] = random_crop_flip_normalize(batch["image"], self.crop_size, *self.normalization)
        return batch


def auto_num_workers(on_gpu: bool, devices: int, cached: bool, cpus: Optional[int] = None) -> int:
    """The ``--data.num_workers auto`` rule.

    Args:
        on_gpu: the batches go to a CUDA device.
        devices: devices this node trains on (DDP: one training process each).
        cached: the split is read from the decoded-image cache (a worker only copies rows).
        cpus: usable CPUs (default: this process's affinity).

    Returns:
        0 on CPU; on a GPU ``cpus // devices - 1`` (one core left for the training
        process), at least 1, at most 4 for a cached split.
    """
    if not on_gpu:
        return 0
    per_device = max(1, (cpus or usable_cpus()) // max(1, devices))
    workers = max(1, per_device - 1)
    return min(workers, 4) if cached else workers


_NOTES: set = set()


def _note(message: str) -> None:
    """Print an informational line to stderr once per process."""
    if message not in _NOTES:
        _NOTES.add(message)
        print(message, file=sys.stderr, flush=True)
