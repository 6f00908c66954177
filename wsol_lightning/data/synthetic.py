"""The embedded default data set ``synthetic``: a small model of WSOL on CUB.

Why it exists: every command runs out of the box on a laptop CPU (a default fit takes about a
minute) and poses the question WSOL tuning is about, so that searching ``bg_grid_size`` has
something real to find. It is built to reproduce, qualitatively, what happens on CUB with a
pretrained backbone: localization *rises* over the first epochs and then holds; classification
is not solved in the first epoch or two; plain CAM sticks to a small discriminative part;
Hide-and-Seek helps with cells around that part's size and hurts with cells the size of the object.

Design. Each image (64x64 by default) shows one object of class ``c``:

* **background**: a grey tint with smooth low-frequency noise, fine foliage-like noise
  (``background_texture``) and random clutter (lines, rectangles, discs): texture is everywhere,
  so "where is there texture" (what random or barely trained filters detect) does not say where
  the object is, and an untrained network localizes poorly;
* **distractors**: a smaller ellipse (12-30 % of the side) somewhere in the image and a second
  one (25-45 % of the side) centred near the object's rim, so that it touches the object and
  partly disappears under it (a branch, a neighbour), each wearing the body pattern of *another*
  class and no mark. The touching one is what makes localization a matter of *knowing the
  class's pattern*: a map that spreads over "patterned stuff" also covers the neighbour and its
  box is too large, so localization keeps improving while the network learns the patterns;
* **object**: an elongated ellipse (major axis 40-85 % of the side, minor/major 0.4-0.75, any
  rotation, anywhere, fully inside), whose **body** carries the pattern of its class (one of
  five: horizontal stripes, vertical stripes, checks, cross-hatch, dots) in a random, weakly
  saturated hue at a random brightness, contrast, period (4-7 px) and phase. The pattern is the
  only cue the whole body gives, and telling the patterns apart against the textured background
  takes the network several epochs: this is what makes localization rise with training;
* **discriminative part**: with probability ``mark_probability`` (0.9) a small square *mark*
  (5-10 % of the object's area, 5-10 px) at one end of the major axis (a "head"), fully
  saturated in a class-specific hue with a complementary core. Nothing else in the image is
  saturated, so the mark is learned within the first epoch and gives the label at once.

What a CAM network then does (the shortcut). The mark classifies 90 % of the training images
early; their loss falls close to zero and the body pattern is learned from the other 10 % only,
so plain CAM stays on the mark: a blob at one end of the object, whose box has a low IoU with
the object's box. It stays there as a stable property (it is what the network learned), not as
a decay. Hide-and-Seek hides square cells of side ``bg_grid_size`` x crop side, each with
probability 0.5:

* cells of ~0.2-0.3 of the side (13-19 px of the 64 px crop; 45-67 px at CUB's 224) hide the
  mark in about half of the images while most of the body, several cells long, stays visible:
  those images can only be classified by the body pattern, the network learns it, and its CAM
  spreads over the whole object, but not over the touching distractor, whose pattern is another
  class's;
* smaller cells (0.1: 6 px, the mark's size) also hide the mark, but chop every stripe and check
  into pieces of one or two periods, so the visible body no longer shows its pattern clearly and
  little is gained over plain CAM;
* from 0.4 on, a cell is as large as a good part of the object: the object is partly or wholly
  hidden in a growing share of the images, which then teach the background (label noise); at
  0.8-0.9 (a 2x2 grid of cells of 51-58 px) many images lose most of the object, and the
  network localizes worse than with plain CAM.

Measured with fit.py's defaults (small backbone, 8 epochs, lr 0.005 on a cosine, seeds 0-2; val
MaxBoxAccV2 of the last epoch, mean ± std; ``python benchmarks/bench_sweep.py``, 2026-12-02):
0: 55.6 ± 1.6, 0.1: 56.1 ± 2.9, **0.2: 63.8 ± 1.9**, 0.3: 63.5 ± 2.8, 0.4: 62.1 ± 0.9,
0.5: 61.4 ± 6.3, 0.6: 61.3 ± 3.5, 0.7: 57.4 ± 5.1, 0.8: 54.4 ± 3.5, 0.9: 48.9 ± 2.3; test
MaxBoxAccV2 of the tested checkpoint peaks at 0.2 too (64.5 ± 2.6 against 56.5 ± 2.4 for plain
CAM and 52.5 ± 5.9 at 0.9). Curves rise over the epochs at the optimum (best val epoch 6-7 of
0-7) and val top-1 after two epochs is 84-91 %, so classification is not solved at once. The
decline starts at 0.4-0.6 (cells of 26-38 px, half the object's length: the images that lose the
object's middle teach little) and turns into a loss at 0.8-0.9. On CUB with an ImageNet-pretrained
backbone, HaS helps at cells of roughly 0.07-0.25 of the side; here the optimum, 0.2-0.3, sits at
the upper end of that, probably because the mark (5-10 px of 64) is relatively larger than a
bird's head at 224 px (not measured). See the README ("The embedded default data").

Ground truth: the tight inclusive box of the object mask (``localization.txt``, box format) for
every split, and the object mask itself (``mask_localization.txt`` with masks under
``masks/synthetic/``) for ``val`` and ``test``, so the same reader serves this data as CUB/ILSVRC
(boxes) and OpenImages (masks).

Layout, under the folder returned by :func:`ensure_synthetic_dataset`
(``<data_root>/synthetic-<key>``, the key a hash of :data:`GENERATOR_VERSION` and the
:class:`SyntheticSpec`)::

    synthetic/<split>/<index>.png            images (image id = "<split>/<index>.png")
    metadata/synthetic/<split>/*.txt          wsolevaluation metadata
    masks/synthetic/<split>/<index>.png       object masks (val, test), 0/255
    synthetic.json                            spec, version, per-channel mean/std of train

Generation is deterministic (one ``numpy`` generator per image seeded by ``(seed, split,
index)``, OpenCV drawing and PNG encoding), takes a few seconds for the default sizes, and
happens once: the data are written to a temporary folder and renamed into place atomically, so
processes racing to create it (DDP ranks, tuning workers) are safe: the loser discards its copy.
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
GENERATOR_VERSION = 6

DATASET_NAME = "synthetic"
STATS_FILE = "synthetic.json"
SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_NUM_PATTERNS = 5


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic data (all part of the cache key).

    Attributes:
        num_classes: number of object classes, 2 to 5 (one body pattern per class).
        image_size: side of the square images in pixels (>= 32).
        num_train, num_val, num_test: images per split (>= 1 each).
        seed: base seed of the generator.
        object_size: range of the object's major axis as a fraction of the side.
        object_aspect: range of the object's minor / major axis ratio.
        mark_fraction: range of the mark's area as a fraction of the object's area.
        mark_probability: probability that an object carries its mark.
        background_texture: amplitude of the fine, foliage-like noise of the background.
        max_distractors: distractors per image are drawn from 1..max_distractors (0: none).
        touching_distractors: distractors drawn touching the object, partly under it (0: none).
    """

    num_classes: int = 5
    image_size: int = 64
    num_train: int = 1200
    num_val: int = 500
    num_test: int = 500
    seed: int = 0
    object_size: Tuple[float, float] = (0.4, 0.85)
    object_aspect: Tuple[float, float] = (0.4, 0.75)
    mark_fraction: Tuple[float, float] = (0.05, 0.10)
    mark_probability: float = 0.9
    background_texture: float = 0.12
    max_distractors: int = 1
    touching_distractors: int = 1

    def __post_init__(self) -> None:
        checks = [
            (2 <= self.num_classes <= _NUM_PATTERNS, f"num_classes must be within [2, {_NUM_PATTERNS}]"),
            (self.image_size >= 32, "image_size must be >= 32"),
            (min(self.num_train, self.num_val, self.num_test) >= 1, "every split needs >= 1 image"),
            (0.05 <= self.object_size[0] <= self.object_size[1] <= 0.95, "object_size must be within [0.05, 0.95]"),
            (0.1 <= self.object_aspect[0] <= self.object_aspect[1] <= 1.0, "object_aspect must be within [0.1, 1]"),
            (0.0 < self.mark_fraction[0] <= self.mark_fraction[1] <= 0.5, "mark_fraction must be within (0, 0.5]"),
            (0.0 <= self.mark_probability <= 1.0, "mark_probability must be within [0, 1]"),
            (0.0 <= self.background_texture <= 0.5, "background_texture must be within [0, 0.5]"),
            (self.max_distractors >= 0, "max_distractors must be >= 0"),
            (self.touching_distractors >= 0, "touching_distractors must be >= 0"),
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


def _body_texture(rng: np.random.Generator, texture_class: int, size: int) -> np.ndarray:
    """RGB texture of a body of ``texture_class``, float32 ``(S, S, 3)``.

    The class decides the pattern only (stripes, checks, hatching, dots); hue, saturation,
    brightness, contrast, period and phase are random, so a body is recognized by the
    regularity of its pattern, which a network has to learn over several epochs.
    """
    hue = rng.uniform()
    saturation = rng.uniform(0.25, 0.45)
    value = rng.uniform(0.45, 0.75)
    amplitude = rng.uniform(0.10, 0.22)
    pattern = _pattern(texture_class % _NUM_PATTERNS, size, rng.uniform(4.0, 7.0), tuple(rng.uniform(0, 1, 2)))
    bright = _hsv(hue, saturation, min(1.0, value + amplitude))
    dark = _hsv(hue, saturation, value - amplitude)
    return np.where(pattern[..., None], bright, dark)


def _mark_hue(label: int, num_classes: int) -> float:
    """Hue of the mark of ``label``: evenly spaced around the colour circle."""
    return (label + 0.5) / num_classes


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


def _background(rng: np.random.Generator, size: int, texture: float) -> np.ndarray:
    grey = rng.uniform(0.3, 0.7)
    tint = _hsv(rng.uniform(), rng.uniform(0, 0.15), 1.0)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = grey * tint
    coarse = rng.normal(0, 1, (5, 5, 1)).astype(np.float32) + 0.3 * rng.normal(0, 1, (5, 5, 3)).astype(np.float32)
    image += 0.08 * cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    image += 0.03 * rng.normal(0, 1, (size, size, 3)).astype(np.float32)
    if texture > 0:  # foliage-like fine texture: a generic texture detector finds it everywhere
        fine = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 1.2)
        image += texture * (fine / (fine.std() + 1e-6))[..., None]
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
    image = _background(rng, size, spec.background_texture)
    for _ in range(int(rng.integers(1, spec.max_distractors + 1)) if spec.max_distractors else 0):
        center, axes, angle = _random_ellipse(rng, size, rng.uniform(0.12, 0.3) * size)
        region = _ellipse_mask(size, center, axes, angle)
        other = (label + 1 + int(rng.integers(classes - 1))) % classes  # another class's body, no mark
        image[region] = _body_texture(rng, other, size)[region]

    center, axes, angle = _random_ellipse(rng, size, rng.uniform(*spec.object_size) * size, spec.object_aspect)
    mask = _ellipse_mask(size, center, axes, angle)
    for _ in range(spec.touching_distractors):
        # another class's body (25-45 % of the side) centred near the object's rim, partly under it
        diameter = rng.uniform(0.25, 0.45) * size
        direction = rng.uniform(0, 2 * np.pi)
        reach = axes[0] * rng.uniform(0.6, 1.0)
        near = (int(np.clip(center[0] + reach * np.cos(direction), 0, size - 1)),
                int(np.clip(center[1] + reach * np.sin(direction), 0, size - 1)))
        near_axes = (max(2, int(diameter / 2)), max(2, int(diameter / 2 * rng.uniform(0.5, 0.9))))
        region = _ellipse_mask(size, near, near_axes, rng.uniform(0, 180))
        other = (label + 1 + int(rng.integers(classes - 1))) % classes
        image[region] = _body_texture(rng, other, size)[region]
    image[mask] = _body_texture(rng, label, size)[mask]
    if rng.uniform() >= spec.mark_probability:
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask

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
