"""Loader-side decoding and device-side crop/flip/normalize against torchvision's transforms (the oracle)."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from wsol_lightning.data.images import decode_resized, normalize_images, random_crop_flip_normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _torchvision_crop(image: Image.Image, top: int, left: int, size: int, flip: bool) -> torch.Tensor:
    """wsolevaluation's training transform after its Resize, with the random draws given."""
    crop = TF.crop(image, top, left, size, size)
    if flip:
        crop = TF.hflip(crop)
    return transforms.Normalize(MEAN, STD)(transforms.ToTensor()(crop))


@pytest.mark.parametrize("suffix,size", [(".jpg", 72), (".png", 37)])
def test_decode_resized_is_torchvisions_resize(tmp_path, suffix, size):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (75, 100, 3), dtype=np.uint8)).save(path)
    expected = np.asarray(transforms.Resize((size, size))(Image.open(path).convert("RGB")))
    assert np.array_equal(decode_resized(str(path), size), expected)


def test_normalize_is_totensor_then_normalize_bit_for_bit():
    pixels = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    expected = transforms.Normalize(MEAN, STD)(transforms.ToTensor()(Image.fromarray(pixels)))
    got = normalize_images(torch.from_numpy(pixels), MEAN, STD)
    assert got.shape == (3, 9, 7) and got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_each_device_crop_is_one_of_torchvisions_crops_bit_for_bit():
    resize, crop = 12, 8
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (6, resize, resize, 3), dtype=np.uint8)
    out = random_crop_flip_normalize(torch.from_numpy(pixels), crop, MEAN, STD,
                                     generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, crop, crop) and out.dtype == torch.float32
    for index in range(6):
        image = Image.fromarray(pixels[index])
        matches = [(top, left, flip) for top, left, flip in
                   itertools.product(range(resize - crop + 1), range(resize - crop + 1), (False, True))
                   if torch.equal(out[index], _torchvision_crop(image, top, left, crop, flip))]
        assert len(matches) == 1, matches


def test_crop_corners_and_flips_are_uniform_like_randomcrop_and_randomhorizontalflip():
    """Coordinates coded in the pixels reveal each draw; all (R-C+1)^2 x 2 outcomes equally likely."""
    resize, crop, batches, batch = 7, 4, 100, 40
    ys, xs = np.meshgrid(np.arange(resize), np.arange(resize), indexing="ij")
    coded = torch.from_numpy(np.stack([ys * 10, xs * 10, np.zeros_like(xs)], -1).astype(np.uint8))
    counts = np.zeros((resize - crop + 1, resize - crop + 1, 2))
    generator = torch.Generator().manual_seed(3)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    for _ in range(batches):
        out = random_crop_flip_normalize(coded.expand(batch, -1, -1, -1), crop, mean, std, generator=generator)
        codes = torch.round(out * 255 / 10).long()  # [B, 3, C, C]: y, x of each source pixel
        for image in codes:
            rows, cols = image[0], image[1]
            assert torch.equal(rows, rows[:, :1].expand(-1, crop))  # whole rows kept, in order
            assert torch.equal(rows[:, 0], rows[0, 0] + torch.arange(crop))
            flipped = bool(cols[0, 0] > cols[0, -1])
            step = -1 if flipped else 1
            assert torch.equal(cols[0], cols[0, 0] + step * torch.arange(crop))
            counts[int(rows[0, 0]), int(cols[0].min()), int(flipped)] += 1
    expected = batches * batch / counts.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert counts.min() > 0
    assert chi2 < 80, (chi2, counts)  # 31 degrees of freedom: p < 1e-6 for a uniform draw


def test_crop_runs_on_the_batch_device_and_needs_uint8():
    images = torch.zeros(2, 10, 10, 3, dtype=torch.uint8)
    assert random_crop_flip_normalize(images, 10, MEAN, STD).shape == (2, 3, 10, 10)  # crop = resize: no offset
    with pytest.raises(ValueError, match="expected uint8"):
        normalize_images(images.float(), MEAN, STD)
