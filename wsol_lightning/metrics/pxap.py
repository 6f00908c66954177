"""PxAP: area under the pixel precision-recall curve, as wsolevaluation's MaskEvaluator.

Scores of GT-foreground and GT-background pixels (ignored pixels, 255, left out)
are histogrammed over the bin edges ``thresholds + [1, 2, 3]``; the curves are
cumulative sums from the top bin down; AUC = ``sum(precision[1:] * diff(recall))``
over the points with a prediction, in percent.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def bin_edges(thresholds: np.ndarray) -> np.ndarray:
    """The reference's histogram edges: the thresholds, then 1, 2, 3."""
    return np.append(thresholds, [1.0, 2.0, 3.0])


def score_histograms(scoremap: np.ndarray, gt_mask: np.ndarray, edges: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Histograms of the scores of foreground (mask 1) and background (mask 0) pixels.

    Scores are taken in float64, as ``evaluate_wsol`` (``t2n``) hands them to the evaluator.
    """
    scoremap = np.asarray(scoremap, dtype=np.float64)
    foreground, _ = np.histogram(scoremap[gt_mask == 1], bins=edges)
    background, _ = np.histogram(scoremap[gt_mask == 0], bins=edges)
    return foreground.astype(np.float64), background.astype(np.float64)


def pxap_from_histograms(foreground: np.ndarray, background: np.ndarray) -> float:
    """PxAP (%) from accumulated foreground / background score histograms."""
    true_positive = foreground[::-1].cumsum()
    false_negative = foreground.sum() - true_positive
    false_positive = background[::-1].cumsum()
    if ((true_positive + false_negative) <= 0).all():
        raise ValueError("PxAP: no foreground pixel in the evaluated masks")
    predicted = true_positive + false_positive
    valid = predicted != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = true_positive / predicted
        recall = true_positive / (true_positive + false_negative)
    return float((precision[1:] * np.diff(recall))[valid[1:]].sum() * 100)
