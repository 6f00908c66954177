"""CAM -> 224x224 score map, as wsolevaluation (cv2 bicubic resize + min-max normalize)."""

import cv2
import numpy as np
import torch

from wsol_lightning.models.scoremaps import cams_to_scoremaps


def _reference(cam: np.ndarray) -> np.ndarray:
    resized = cv2.resize(cam, (224, 224), interpolation=cv2.INTER_CUBIC)
    if np.isnan(resized).any() or resized.min() == resized.max():
        return np.zeros_like(resized)
    resized = resized - resized.min()
    return resized / resized.max()


def test_matches_opencv_bicubic_and_min_max():
    rng = np.random.default_rng(0)
    for side in (7, 8, 14, 28):
        cams = rng.normal(size=(4, side, side)).astype(np.float32)
        maps = cams_to_scoremaps(torch.from_numpy(cams)).numpy()
        assert maps.shape == (4, 224, 224)
        for cam, scoremap in zip(cams, maps):
            np.testing.assert_allclose(scoremap, _reference(cam), atol=5e-6)
            assert scoremap.min() == 0.0 and scoremap.max() == 1.0


def test_flat_and_nan_maps_become_zeros():
    cams = torch.zeros(3, 8, 8)
    # cams[1] stays all zeros: flat after resizing (a constant 3.0 is not: bicubic adds 1e-7 noise, in OpenCV too)
    cams[2, 4, 4] = float("nan")
    cams[0] = torch.arange(64.0).reshape(8, 8)
    maps = cams_to_scoremaps(cams)
    assert torch.count_nonzero(maps[1]) == 0 and torch.count_nonzero(maps[2]) == 0
    assert maps[0].max() == 1.0
