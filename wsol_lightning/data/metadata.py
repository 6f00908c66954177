"""Read and validate one split of wsolevaluation-style metadata.

Layout (Choe et al., CVPR 2020), one folder per split
``<metadata_root>/<dataset_name>/<split>/``:

* ``image_ids.txt``: one image id (a path relative to ``<data_root>/<dataset_name>``) per line;
* ``class_labels.txt``: ``image_id,class_index``;
* ``image_sizes.txt``: ``image_id,width,height`` (empty for OpenImages);
* ``localization.txt``: for box datasets (CUB, ILSVRC, synthetic) ``image_id,x0,y0,x1,y1``
  in original pixels, one line per box; for OpenImages ``image_id,mask_path,ignore_path``,
  one line per instance mask, the ignore path given on the first line of an image only;
* ``mask_localization.txt`` (optional, an extension of this package used by the
  ``synthetic`` data): masks in OpenImages' line format for a box dataset, so
  one split can be scored with both MaxBoxAccV2 and PxAP.

The ``train`` split only needs labels: there ``image_sizes.txt`` and
``localization.txt`` may be missing or empty (ILSVRC ships them empty); when they
have lines they are validated like any other split. ``val`` and ``test`` must
localize every image.

Every problem raises :class:`MetadataError` with one line ``path:line: what is
wrong`` (no line number for whole-file problems); nothing is dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.metrics.geometry import SCOREMAP_SIZE, resize_box

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"
MASK_LOCALIZATION = "mask_localization.txt"

#: Datasets whose ``localization.txt`` lists masks instead of boxes.
MASK_DATASETS = frozenset({"OpenImages"})

Box = Tuple[int, int, int, int]


class MetadataError(WSOLInputError):
    """A metadata file is missing or wrong; the message is ``path:line: what is wrong``."""


@dataclass(frozen=True)
class Metadata:
    """One validated split. Mappings are keyed by image id; ``image_ids`` keeps file order."""

    dataset_name: str
    split: str
    directory: Path
    image_ids: Tuple[str, ...]
    class_labels: Mapping[str, int] = field(repr=False)
    image_sizes: Mapping[str, Tuple[int, int]] = field(repr=False)
    boxes: Mapping[str, Tuple[Box, ...]] = field(repr=False)
    mask_paths: Mapping[str, Tuple[str, ...]] = field(repr=False)
    ignore_paths: Mapping[str, str] = field(repr=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def has_boxes(self) -> bool:
        """Whether the split has ground-truth boxes."""
        return bool(self.boxes)

    @property
    def has_masks(self) -> bool:
        """Whether the split has ground-truth masks (OpenImages, synthetic)."""
        return bool(self.mask_paths)

    @property
    def num_classes(self) -> int:
        """Largest class index of the split plus one."""
        return max(self.class_labels.values()) + 1

    def resized_boxes(self, image_id: str, size: int = SCOREMAP_SIZE) -> np.ndarray:
        """The image's boxes rescaled to ``size`` x ``size`` as the benchmark does (``int()``).

        Returns:
            int64 array ``(K, 4)`` of inclusive ``(x0, y0, x1, y1)``; ``(0, 4)`` when the
            split has no boxes for the image.
        """
        boxes = self.boxes.get(image_id, ())
        if not boxes:
            return np.zeros((0, 4), dtype=np.int64)
        image_size = self.image_sizes[image_id]
        return np.asarray([resize_box(box, image_size, (size, size)) for box in boxes], dtype=np.int64)


# ----------------------------------------------------------------------------- parsing
def _read_lines(path: Path, required: bool) -> Optional[List[str]]:
    if not path.is_file():
        if required:
            raise MetadataError(f"{path}: metadata file not found")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark (Windows editors) is dropped
    except (OSError, UnicodeDecodeError) as error:
        raise MetadataError(f"{path}: cannot read metadata file ({error.__class__.__name__}: {error})") from None
    return text.splitlines()


def _fields(path: Path, lineno: int, line: str, count: int, layout: str) -> List[str]:
    parts = line.split(",")
    if len(parts) != count:
        if not line.strip():
            raise MetadataError(f"{path}:{lineno}: empty line (expected {layout})")
        raise MetadataError(f"{path}:{lineno}: expected {count} comma-separated fields ({layout}), "
                            f"got {len(parts)}: {line!r}")
    if not parts[0]:
        raise MetadataError(f"{path}:{lineno}: empty image id")
    return parts


def _integer(path: Path, lineno: int, text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MetadataError(f"{path}:{lineno}: {what} is not an integer: {text!r}") from None


class _IdIndex:
    """Image ids of ``image_ids.txt`` with their line numbers, for cross-file checks."""

    def __init__(self, path: Path, lines: List[str]) -> None:
        self.path = path
        self.line_of: Dict[str, int] = {}
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                raise MetadataError(f"{path}:{lineno}: empty line (expected an image id)")
            if "," in line:
                raise MetadataError(f"{path}:{lineno}: image id contains a comma: {line!r}")
            first = self.line_of.setdefault(line, lineno)
            if first != lineno:
                raise MetadataError(f"{path}:{lineno}: duplicate image id {line!r} (first at line {first})")
        if not self.line_of:
            raise MetadataError(f"{path}: empty split (no image ids)")
        self.ids: Tuple[str, ...] = tuple(self.line_of)

    def check_member(self, path: Path, lineno: int, image_id: str) -> None:
        if image_id not in self.line_of:
            raise MetadataError(f"{path}:{lineno}: image id {image_id!r} is not in {self.path}")

    def check_covered(self, seen: Mapping[str, object], path: Path, what: str) -> None:
        if len(seen) == len(self.line_of):
            return
        for image_id, lineno in self.line_of.items():
            if image_id not in seen:
                raise MetadataError(f"{self.path}:{lineno}: image id {image_id!r} has no {what} line in {path}")


def _parse_class_labels(path: Path, lines: List[str], index: _IdIndex) -> Dict[str, int]:
    labels: Dict[str, int] = {}
    first_line: Dict[str, int] = {}
    known = index.line_of
    for lineno, line in enumerate(lines, 1):
        parts = line.split(",")
        if len(parts) != 2 or not parts[0]:
            _fields(path, lineno, line, 2, "image_id,class_index")
        image_id, label_text = parts
        if image_id not in known:
            index.check_member(path, lineno, image_id)
        if image_id in labels:
            raise MetadataError(f"{path}:{lineno}: duplicate image id {image_id!r} "
                                f"(first at line {first_line[image_id]})")
        try:
            label = int(label_text)
        except ValueError:
            _integer(path, lineno, label_text, "class index")
            raise
        if label < 0:
            raise MetadataError(f"{path}:{lineno}: class index is negative: {label}")
        labels[image_id] = label
        first_line[image_id] = lineno
    index.check_covered(labels, path, "class label")
    return labels


def _parse_image_sizes(path: Path, lines: List[str], index: _IdIndex) -> Dict[str, Tuple[int, int]]:
    sizes: Dict[str, Tuple[int, int]] = {}
    first_line: Dict[str, int] = {}
    known = index.line_of
    for lineno, line in enumerate(lines, 1):
        parts = line.split(",")
        if len(parts) != 3 or not parts[0]:
            _fields(path, lineno, line, 3, "image_id,width,height")
        image_id, width_text, height_text = parts
        if image_id not in known:
            index.check_member(path, lineno, image_id)
        if image_id in sizes:
            raise MetadataError(f"{path}:{lineno}: duplicate image id {image_id!r} "
                                f"(first at line {first_line[image_id]})")
        try:
            width, height = int(width_text), int(height_text)
        except ValueError:
            _integer(path, lineno, width_text, "width")
            _integer(path, lineno, height_text, "height")
            raise
        if width <= 0 or height <= 0:
            raise MetadataError(f"{path}:{lineno}: image size must be positive, got {width}x{height}")
        sizes[image_id] = (width, height)
        first_line[image_id] = lineno
    if sizes:
        index.check_covered(sizes, path, "image size")
    return sizes


def _parse_boxes(path: Path, lines: List[str], index: _IdIndex, sizes: Mapping[str, Tuple[int, int]],
                 sizes_path: Path) -> Dict[str, Tuple[Box, ...]]:
    boxes: Dict[str, List[Box]] = {}
    known = index.line_of
    for lineno, line in enumerate(lines, 1):
        parts = line.split(",")
        if len(parts) != 5 or not parts[0]:
            _fields(path, lineno, line, 5, "image_id,x0,y0,x1,y1")
        image_id = parts[0]
        if image_id not in known:
            index.check_member(path, lineno, image_id)
        try:
            x0, y0, x1, y1 = int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4])
        except ValueError:
            for text, name in zip(parts[1:], ("x0", "y0", "x1", "y1")):
                _integer(path, lineno, text, name)
            raise
        if x1 < x0 or y1 < y0:
            raise MetadataError(f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) has x1 < x0 or y1 < y0")
        size = sizes.get(image_id)
        if size is None:
            raise MetadataError(f"{path}:{lineno}: image id {image_id!r} has a box but no line in {sizes_path}")
        width, height = size
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise MetadataError(f"{path}:{lineno}: box ({x0},{y0},{x1},{y1}) is outside the "
                                f"{width}x{height} image")
        boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    index.check_covered(boxes, path, "box")
    return {image_id: tuple(image_boxes) for image_id, image_boxes in boxes.items()}


def _parse_masks(path: Path, lines: List[str], index: _IdIndex) -> Tuple[Dict[str, Tuple[str, ...]], Dict[str, str]]:
    masks: Dict[str, List[str]] = {}
    ignores: Dict[str, str] = {}
    for lineno, line in enumerate(lines, 1):
        image_id, mask_path, ignore_path = _fields(path, lineno, line, 3, "image_id,mask_path,ignore_path")
        index.check_member(path, lineno, image_id)
        if not mask_path:
            raise MetadataError(f"{path}:{lineno}: empty mask path")
        if image_id in masks:
            if ignore_path:
                raise MetadataError(f"{path}:{lineno}: ignore path given again for {image_id!r} "
                                    f"(only its first mask line may name one)")
            masks[image_id].append(mask_path)
        else:
            masks[image_id] = [mask_path]
            ignores[image_id] = ignore_path
    index.check_covered(masks, path, "mask")
    return {image_id: tuple(paths) for image_id, paths in masks.items()}, ignores


def load_metadata(metadata_root: os.PathLike | str, dataset_name: str, split: str) -> Metadata:
    """Parse and validate ``<metadata_root>/<dataset_name>/<split>/``.

    Args:
        metadata_root: folder holding one sub-folder per dataset.
        dataset_name: ``CUB``, ``ILSVRC``, ``OpenImages`` (masks) or ``synthetic``.
        split: ``train``, ``val`` or ``test``.

    Raises:
        MetadataError: one line naming the file (and line) at fault.
    """
    directory = Path(metadata_root) / dataset_name / split
    if not directory.is_dir():
        raise MetadataError(f"{directory}: metadata folder not found (expected {IMAGE_IDS}, {CLASS_LABELS}, "
                            f"{IMAGE_SIZES}, {LOCALIZATION})")
    needs_localization = split != "train"
    is_mask_dataset = dataset_name in MASK_DATASETS

    ids_path = directory / IMAGE_IDS
    index = _IdIndex(ids_path, _read_lines(ids_path, required=True) or [])

    labels_path = directory / CLASS_LABELS
    labels = _parse_class_labels(labels_path, _read_lines(labels_path, required=True) or [], index)

    sizes_path = directory / IMAGE_SIZES
    sizes_lines = _read_lines(sizes_path, required=needs_localization) or []
    sizes = _parse_image_sizes(sizes_path, sizes_lines, index)

    loc_path = directory / LOCALIZATION
    loc_lines = _read_lines(loc_path, required=needs_localization) or []
    if needs_localization and not loc_lines:
        raise MetadataError(f"{loc_path}: no localization lines (every {split} image needs a "
                            f"{'mask' if is_mask_dataset else 'box'})")
    boxes: Dict[str, Tuple[Box, ...]] = {}
    masks: Dict[str, Tuple[str, ...]] = {}
    ignores: Dict[str, str] = {}
    if loc_lines:
        if is_mask_dataset:
            masks, ignores = _parse_masks(loc_path, loc_lines, index)
        else:
            if not sizes:
                raise MetadataError(f"{sizes_path}: no image sizes, needed to check and rescale the boxes "
                                    f"of {loc_path}")
            boxes = _parse_boxes(loc_path, loc_lines, index, sizes, sizes_path)

    extra_path = directory / MASK_LOCALIZATION
    extra_lines = _read_lines(extra_path, required=False)
    if extra_lines is not None:
        if is_mask_dataset:
            raise MetadataError(f"{extra_path}: {dataset_name} already lists masks in {LOCALIZATION}")
        if extra_lines:
            masks, ignores = _parse_masks(extra_path, extra_lines, index)

    return Metadata(dataset_name=dataset_name, split=split, directory=directory, image_ids=index.ids,
                    class_labels=labels, image_sizes=sizes, boxes=boxes, mask_paths=masks, ignore_paths=ignores)
