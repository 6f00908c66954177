"""A straightforward, slow transcription of wsolevaluation's published evaluation, for parity tests.

One ``cv2.threshold`` + ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` per
map and threshold, one ``cv2.boundingRect`` per contour and ``max(contours,
key=cv2.contourArea)`` for the largest, Python loops over maps and thresholds:
obviously the published algorithm (Choe et al., CVPR 2020), and nothing shared
with the package's kernel. The only liberties: V1 (largest contour) and V2 (every
contour) are read from the same contour search, since the reference computes
both from the same ``RETR_TREE`` output; and thresholds that fall on the same
``cv2.threshold`` level reuse that level's search (same binary image, same boxes).

Its inputs are read here too, from the split's text files and the mask PNGs
(``gt_boxes_from_files``, ``mask_paths_from_files``, ``gt_mask``), so a parity test
also checks the package's box rescaling, mask decoding, resizing and ignore region.
"""

import os

import cv2
import numpy as np


def contour_boxes(scoremap, threshold):
    """``(every contour's box, [the largest contour's box])``; ``[[0, 0, 0, 0]]`` for both without contours."""
    image = _uint8_image(scoremap)
    return _contour_boxes_at(image, int(threshold * np.max(image)))


def _uint8_image(scoremap):
    scoremap = np.asarray(scoremap, dtype=np.float64)  # evaluate_wsol's t2n casts every map to float64
    return np.expand_dims((scoremap * 255).astype(np.uint8), 2)


def _contour_boxes_at(image, level):
    height, width = image.shape[:2]
    _, binary = cv2.threshold(src=image, thresh=level, maxval=255, type=cv2.THRESH_BINARY)
    contours = cv2.findContours(image=binary, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return [[0, 0, 0, 0]], [[0, 0, 0, 0]]

    def box(contour):
        x, y, w, h = cv2.boundingRect(contour)
        return [x, y, min(x + w, width - 1), min(y + h, height - 1)]

    return [box(c) for c in contours], [box(max(contours, key=cv2.contourArea))]


def iou(a, b):
    """Inclusive IoU of two boxes; a non-positive union gives 0 (as calculate_multiple_iou)."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def best_iou(boxes, gt_boxes):
    """Best IoU over a threshold's boxes and the GT boxes (numpy for the many boxes of noisy maps)."""
    a = np.asarray(boxes, dtype=np.int64)[:, None, :]
    b = np.asarray(gt_boxes, dtype=np.int64)[None, :, :]
    inter = (np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
             * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1))
    union = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1) \
        + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1) - inter
    ious = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return float(ious.max())


def best_ious(scoremap, gt_boxes, thresholds):
    """Per threshold, the best IoU of V1 (largest contour) and of V2 (every contour): two lists.

    Thresholds that give the same ``cv2.threshold`` level give the same binary image, so each
    distinct level is searched once (at interval 0.001, 1000 thresholds share at most 256 levels).
    """
    image = _uint8_image(scoremap)
    top = np.max(image)
    at_level = {}
    v1, v2 = [], []
    for threshold in thresholds:
        level = int(threshold * top)
        if level not in at_level:
            every, largest = _contour_boxes_at(image, level)
            at_level[level] = (best_iou(largest, gt_boxes), best_iou(every, gt_boxes))
        v1.append(at_level[level][0])
        v2.append(at_level[level][1])
    return v1, v2


def max_box_acc_both(scoremaps, gt_boxes_list, interval, iou_thresholds):
    """``(V1, V2)``: per IoU threshold, the best-threshold accuracy (%), as BoxEvaluator.compute."""
    thresholds = list(np.arange(0, 1, interval))
    return max_box_acc_from_ious([best_ious(scoremap, gt_boxes, thresholds)
                                  for scoremap, gt_boxes in zip(scoremaps, gt_boxes_list)], iou_thresholds)


def max_box_acc_from_ious(per_map_ious, iou_thresholds):
    """``(V1, V2)`` accuracies from each map's ``best_ious`` lists (what BoxEvaluator accumulates)."""
    count = len(per_map_ious[0][0])
    correct = {mode: {k: np.zeros(count) for k in iou_thresholds} for mode in ("v1", "v2")}
    for map_ious in per_map_ious:
        for mode, ious in zip(("v1", "v2"), map_ious):
            for index, value in enumerate(ious):
                for k in iou_thresholds:
                    if value >= k / 100:
                        correct[mode][k][index] += 1
    return tuple([float((correct[mode][k] * 100. / float(len(per_map_ious))).max()) for k in iou_thresholds]
                 for mode in ("v1", "v2"))


def max_box_acc(scoremaps, gt_boxes_list, interval, multi_contour_eval, iou_thresholds):
    """Per IoU threshold, the best-threshold accuracy (%), V2 if ``multi_contour_eval`` else V1."""
    v1, v2 = max_box_acc_both(scoremaps, gt_boxes_list, interval, iou_thresholds)
    return v2 if multi_contour_eval else v1


def pxap(scoremaps, masks, interval):
    """MaskEvaluator: histograms over thresholds + [1, 2, 3], precision-recall AUC (%)."""
    thresholds = np.arange(0, 1, interval)
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    true_hist = np.zeros(len(edges) - 1)
    false_hist = np.zeros(len(edges) - 1)
    for scoremap, mask in zip(scoremaps, masks):
        scoremap = np.asarray(scoremap, dtype=np.float64)  # t2n
        true_hist += np.histogram(scoremap[mask == 1], bins=edges)[0]
        false_hist += np.histogram(scoremap[mask == 0], bins=edges)[0]
    tp = true_hist[::-1].cumsum()
    fn = true_hist.sum() - tp
    fp = false_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)


def gt_boxes_from_files(metadata_dir, size=224):
    """``{image_id: [[x0, y0, x1, y1], ...]}`` at ``size``, straight from the split's text files.

    wsolevaluation's ``get_image_sizes`` + ``get_bounding_boxes`` + ``resize_bbox``:
    ``int(coord * size / side)``, x by the width, y by the height. Nothing of the package's reader.
    """
    sizes = {}
    with open(os.path.join(metadata_dir, "image_sizes.txt")) as f:
        for line in f.readlines():
            image_id, width, height = line.strip("\n").split(",")
            sizes[image_id] = (int(width), int(height))
    boxes = {}
    with open(os.path.join(metadata_dir, "localization.txt")) as f:
        for line in f.readlines():
            image_id, x0, y0, x1, y1 = line.strip("\n").split(",")
            width, height = sizes[image_id]
            boxes.setdefault(image_id, []).append([int(int(x0) * size / width), int(int(y0) * size / height),
                                                   int(int(x1) * size / width), int(int(y1) * size / height)])
    return boxes


def mask_paths_from_files(metadata_dir, name="localization.txt"):
    """``({image_id: [mask paths]}, {image_id: ignore path})``, as wsolevaluation's ``get_mask_paths``."""
    mask_paths, ignore_paths = {}, {}
    with open(os.path.join(metadata_dir, name)) as f:
        for line in f.readlines():
            image_id, mask_path, ignore_path = line.strip("\n").split(",")
            if image_id in mask_paths:
                mask_paths[image_id].append(mask_path)
            else:
                mask_paths[image_id] = [mask_path]
                ignore_paths[image_id] = ignore_path
    return mask_paths, ignore_paths


def gt_mask(mask_root, mask_paths, ignore_path, size=224):
    """wsolevaluation's ``get_mask``: union of the instance masks (1), ignore box minus it (255), else 0.

    Each PNG is read grayscale, resized nearest-neighbour to ``size`` x ``size`` and taken ``> 0.5``.
    """
    def read(path):
        image = cv2.imread(os.path.join(mask_root, path), cv2.IMREAD_GRAYSCALE)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST) > 0.5

    foreground = np.stack([read(path) for path in mask_paths], axis=0).any(axis=0)
    ignore = np.logical_and(read(ignore_path), np.logical_not(foreground)) if ignore_path else \
        np.zeros_like(foreground)
    return foreground.astype(np.uint8) + 255 * ignore.astype(np.uint8)


KINDS = ("multimodal", "ring", "plateaus", "noisy", "flat")


def random_scoremaps(count, seed, size=224, kinds=KINDS):
    """Score maps of the given kinds in turn, float32 and float64 alternately, with 1-3 random GT boxes each.

    * multimodal: 1-4 Gaussian bumps of random heights (CAM-like);
    * speckled (not in ``KINDS``): multimodal plus uniform pixel noise of up to 5-15 % of the range
      (hundreds of small contours and holes on the bumps' slopes);
    * ring: ring-shaped bumps, so thresholded regions have holes (and islands in them);
    * plateaus: identical flat squares and rings at a few values (equal contour
      areas: V1's first-in-OpenCV-order tie-break decides);
    * noisy: blurred uniform noise (an early epoch: hundreds to thousands of contours);
    * flat: all zeros or a constant (no contour / one full-map contour).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    maps, boxes = [], []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        scoremap = np.zeros((size, size))
        if kind == "flat":
            scoremap[:] = 0.0 if index % 2 else rng.uniform(0.1, 1.0)
        elif kind == "noisy":
            scoremap = cv2.GaussianBlur(rng.random((size, size)), (0, 0), rng.uniform(0.5, 2.0))
        elif kind == "plateaus":
            side = int(rng.integers(3, 30))
            value = rng.choice([0.4, 0.7, 1.0])
            for _ in range(rng.integers(2, 6)):
                x, y = rng.integers(0, size - side, 2)
                scoremap[y:y + side, x:x + side] = np.maximum(scoremap[y:y + side, x:x + side], value)
                if side > 6 and rng.random() < 0.5:
                    scoremap[y + 2:y + side - 2, x + 2:x + side - 2] = 0.2  # a hole
        else:
            for _ in range(rng.integers(1, 5)):
                cx, cy = rng.uniform(0, size, 2)
                sigma = rng.uniform(5, 50)
                if kind == "ring":
                    radius = rng.uniform(10, 60)
                    bump = np.exp(-((np.hypot(xx - cx, yy - cy) - radius) ** 2) / (2 * (sigma / 4) ** 2))
                else:
                    bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
                scoremap += rng.uniform(0.3, 1.0) * bump
            if kind == "speckled":
                scoremap = scoremap / scoremap.max() + rng.uniform(0, rng.uniform(0.05, 0.15), scoremap.shape)
        if scoremap.max() > scoremap.min() and kind != "plateaus":
            scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        maps.append(scoremap.astype(np.float32 if index % 2 else np.float64))
        gt = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, size - 10, 2)
            x1, y1 = rng.integers(x0 + 1, size), rng.integers(y0 + 1, size)
            gt.append([int(x0), int(y0), int(x1), int(y1)])
        boxes.append(np.array(gt))
    return maps, boxes
