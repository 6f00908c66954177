"""The CAM figure: its predicted box is the reference's largest-contour box; its grid holds the split's first images."""

import cv2
import numpy as np

from tests.reference_wsol_metrics import contour_boxes, random_scoremaps
from wsol_lightning.visualize import largest_contour_box, save_cam_grid


def test_largest_contour_box_by_hand():
    scoremap = np.zeros((224, 224))
    scoremap[10:30, 10:30] = 0.6  # 20 x 20
    scoremap[100:150, 60:100] = 1.0  # 50 rows x 40 columns: the largest
    scoremap[110:140, 70:90] = 0.2  # a hole in it at thresholds above 0.2
    assert largest_contour_box(scoremap, 0.5).tolist() == [60, 100, 100, 150]  # x1 = x + w, inclusive
    assert largest_contour_box(scoremap, 0.1).tolist() == [60, 100, 100, 150]
    assert largest_contour_box(scoremap, 0.0).tolist() == [60, 100, 100, 150]  # level 0: pixels above 0
    thin = np.zeros((224, 224))
    thin[150:152, 0:200] = thin[80:150, 0:2] = 1.0  # an L: a large box around a small area
    thin[10:40, 150:180] = 1.0  # a compact square: the larger contour area
    assert largest_contour_box(thin, 0.5).tolist() == [150, 10, 180, 40]
    assert largest_contour_box(np.zeros((224, 224)), 0.5).tolist() == [0, 0, 0, 0]  # no contour
    full = np.full((224, 224), 0.7)
    assert largest_contour_box(full, 0.5).tolist() == [0, 0, 223, 223]  # clamped to W-1, H-1


def test_largest_contour_box_is_the_references_on_random_maps():
    """Float32 and float64 maps, rings with holes, plateaus whose equal areas OpenCV's order decides."""
    maps, _ = random_scoremaps(25, 7)
    for index, scoremap in enumerate(maps):
        for threshold in (0.0, 0.13, 0.5, 0.77, 0.99):
            expected = contour_boxes(scoremap, threshold)[1][0]
            assert largest_contour_box(scoremap, threshold).tolist() == expected, (index, threshold)


def test_cam_grid_holds_the_first_images_whatever_the_batch_size(tmp_path):
    from wsol_lightning.data.datamodule import WSOLDataModule
    from wsol_lightning.module import WSOLModule

    datamodule = WSOLDataModule(data_root=str(tmp_path / "data"), synthetic_num_train=4, synthetic_num_val=6,
                                synthetic_num_test=2, batch_size=2)
    model = WSOLModule(num_classes=5, wsol_method="base")
    path = save_cam_grid(model, datamodule, tmp_path / "figure" / "grid.png", num_images=6, threshold=0.3)
    image = cv2.imread(str(path))
    # 4 columns x 2 rows of 3 x 3 inches at 80 dpi: six images, not one batch of two (one row)
    assert image.shape == (2 * 3 * 80, 4 * 3 * 80, 3)
    blue, green, red = (image[..., k].astype(int) for k in range(3))
    assert ((red > 200) & (green < 60) & (blue < 60)).sum() > 100  # predicted boxes (red)
    assert ((green > 200) & (red < 60) & (blue < 60)).sum() > 100  # GT boxes (lime)
