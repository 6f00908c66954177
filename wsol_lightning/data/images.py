"""Image decoding and the batch transforms of wsolevaluation, split between loader and device.

wsolevaluation's training transform is ``Resize((R, R))``, ``RandomCrop(C)``,
``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(mean, std)``; its
evaluation transform ``Resize((E, E))``, ``ToTensor()``, ``Normalize``. Here:

* the loader only decodes and resizes (:func:`decode_resized`, or a row of the
  decoded-image cache): uint8 ``[R, R, 3]`` per training image;
* :func:`random_crop_flip_normalize` crops, flips and normalizes a whole uint8
  batch on the training device (the data module's ``on_after_batch_transfer``):
  per image a crop corner uniform over the ``(R - C + 1)^2`` positions and a flip
  with probability 1/2, as ``RandomCrop`` and ``RandomHorizontalFlip`` draw them,
  then ``x / 255``, ``(x - mean) / std`` in the same float32 operations as
  ``ToTensor`` and ``Normalize``: for the same corner and flip the result equals
  torchvision's bit for bit, so the batches have the same distribution;
* evaluation images are normalized per item in the loader
  (:func:`normalize_images`), so val/test batches stay float32 ``[B, 3, E, E]``
  for any code that iterates them.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from wsol_lightning.errors import WSOLInputError


def read_rgb(path: str) -> Image.Image:
    """Decode an image as RGB, or raise :class:`WSOLInputError` naming the path."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise WSOLInputError(f"{path}: image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise WSOLInputError(f"{path}: image file unreadable ({error.__class__.__name__}: {error})") from None


def decode_resized(path: str, size: int) -> np.ndarray:
    """The image at ``path`` as uint8 RGB ``[size, size, 3]``, resized as ``transforms.Resize((size, size))`` does.

    (torchvision resizes PIL images with PIL's bilinear filter, which always antialiases.)
    """
    return np.array(read_rgb(path).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]``: ``(x / 255 - mean) / std`` per channel.

    The same float32 operations as ``ToTensor()`` then ``Normalize(mean, std)``.
    The result has channels-last strides (a permuted view made dense); callers
    that need a layout ask for it (``.contiguous(memory_format=...)``).
    """
    if images.dtype != torch.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [..., H, W, 3] images, got {images.dtype} {tuple(images.shape)}")
    scaled = images.movedim(-1, -3).to(torch.float32).div(255)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return scaled.sub_(mean_t).div_(std_t)


def random_crop_flip_normalize(images: torch.Tensor, crop_size: int, mean: Sequence[float], std: Sequence[float],
                               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """wsolevaluation's training augmentation of a uint8 batch, on the batch's device.

    Args:
        images: uint8 ``[B, R, R', 3]`` resized images.
        crop_size: side ``C`` of the random square crop (at most ``min(R, R')``).
        mean, std: per-channel normalization.
        generator: RNG on the batch's device; default: torch's global one there
            (seeded by ``seed_everything``).

    Returns:
        float32 ``[B, 3, C, C]``: each image cropped at its own uniform corner,
        flipped left-right with probability 1/2, normalized.
    """
    batch, height, width, _ = images.shape
    device = images.device
    top = torch.randint(0, height - crop_size + 1, (batch,), device=device, generator=generator)
    left = torch.randint(0, width - crop_size + 1, (batch,), device=device, generator=generator)
    flip = torch.rand(batch, device=device, generator=generator) < 0.5
    steps = torch.arange(crop_size, device=device)
    rows = top[:, None] + steps                                                   # [B, C]
    cols = left[:, None] + torch.where(flip[:, None], crop_size - 1 - steps, steps)  # [B, C], reversed if flipped
    crops = images[torch.arange(batch, device=device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return normalize_images(crops, mean, std)
