"""One intensity scale for 8-bit slices and HU volumes, and the lung box the network sees (issue 12)."""
from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from covid_mtl.io import read_image
from covid_mtl.io.crop import image_box, lung_box
from covid_mtl.io.normalize import LUNG_WINDOW, lung_window_u8, normalize, normalize_array
from covid_mtl.lungs.mask import lung_mask
from covid_mtl.nets.preprocessing import Preprocessing
from covid_mtl.demo.phantom import make_phantom

CHEST = "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz"


def test_a_real_hu_slice_and_its_8bit_lung_window_export_normalise_alike(real_ct, tmp_path):
    scan = read_image(real_ct / CHEST)
    z = int(np.argmax((lung_mask(scan).labels > 0).sum(axis=(1, 2))))  # the slice with the most lung
    hu = scan.array[z]
    PILImage.fromarray(lung_window_u8(hu)).save(tmp_path / "export.png")  # what a screen export holds
    exported = read_image(tmp_path / "export.png")
    assert not exported.is_hu and exported.bit_depth == 8
    from_hu, from_png = normalize_array(hu, True), normalize(exported)[0]
    assert np.abs(from_hu - from_png).max() <= 0.5 / 255 + 1e-6  # one rounding step of the 8-bit export
    lung = (hu > -950) & (hu < -700)
    assert 0.2 < float(np.median(from_hu[lung])) < 0.45  # aerated lung lands near 0.33 in W 1500 / L -600
    assert LUNG_WINDOW == (-1350.0, 150.0)


def test_lung_box_cuts_a_chest_slice_to_its_lungs():
    ph = make_phantom("normal", seed=3, shape=(12, 160, 160))
    z = ph.hu.shape[0] // 2
    box = lung_box(normalize_array(ph.hu[z].astype(np.float32), True))
    assert box is not None
    y0, y1, x0, x1 = box
    lung_y, lung_x = np.nonzero(ph.lung[z])
    assert y0 <= lung_y.min() and lung_y.max() < y1 and x0 <= lung_x.min() and lung_x.max() < x1  # lungs kept
    assert (y1 - y0) * (x1 - x0) < 0.8 * 160 * 160  # air around the body and the table cut away
    # a volume uses one box for all its slices; a 2D image is used whole (public slices are lung crops already)
    vol_box = image_box(ph.hu.astype(np.float32), True, None, ph.lung.reshape(12, -1).any(axis=1))
    assert vol_box[0] <= y0 and vol_box[1] >= y1 and vol_box[2] <= x0 and vol_box[3] >= x1
    flat = ph.hu[z:z + 1].astype(np.float32)
    assert image_box(flat, True, None, np.ones(1, bool)) == (0, 160, 0, 160)


def test_no_lung_means_the_whole_slice():
    assert lung_box(np.full((64, 64), 0.9, np.float32)) is None
    tissue = np.full((3, 64, 64), 40.0, np.float32)
    assert image_box(tissue, True, None, np.zeros(3, bool)) == (0, 64, 0, 64)


def test_real_chest_box_holds_the_lungs(real_ct):
    """The box a HU volume is cut to (the lung mask's, over the slices that run) holds its aerated lung."""
    scan = read_image(real_ct / CHEST)
    labels = lung_mask(scan).labels
    plan = Preprocessing(size=128).plan(scan, scan.array, labels)
    y0, y1, x0, x1 = plan.box
    aerated = (labels > 0) & (scan.array > -950) & (scan.array < -700)
    inside = aerated[plan.run][:, y0:y1, x0:x1].sum() / aerated[plan.run].sum()
    assert inside > 0.999, inside
    assert aerated[plan.run].sum() > 0.97 * aerated.sum()  # the slices left out hold little lung
