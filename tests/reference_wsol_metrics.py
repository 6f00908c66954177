"""A straightforward, slow transcription of wsolevaluation's published evaluation, for parity tests.

One ``cv2.threshold`` + ``cv2.findContours`` per map and threshold, one
``cv2.boundingRect`` and ``cv2.contourArea`` per contour, Python loops: obviously
the published algorithm, and nothing shared with the package's kernel.
"""

import cv2
import numpy as np


def boxes_at_threshold(scoremap, threshold, multi_contour_eval):
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    _, binary = cv2.threshold(src=image, thresh=int(threshold * np.max(image)), maxval=255, type=cv2.THRESH_BINARY)
    contours = cv2.findContours(image=binary, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return [[0, 0, 0, 0]]
    if not multi_contour_eval:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return boxes


def iou(a, b):
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def max_box_acc(scoremaps, gt_boxes_list, interval, multi_contour_eval, iou_thresholds):
    """Per IoU threshold, the best-threshold accuracy (%), as BoxEvaluator.compute."""
    thresholds = np.arange(0, 1, interval)
    correct = {k: np.zeros(len(thresholds)) for k in iou_thresholds}
    for scoremap, gt_boxes in zip(scoremaps, gt_boxes_list):
        for index, threshold in enumerate(thresholds):
            best = max(iou(box, gt) for box in boxes_at_threshold(scoremap, threshold, multi_contour_eval)
                       for gt in gt_boxes)
            for k in iou_thresholds:
                if best >= k / 100:
                    correct[k][index] += 1
    return [float((correct[k] * 100 / len(scoremaps)).max()) for k in iou_thresholds]


def pxap(scoremaps, masks, interval):
    thresholds = np.arange(0, 1, interval)
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    true_hist = np.zeros(len(edges) - 1)
    false_hist = np.zeros(len(edges) - 1)
    for scoremap, mask in zip(scoremaps, masks):
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


def random_scoremaps(count, seed, size=224):
    """Multimodal, ring-shaped, noisy and flat maps, float32 and float64, with random GT boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    maps, boxes = [], []
    for index in range(count):
        kind = index % 5
        if kind == 4 and index % 10 == 4:
            scoremap = np.zeros((size, size))
        elif kind == 3:  # noisy early-epoch map
            scoremap = cv2.GaussianBlur(rng.random((size, size)), (0, 0), rng.uniform(0.5, 2.0))
        else:
            scoremap = np.zeros((size, size))
            for _ in range(rng.integers(1, 5)):
                cx, cy = rng.uniform(0, size, 2)
                sigma = rng.uniform(5, 50)
                bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
                if kind == 2:  # ring: thresholded regions have holes
                    radius = rng.uniform(10, 60)
                    bump = np.exp(-((np.hypot(xx - cx, yy - cy) - radius) ** 2) / (2 * (sigma / 4) ** 2))
                scoremap += rng.uniform(0.3, 1.0) * bump
        if scoremap.max() > scoremap.min():
            scoremap = (scoremap - scoremap.min()) / (scoremap.max() - scoremap.min())
        maps.append(scoremap.astype(np.float32 if index % 2 else np.float64))
        gt = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, size - 10, 2)
            x1, y1 = rng.integers(x0 + 1, size), rng.integers(y0 + 1, size)
            gt.append([int(x0), int(y0), int(x1), int(y1)])
        boxes.append(np.array(gt))
    return maps, boxes
