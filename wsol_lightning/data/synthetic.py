"""The embedded default data set ``synthetic``: small WSOL images that need Hide-and-Seek.

Why it exists: every command runs out of the box on a laptop CPU (a default fit
of a few epochs takes about a minute) and still poses the question WSOL tuning
is about, so that searching ``bg_grid_size`` has something real to find.

Design (the classic WSOL failure, built in on purpose). Each image (64x64 by
default) shows one object of class ``c`` on a cluttered background:

* **background**: a low-saturation grey tint with smooth low-frequency noise,
  grain, and random clutter (lines, rectangles, discs) in low-saturation colours;
* **distractors**: up to 3 smaller ellipses covered with a body texture tinted
  for a *random class* and no mark, so body texture is only weakly tied to the
  image's label and texture alone does not say where the object is;
* **object**: an elongated ellipse (major axis 30-80 % of the image side,
  minor/major 0.4-0.75, any rotation), anywhere in the image (fully inside it),
  so a centred box or a centred Gaussian score map scores low (a centred box of
  half the image area reaches IoU 0.5 on ~15 % of images). Its large **body**
  carries a texture (one of five flip-invariant patterns, chosen at random:
  the pattern says nothing) tinted with a hue near ``c / num_classes``
  (Gaussian noise, sigma 0.35 / num_classes), desaturated (0.25-0.45) and shared
  with the distractors, so it is a large, low-contrast, non-unique cue; with
  probability ``body_class_noise`` (default 0) the tint is a random class's;
* **discriminative part**: a small square *mark* (``mark_fraction`` = 5-10 % of
  the object area, at least 3 px) at one end of the major axis (a "head"),
  fully saturated in a class-specific hue that lies between the body hues
  (permuted, so no single colour detector serves both) with a complementary-hue
  core. Nothing else in the image is saturated, so the mark alone gives the
  label with certainty.

What a CAM network then does (the shortcut): the unique saturated mark is
learned within the first epoch, after which it classifies every training image,
the loss is near zero and the body features stop receiving gradient, so plain
CAM fires on the mark only: a blob at one end of the object whose box has low
IoU with the object's box. Hide-and-Seek hides square cells of side
``bg_grid_size`` x crop side with probability 0.5; whenever the mark is hidden
the loss stays high and the body tint is the evidence left, so the network
learns body features and its CAM extends over the object (larger, better boxes).
Cells too large (``bg_grid_size`` near 0.5 or more) hide the whole object half of
the time, turning those images into label noise, and the CAM degrades again.

Measured with the ``small`` backbone (4 conv blocks, 8x8 CAM), 5 epochs, batch
32, SGD (momentum 0.9), on the val split of the default spec, with a quick
MaxBoxAcc (thresholds every 0.02, all contours), MaxBoxAccV2 (MaxBoxAcc@IoU50):

================  ============  ============  ============  ============
``bg_grid_size``  0 (plain)     0.125         0.25          0.5
lr 0.2, seed 0    35.2 (15.2)   36.9 (18.0)   40.5 (28.0)   38.8 (24.4)
lr 0.2, seed 1    36.8 (18.0)                 39.7 (24.4)
lr 0.02, seed 0   37.9 (18.8)                 41.7 (29.6)
================  ============  ============  ============  ============

(val top-1: ~100 % plain, ~89-94 % at 0.25, 88 % at 0.5.) The gain comes from the
medium and large objects (IoU50 hits in the largest third: 35-40 % plain, 55-58 %
HaS 0.25).
Small thin objects stay hard for any method at that CAM resolution.

Ground truth: the tight inclusive box of the object mask (``localization.txt``,
box format) for every split, and the object mask itself (``mask_localization.txt``
with masks under ``masks/synthetic/``) for ``val`` and ``test``, so the same
reader serves this data as CUB/ILSVRC (boxes) and OpenImages (masks).

Layout, under the folder returned by :func:`ensure_synthetic_dataset`
(``<data_root>/synthetic-<key>``, the key a hash of :data:`GENERATOR_VERSION`
and the :class:`SyntheticSpec`)::

    synthetic/<split>/<index>.png            images (image id = "<split>/<index>.png")
    metadata/synthetic/<split>/*.txt          wsolevaluation metadata
    masks/synthetic/<split>/<index>.png       object masks (val, test), 0/255
    synthetic.json                            spec, version, per-channel mean/std of train

Generation is deterministic (one ``numpy`` generator per image seeded by
``(seed, split, index)``, OpenCV drawing and PNG encoding), takes a couple of
seconds for the default sizes, and happens once: the data are written to a
temporary folder and renamed into place atomically, so processes racing to
create it (DDP ranks, tuning workers) are safe: the loser discards its copy.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

from wsol_lightning.errors import WSOLInputError

#: Bump when the drawing changes: it is part of the cache key.
GENERATOR_VERSION = 4

DATASET_NAME = "synthetic"
STATS_FILE = "synthetic.json"
SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_NUM_PATTERNS = 5


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic data (all part of the cache key).

    Attributes:
        num_classes: number of object classes (>= 2).
        image_size: side of the square images in pixels (>= 32).
        num_train, num_val, num_test: images per split (>= 1 each).
        seed: base seed of the generator.
        object_size: range of the object's major axis as a fraction of the side.
        object_aspect: range of the object's minor / major axis ratio.
        mark_fraction: range of the mark's area as a fraction of the object's area.
        body_class_noise: probability that an object's body is drawn from a random class.
        max_distractors: distractors per image are drawn from 1..max_distractors (0: none).
    """

    num_classes: int = 5
    image_size: int = 64
    num_train: int = 1200
    num_val: int = 250
    num_test: int = 250
    seed: int = 0
    object_size: Tuple[float, float] = (0.3, 0.8)
    object_aspect: Tuple[float, float] = (0.4, 0.75)
    mark_fraction: Tuple[float, float] = (0.05, 0.10)
    body_class_noise: float = 0.0
    max_distractors: int = 3

    def __post_init__(self) -> None:
        checks = [
            (self.num_classes >= 2, "num_classes must be >= 2"),
            (self.image_size >= 32, "image_size must be >= 32"),
            (min(self.num_train, self.num_val, self.num_test) >= 1, "every split needs >= 1 image"),
            (0.05 <= self.object_size[0] <= self.object_size[1] <= 0.95, "object_size must be within [0.05, 0.95]"),
            (0.1 <= self.object_aspect[0] <= self.object_aspect[1] <= 1.0, "object_aspect must be within [0.1, 1]"),
            (0.0 < self.mark_fraction[0] <= self.mark_fraction[1] <= 0.5, "mark_fraction must be within (0, 0.5]"),
            (0.0 <= self.body_class_noise <= 1.0, "body_class_noise must be within [0, 1]"),
            (self.max_distractors >= 0, "max_distractors must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise WSOLInputError(f"synthetic data: {message} (got {self})")

    def split_size(self, split: str) -> int:
        """Number of images of ``split``."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def key(self) -> str:
        """Hash of the generator version and every parameter (names the cache folder)."""
        payload = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- drawing
def _hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """HSV (in [0, 1], hue wrapped) to an RGB float32 triple in [0, 1]."""
    return np.asarray(colorsys.hsv_to_rgb(float(hue) % 1.0, float(saturation), float(value)), dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _pattern(kind: int, size: int, period: float, phase: Tuple[float, float]) -> np.ndarray:
    """A flip-invariant binary texture (bool): h-stripes, v-stripes, checker, cross-hatch, dots."""
    yy, xx = _grid(size)
    if kind == 0:
        return np.sin(2 * np.pi * (yy / period + phase[1])) > 0
    if kind == 1:
        return np.sin(2 * np.pi * (xx / period + phase[0])) > 0
    su = np.sin(2 * np.pi * (xx / period + phase[0]))
    sv = np.sin(2 * np.pi * (yy / period + phase[1]))
    if kind == 2:
        return su * sv > 0
    if kind == 3:
        d1 = np.sin(2 * np.pi * ((xx + yy) / period + phase[0]))
        d2 = np.sin(2 * np.pi * ((xx - yy) / period + phase[1]))
        return (d1 > 0.6) | (d2 > 0.6)
    return su * sv > 0.5


def _body_texture(rng: np.random.Generator, texture_class: int, num_classes: int, size: int) -> np.ndarray:
    """RGB texture of a body of ``texture_class`` (weakly class-specific), float32 ``(S, S, 3)``."""
    hue = texture_class / num_classes + rng.normal(0.0, 0.35 / num_classes)
    saturation = rng.uniform(0.25, 0.45)
    value = rng.uniform(0.45, 0.75)
    amplitude = rng.uniform(0.10, 0.22)
    pattern = _pattern(int(rng.integers(_NUM_PATTERNS)), size, rng.uniform(4.0, 7.0), tuple(rng.uniform(0, 1, 2)))
    bright = _hsv(hue, saturation, min(1.0, value + amplitude))
    dark = _hsv(hue, saturation, value - amplitude)
    return np.where(pattern[..., None], bright, dark)


def _mark_hue(label: int, num_classes: int) -> float:
    """Hue of the mark of ``label``: between the body hues, permuted, so no colour detector serves both."""
    return (((2 * label + 1) % num_classes) + 0.5) / num_classes


def _ellipse_mask(size: int, center: Tuple[int, int], axes: Tuple[int, int], angle: float) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(mask, center, axes, angle, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _random_ellipse(rng: np.random.Generator, size: int, diameter: float, aspect: Tuple[float, float] = (0.6, 1.0)
                    ) -> Tuple[Tuple[int, int], Tuple[int, int], float]:
    """Centre, semi-axes and angle of an ellipse of major axis ``diameter`` fully inside the image."""
    major = max(2, int(round(diameter / 2)))
    minor = max(2, int(round(major * rng.uniform(*aspect))))
    angle = rng.uniform(0, 180)
    theta = np.deg2rad(angle)
    half_w = int(np.ceil(np.sqrt((major * np.cos(theta)) ** 2 + (minor * np.sin(theta)) ** 2)))
    half_h = int(np.ceil(np.sqrt((major * np.sin(theta)) ** 2 + (minor * np.cos(theta)) ** 2)))
    cx = int(rng.integers(half_w, max(half_w, size - 1 - half_w) + 1))
    cy = int(rng.integers(half_h, max(half_h, size - 1 - half_h) + 1))
    return (cx, cy), (major, minor), angle


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.uniform(0.3, 0.7)
    tint = _hsv(rng.uniform(), rng.uniform(0, 0.15), 1.0)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = grey * tint
    coarse = rng.normal(0, 1, (5, 5, 1)).astype(np.float32) + 0.3 * rng.normal(0, 1, (5, 5, 3)).astype(np.float32)
    image += 0.08 * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    image += 0.03 * rng.normal(0, 1, (size, size, 3)).astype(np.float32)
    for _ in range(int(rng.integers(3, 8))):
        colour = _hsv(rng.uniform(), rng.uniform(0, 0.15), rng.uniform(0.1, 0.95)).tolist()
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        kind = rng.integers(3)
        if kind == 0:
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(image, p0, p1, colour, int(rng.integers(1, 3)))
        elif kind == 1:
            p1 = tuple(int(v) for v in np.asarray(p0) + rng.integers(3, size // 4, 2))
            cv2.rectangle(image, p0, p1, colour, -1 if rng.uniform() < 0.5 else 1)
        else:
            cv2.circle(image, p0, int(rng.integers(2, size // 8)), colour, -1 if rng.uniform() < 0.5 else 1)
    return image


def render_image(spec: SyntheticSpec, rng: np.random.Generator, label: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image of class ``label``.

    Returns:
        ``(image, mask)``: uint8 RGB ``(S, S, 3)`` and the object's bool mask ``(S, S)``.
    """
    size, classes = spec.image_size, spec.num_classes
    image = _background(rng, size)
    for _ in range(int(rng.integers(1, spec.max_distractors + 1)) if spec.max_distractors else 0):
        center, axes, angle = _random_ellipse(rng, size, rng.uniform(0.12, 0.3) * size)
        region = _ellipse_mask(size, center, axes, angle)
        image[region] = _body_texture(rng, int(rng.integers(classes)), classes, size)[region]

    center, axes, angle = _random_ellipse(rng, size, rng.uniform(*spec.object_size) * size, spec.object_aspect)
    mask = _ellipse_mask(size, center, axes, angle)
    body_class = int(rng.integers(classes)) if rng.uniform() < spec.body_class_noise else label
    image[mask] = _body_texture(rng, body_class, classes, size)[mask]

    side = max(3, int(round(np.sqrt(rng.uniform(*spec.mark_fraction) * mask.sum()))))
    inner = cv2.erode(mask.astype(np.uint8), np.ones((side, side), np.uint8))
    candidates = np.argwhere(inner > 0)
    if len(candidates):
        # the mark sits at one end of the major axis (a "head"), not in the middle of the body
        theta = np.deg2rad(angle) + (np.pi if rng.uniform() < 0.5 else 0.0)
        along = (candidates[:, 1] - center[0]) * np.cos(theta) + (candidates[:, 0] - center[1]) * np.sin(theta)
        candidates = candidates[along >= np.quantile(along, 0.85)]
        cy, cx = candidates[int(rng.integers(len(candidates)))]
    else:
        cy, cx = center[1], center[0]
    y0, x0 = int(cy) - side // 2, int(cx) - side // 2
    mark = np.zeros((size, size), dtype=bool)
    mark[max(0, y0):y0 + side, max(0, x0):x0 + side] = True
    mark &= mask
    hue = _mark_hue(label, classes)
    image[mark] = _hsv(hue, 1.0, 1.0)
    if side >= 4:
        core = side // 2
        cy0, cx0 = y0 + (side - core) // 2, x0 + (side - core) // 2
        core_mask = np.zeros_like(mark)
        core_mask[max(0, cy0):cy0 + core, max(0, cx0):cx0 + core] = True
        image[core_mask & mark] = _hsv(hue + 0.5, 1.0, 1.0)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def _tight_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _write_png(path: Path, array: np.ndarray) -> None:
    data = array[..., ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(data)):
        raise OSError(f"{path}: cannot write PNG")


def _generate(root: Path, spec: SyntheticSpec) -> Dict[str, object]:
    """Write every split under ``root``; returns the stats (mean/std of train, timings)."""
    start = time.perf_counter()
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    for split in SPLITS:
        image_dir = root / DATASET_NAME / split
        meta_dir = root / "metadata" / DATASET_NAME / split
        mask_dir = root / "masks" / DATASET_NAME / split
        image_dir.mkdir(parents=True)
        meta_dir.mkdir(parents=True)
        with_masks = split != "train"
        if with_masks:
            mask_dir.mkdir(parents=True)
        ids: List[str] = []
        labels: List[str] = []
        sizes: List[str] = []
        boxes: List[str] = []
        masks: List[str] = []
        for index in range(spec.split_size(split)):
            rng = np.random.default_rng([spec.seed, _SPLIT_CODES[split], index])
            label = index % spec.num_classes
            image, mask = render_image(spec, rng, label)
            image_id = f"{split}/{index:05d}.png"
            _write_png(image_dir / f"{index:05d}.png", image)
            ids.append(image_id)
            labels.append(f"{image_id},{label}")
            sizes.append(f"{image_id},{spec.image_size},{spec.image_size}")
            boxes.append(image_id + "," + ",".join(str(v) for v in _tight_box(mask)))
            if with_masks:
                mask_id = f"{split}/{index:05d}.png"
                _write_png(mask_dir / f"{index:05d}.png", mask.astype(np.uint8) * 255)
                masks.append(f"{image_id},{mask_id},")
            if split == "train":
                pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
                channel_sum += pixels.sum(0)
                channel_sq += (pixels ** 2).sum(0)
        for name, lines in (("image_ids.txt", ids), ("class_labels.txt", labels), ("image_sizes.txt", sizes),
                            ("localization.txt", boxes), ("mask_localization.txt", masks if with_masks else None)):
            if lines is not None:
                (meta_dir / name).write_text("\n".join(lines) + "\n")
    count = spec.num_train * spec.image_size ** 2
    mean = channel_sum / count
    std = np.sqrt(np.maximum(channel_sq / count - mean ** 2, 1e-12))
    return {
        "generator_version": GENERATOR_VERSION,
        "key": spec.key(),
        "spec": dataclasses.asdict(spec),
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "generation_seconds": round(time.perf_counter() - start, 3),
    }


def synthetic_root(data_root: os.PathLike | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Folder that holds (or will hold) the data of ``spec`` under ``data_root``."""
    return Path(data_root) / f"{DATASET_NAME}-{spec.key()}"


def ensure_synthetic_dataset(data_root: os.PathLike | str, spec: SyntheticSpec = SyntheticSpec()) -> Path:
    """Generate the synthetic data of ``spec`` once and return its root folder.

    The returned folder is a data root in the benchmark layout: images under
    ``<root>/synthetic``, metadata under ``<root>/metadata/synthetic``, masks
    under ``<root>/masks/synthetic`` and :data:`STATS_FILE`. A second call (or
    another process) reuses it without regenerating.
    """
    final = synthetic_root(data_root, spec)
    if (final / STATS_FILE).is_file():
        return final
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WSOLInputError(f"{parent}: cannot create the data folder ({error.strerror})") from None
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    try:
        stats = _generate(tmp, spec)
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / STATS_FILE).is_file():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def synthetic_stats(root: os.PathLike | str) -> Dict[str, object]:
    """The ``synthetic.json`` of a generated root (spec, mean, std, generation time)."""
    path = Path(root) / STATS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WSOLInputError(f"{path}: cannot read synthetic data statistics ({error})") from None


def synthetic_normalization(root: os.PathLike | str) -> Tuple[Tuple[float, float, float], Tuple[float, float, float]]:
    """``(mean, std)`` per RGB channel of the train images of a generated root."""
    stats = synthetic_stats(root)
    return tuple(stats["mean"]), tuple(stats["std"])  # type: ignore[return-value]
