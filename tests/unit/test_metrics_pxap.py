"""PxAP equals the reference's MaskEvaluator arithmetic, on hundreds of random maps and on real OpenImages masks."""

import numpy as np
import pytest

from tests.fixtures import WSOLEVAL_FIXTURES
from tests.reference_wsol_metrics import gt_mask, mask_paths_from_files, pxap, random_scoremaps
from wsol_lightning.metrics.masks import load_gt_mask
from wsol_lightning.metrics.pxap import bin_edges, pxap_from_histograms, score_histograms

FIXTURES = WSOLEVAL_FIXTURES


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


@pytest.fixture(scope="module")
def real_masks():
    """The five OpenImages val images whose masks are in the fixtures: ``{image_id: (mask paths, ignore path)}``,
    read straight from localization.txt."""
    mask_paths, ignore_paths = mask_paths_from_files(FIXTURES / "metadata" / "OpenImages" / "val")
    present = {path.name for path in (FIXTURES / "masks" / "OpenImages" / "val").rglob("*.png")}
    return {image_id: (paths, ignore_paths[image_id]) for image_id, paths in mask_paths.items()
            if all(p.rsplit("/", 1)[-1] in present for p in paths)}


def test_real_masks_decode_as_the_reference_reads_them(real_masks):
    """Union of instance masks, nearest resize to 224, ignore box minus foreground = 255: pixel for pixel."""
    root = str(FIXTURES / "masks" / "OpenImages")
    assert len(real_masks) == 5
    ignored = 0
    for image_id, (paths, ignore_path) in real_masks.items():
        mask = load_gt_mask(root, paths, ignore_path)
        assert mask.dtype == np.uint8 and mask.shape == (224, 224)
        assert np.array_equal(mask, gt_mask(root, paths, ignore_path)), image_id
        ignored += int((mask == 255).sum())
    assert ignored > 1000  # one image has a large ignore box: that branch is exercised
    assert any(len(paths) > 1 for paths, _ in real_masks.values())  # and the union of several instances


def test_pxap_on_real_masks_equals_the_reference(real_masks):
    root = str(FIXTURES / "masks" / "OpenImages")
    rng = np.random.default_rng(0)
    maps, masks = [], []
    for paths, ignore_path in real_masks.values():
        mask = gt_mask(root, paths, ignore_path)
        maps.append(np.clip((mask == 1) * 0.2 + rng.random((224, 224)) * 0.8, 0, 1).astype(np.float32))
        masks.append(load_gt_mask(root, paths, ignore_path))
    expected = pxap(maps, [gt_mask(root, p, i) for p, i in real_masks.values()], 0.01)
    assert 5.0 < expected < 98.0
    assert _kernel_pxap(maps, masks, 0.01) == pytest.approx(expected, abs=1e-6)
