"""CAM -> score map: what the metrics evaluate.

As wsolevaluation's inference: the CAM of the ground-truth class is resized to
224x224 bicubically, then min-max normalized per map; a map with a NaN, or a
flat map, becomes all zeros. Done on the CAM's device with
``F.interpolate(mode="bicubic", align_corners=False)``, which uses the same
kernel (a = -0.75) and border clamping as ``cv2.resize(INTER_CUBIC)``: on random
7x7 to 28x28 CAMs the two agree to 3e-6 (float32 rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol_lightning.metrics.geometry import SCOREMAP_SIZE


def cams_to_scoremaps(cams: torch.Tensor, size: int = SCOREMAP_SIZE) -> torch.Tensor:
    """Resize CAMs bicubically and min-max normalize each to [0, 1].

    Args:
        cams: ``[B, h, w]`` raw CAMs.
        size: side of the returned maps.

    Returns:
        float32 ``[B, size, size]`` in [0, 1]; NaN-containing or flat maps are zeros.
    """
    maps = F.interpolate(cams.detach().float().unsqueeze(1), size=(size, size), mode="bicubic",
                         align_corners=False).squeeze(1)
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    invalid = torch.isnan(flat).any(dim=1).view(-1, 1, 1) | (high == low)
    normalized = (maps - low) / torch.where(invalid, torch.ones_like(high), high - low)
    return torch.where(invalid, torch.zeros_like(normalized), normalized)
