"""PxAP equals the reference's MaskEvaluator arithmetic, on hundreds of random maps and on real OpenImages masks."""

from pathlib import Path

import numpy as np
import pytest

from tests.reference_wsol_metrics import pxap, random_scoremaps
from wsol_lightning.metrics.masks import load_gt_mask
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "wsolevaluation"


def _kernel_pxap(maps, masks, interval):
    edges = bin_edges(np.arange(0, 1, interval))
    foreground = np.zeros(len(edges) - 1)
    background = np.zeros(len(edges) - 1)
    for scoremap, mask in zip(maps, masks):
        fg, bg = score_histograms(scoremap, mask, edges)
        foreground += fg
        background += bg
    return pxap_from_histograms(foreground, background)


def _masks_for(maps, seed):
    rng = np.random.default_rng(seed)
    masks = []
    for scoremap in maps:
        noisy = scoremap + rng.normal(0, 0.1, scoremap.shape)  # imperfect maps: PxAP well below 100
        mask = (noisy > rng.uniform(0.2, 0.8)).astype(np.uint8)
        mask[rng.random(mask.shape) < 0.05] = 255  # ignored pixels
        masks.append(mask)
    return masks


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("seed", [0, 1])
def test_pxap_equals_reference(interval, seed):
    maps, _ = random_scoremaps(150, seed)  # float32 and float64, values exactly on bin edges included
    masks = _masks_for(maps, seed)
    expected = pxap(maps, masks, interval)
    assert 1.0 < expected < 99.0
    assert _kernel_pxap(maps, masks, interval) == pytest.approx(expected, abs=1e-6)


def test_scores_on_the_edges_fall_in_the_reference_bins():
    scoremap = np.repeat(np.linspace(0, 1, 224)[None], 224, 0)
    scoremap[:5] = np.round(scoremap[:5], 2)  # exactly 0.01, 0.02, ...
    mask = (np.arange(224)[None] % 3 == 0).repeat(224, 0).astype(np.uint8)
    for interval in (0.01, 0.001):
        assert _kernel_pxap([scoremap], [mask], interval) == pytest.approx(pxap([scoremap], [mask], interval),
                                                                         abs=1e-6)


def test_no_foreground_is_an_error():
    with pytest.raises(ValueError, match="no foreground"):
        _kernel_pxap([np.zeros((224, 224))], [np.zeros((224, 224), np.uint8)], 0.01)


def test_real_openimages_masks_with_ignore_region():
    mask = load_gt_mask(str(FIXTURES / "masks" / "OpenImages"),
                        ["val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_3581e3ae.png",
                         "val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_d2422806.png"],
                        "val/0bt_c3/3a29f0b33894d4a6_ignore.png")
    assert mask.shape == (224, 224) and set(np.unique(mask)) <= {0, 1, 255}
    assert (mask == 1).sum() > 100
    perfect = (mask == 1).astype(np.float32)
    assert _kernel_pxap([perfect], [mask], 0.01) == pytest.approx(100.0)
    rng = np.random.default_rng(0)
    noisy = np.clip(perfect * 0.5 + rng.random((224, 224)) * 0.6, 0, 1).astype(np.float32)
    assert _kernel_pxap([noisy], [mask], 0.01) == pytest.approx(pxap([noisy], [mask], 0.01), abs=1e-6)
