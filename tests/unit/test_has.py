"""Hide-and-Seek: cells of the right size, hidden at the right rate, vectorized."""

import pytest
import torch

from wsol_lightning.errors import WSOLInputError
from wsol_lightning.models.backbones import build_backbone
from wsol_lightning.models.methods.has import HideAndSeek, hide_patches


def _reference_has(images, cell, keep):
    """Straightforward per-cell loop with a given keep[b, row, col] decision."""
    out = images.clone()
    batch, _, height, width = images.shape
    for b in range(batch):
        for row in range(keep.shape[1]):
            for col in range(keep.shape[2]):
                if not keep[b, row, col]:
                    out[b, :, row * cell:min(height, (row + 1) * cell), col * cell:min(width, (col + 1) * cell)] = 0
    return out


@pytest.mark.parametrize("fraction,size,expected_cell", [(0.4, 64, 26), (0.25, 64, 16), (0.1, 224, 22), (1.0, 64, 64)])
def test_hidden_cells_match_a_per_cell_loop(fraction, size, expected_cell):
    images = torch.randn(3, 3, size, size) + 5.0  # never 0 by chance
    generator = torch.Generator().manual_seed(1)
    hidden = hide_patches(images, fraction, 0.5, generator=generator)
    rows = -(-size // expected_cell)
    keep = torch.rand((3, rows, rows), generator=torch.Generator().manual_seed(1)) >= 0.5
    assert torch.equal(hidden, _reference_has(images, expected_cell, keep))


def test_drop_rate_is_the_fraction_of_hidden_cells():
    images = torch.ones(512, 3, 64, 64)
    hidden = hide_patches(images, 0.25, 0.3, generator=torch.Generator().manual_seed(0))
    cells = hidden[:, 0, ::16, ::16]  # one pixel per 16x16 cell
    assert cells.shape == (512, 4, 4)
    assert abs((cells == 0).float().mean().item() - 0.3) < 0.02
    # a cell is hidden whole or not at all
    blocks = hidden[:, 0].reshape(512, 4, 16, 4, 16)
    assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))


def test_zero_grid_disables_and_input_is_not_modified():
    images = torch.randn(2, 3, 64, 64)
    copy = images.clone()
    assert hide_patches(images, 0.0, 0.5) is images
    hide_patches(images, 0.5, 0.9)
    assert torch.equal(images, copy)


def test_method_hides_in_augment_only_and_refuses_out_of_range():
    method = HideAndSeek(build_backbone("small"), 4, bg_grid_size=0.5, has_drop_rate=1.0)
    images = torch.randn(2, 3, 64, 64)
    assert torch.count_nonzero(method.augment(images, torch.tensor([0, 1])).images) == 0
    with pytest.raises(WSOLInputError, match=r"--model.bg_grid_size=1.5 is out of range"):
        HideAndSeek(build_backbone("small"), 4, bg_grid_size=1.5)
