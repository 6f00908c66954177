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
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Literal, Optional, Tuple

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from wsol_lightning.data.datasets import IMAGENET_MEAN, IMAGENET_STD, WSOLDataset, collate, eval_transform, \
    train_transform
from wsol_lightning.data.metadata import Metadata, load_metadata
from wsol_lightning.data.synthetic import DATASET_NAME as SYNTHETIC, SyntheticSpec, ensure_synthetic_dataset, \
    synthetic_normalization
from wsol_lightning.errors import WSOLInputError

DATASET_NAMES = ("CUB", "ILSVRC", "OpenImages", "synthetic")
DatasetName = Literal["CUB", "ILSVRC", "OpenImages", "synthetic"]

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
        num_workers: loader worker processes (0: load in the main process). The default 0
            was measured best for the synthetic default on 2 CPU cores: decoding a 64 px
            PNG costs ~0.5 ms against ~4 ms of training step per image, and workers only
            take cores from the training step (small backbone, batch 32: 265 img/s with 0
            workers, 245 img/s with 2). Raise it for real data at 224 px or on a GPU.
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
        num_workers: int = 0,
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
        _check_int("num_workers", num_workers, 0)
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
        if self.is_synthetic:
            return synthetic_normalization(self._synthetic())
        return IMAGENET_MEAN, IMAGENET_STD

    # --------------------------------------------------------------- hooks
    def prepare_data(self) -> None:
        """Generate the synthetic data (once, on the first process of each node)."""
        if self.is_synthetic:
            self._synthetic()

    def setup(self, stage: Optional[str] = None) -> None:
        """Load and validate the metadata of the splits ``stage`` needs; check folders."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
                  None: ("train", "val", "test")}.get(stage, ("train", "val", "test"))
        mean, std = self.normalization
        for split in splits:
            if split in self.datasets:
                continue
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
            if split == "train":
                transform = train_transform(self.resize_size, self.crop_size, mean, std)
            else:
                transform = eval_transform(self.eval_size, mean, std)
            self.datasets[split] = WSOLDataset(metadata, image_dir, transform, mask_dir=mask_dir)

    # -------------------------------------------------------------- loaders
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
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)
