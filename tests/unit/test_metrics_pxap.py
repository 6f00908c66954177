"""PxAP equals the reference's MaskEvaluator arithmetic, on random maps and real OpenImages masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reference_wsol_metrics import pxap, random_scoremaps
from wsol_lightning.metrics.localization import MaskLocalization
from wsol_lightning.metrics.masks import load_gt_mask

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "wsolevaluation"


@pytest.mark.parametrize("interval", [0.01, 0.001])
def test_pxap_equals_reference(interval):
    maps, _ = random_scoremaps(100, 4)
    rng = np.random.default_rng(0)
    masks = []
    for scoremap in maps:
        mask = (scoremap > rng.uniform(0.2, 0.8)).astype(np.uint8)
        mask[rng.random(mask.shape) < 0.05] = 255  # ignored pixels
        masks.append(mask)
    metric = MaskLocalization(cam_curve_interval=interval)
    metric.update(torch.from_numpy(np.stack([m.astype(np.float32) for m in maps])), torch.from_numpy(np.stack(masks)))
    expected = pxap([m.astype(np.float32) for m in maps], masks, interval)
    assert float(metric.compute()["PxAP"]) == pytest.approx(expected, abs=1e-4)


def test_real_openimages_masks_with_ignore_region():
    mask = load_gt_mask(str(FIXTURES / "masks" / "OpenImages"),
                        ["val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_3581e3ae.png",
                         "val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_d2422806.png"],
                        "val/0bt_c3/3a29f0b33894d4a6_ignore.png")
    assert mask.shape == (224, 224) and set(np.unique(mask)) <= {0, 1, 255}
    assert (mask == 1).sum() > 100
    perfect = torch.from_numpy((mask == 1).astype(np.float32))[None]
    metric = MaskLocalization()
    metric.update(perfect, torch.from_numpy(mask)[None])
    assert float(metric.compute()["PxAP"]) == pytest.approx(100.0)
