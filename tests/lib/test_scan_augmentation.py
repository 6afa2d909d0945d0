"""Training for the look of real scans (issue 30): the recorded augmentation, thick slices, scans without
pneumonia as segmentation negatives, and the display re-maps of the robustness table."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from covid_mtl.demo.phantom import make_phantom
from covid_mtl.evaluation.robustness import REMAPS, remapped
from covid_mtl.image import Image
from covid_mtl.io.manifest import read_manifest
from covid_mtl.io.write import write_volume
from covid_mtl.nets.preprocessing import Augmentation, Preprocessing
from covid_mtl.train.augment import RandWindowd, THICK, eval_transforms, train_transforms
from covid_mtl.train.samples import VolumeRecord, image_slices, record_slices


def _phantom_image(spacing=(1.25, 0.8, 0.8), shape=(24, 64, 64), kind="normal") -> tuple[Image, np.ndarray]:
    ph = make_phantom(kind, seed=4, shape=shape, spacing=spacing)
    return Image(ph.hu.astype(np.float32), ph.spacing, ph.affine, True, "ph"), ph.lesion


def test_augmentation_is_recorded_in_the_checkpoint_meta_and_read_back():
    changed = replace(Preprocessing(size=32), augmentation=Augmentation(gamma=(0.8, 1.2), noise_std=0.01))
    meta = {"preprocessing": changed.as_meta()}
    back = Preprocessing.from_meta(meta, 32)
    assert back.augmentation == changed.augmentation
    assert back.augmentation.gamma == (0.8, 1.2) and back.augmentation.noise_std == 0.01
    # a checkpoint recorded before augmentation was (no key) fine-tunes with this version's recipe
    old = changed.as_meta()
    old.pop("augmentation")
    assert Preprocessing.from_meta({"preprocessing": old}, 32).augmentation == Augmentation()


def test_thick_slices_average_neighbours_in_hu_only_where_the_scan_is_thin():
    image, _ = _phantom_image(spacing=(1.25, 0.8, 0.8))
    pre = Preprocessing(size=32)
    zs = np.array([5, 12])
    box = (0, 64, 0, 64)
    thick = pre.thick_pixels(image, image.array, zs, box)
    assert thick is not None and tuple(thick.shape) == (2, 32, 32)
    reach = 2  # 5 mm / 2 at 1.25 mm
    expected = pre.pixels(image, image.array[12 - reach:12 + reach + 1].mean(axis=0)[None], np.array([0]), box)
    assert torch.allclose(thick[1], expected[0], atol=1e-5)
    assert not torch.allclose(thick[1], pre.pixels(image, image.array, np.array([12]), box)[0])
    thick_scan, _ = _phantom_image(spacing=(5.0, 0.8, 0.8))
    assert pre.thick_pixels(thick_scan, thick_scan.array, zs, box) is None  # already 5 mm
    grey = replace(image, is_hu=False, bit_depth=8)
    assert pre.thick_pixels(grey, grey.array, zs, box) is None  # an export: blur stands in for thickness


def test_hu_training_slices_carry_their_thick_version_and_every_pipeline_drops_it():
    image, lesion = _phantom_image()
    samples = image_slices(image, lesion, "covid", Preprocessing(size=32))
    assert samples and all(THICK in s for s in samples)
    always = train_transforms(replace(Augmentation(), thick_prob=1.0), seed=0)
    out = always(samples[len(samples) // 2])
    assert THICK not in out and tuple(out["image"].shape) == (1, 32, 32)
    plain = eval_transforms()(samples[len(samples) // 2])
    assert THICK not in plain
    assert torch.equal(plain["image"], torch.as_tensor(samples[len(samples) // 2]["image"]))


def test_window_jitter_is_a_clipped_linear_map_within_its_range():
    window = RandWindowd(keys="image", slope=(0.75, 1.6), offset=0.15, prob=1.0)
    window.set_random_state(seed=1)
    grey = torch.linspace(0.3, 0.7, 50).reshape(1, 5, 10)
    slopes = []
    for _ in range(30):
        out = window({"image": grey})["image"]
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        inside = (out > 0) & (out < 1)
        x, y = grey[inside].numpy(), out[inside].numpy()
        if x.size > 2:
            slope = np.polyfit(x, y, 1)[0]
            assert np.allclose(y, np.polyval(np.polyfit(x, y, 1), x), atol=1e-5)  # linear
            slopes.append(slope)
    assert min(slopes) >= 0.75 - 1e-3 and max(slopes) <= 1.6 + 1e-3 and max(slopes) - min(slopes) > 0.4


def test_augmented_training_batches_vary_the_look_and_keep_masks_binary():
    image, lesion = _phantom_image(kind="covid")
    samples = image_slices(image, lesion, "covid", Preprocessing(size=32))
    transform = train_transforms(seed=7)
    sample = samples[len(samples) // 2]
    means = []
    for _ in range(30):
        out = transform(sample)
        assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
        assert float(out["image"].min()) >= 0.0 and float(out["image"].max()) <= 1.0
        means.append(float(out["image"].mean()))
    assert np.std(means) > 0.02  # window, gamma, noise and kernels change the grey levels


def test_scans_without_pneumonia_become_unclassed_segmentation_negatives(tmp_path):
    from covid_mtl.train.prepare_data import negative_scan_row

    image, _ = _phantom_image()
    scan = write_volume(image, tmp_path / "clean_scan.nii.gz")
    row = negative_scan_row(scan, tmp_path / "prepared")
    assert row["split"] == "train" and row["label"] == "" and row["source"] == "hu_scan"
    samples = record_slices(VolumeRecord(row["image"], str(tmp_path / "prepared" / row["mask"]), None, "hu_scan"),
                            Preprocessing(size=32))
    assert samples
    assert all(float(s["has_mask"]) == 1.0 and not s["mask"].any() for s in samples)  # "no lesion here"
    assert all(not np.asarray(s["cls_weight"]).any() for s in samples)  # and nothing about the class
    grey = replace(image, is_hu=False, bit_depth=8, array=np.clip(image.array, 0, 255))
    with pytest.raises(Exception, match="Hounsfield"):
        negative_scan_row(write_volume(grey, tmp_path / "grey.nii.gz"), tmp_path / "prepared")


def test_prepare_data_adds_negative_scans_as_training_rows(tmp_path):
    from PIL import Image as PILImage

    from covid_mtl.train.prepare_data import prepare_data

    data = tmp_path / "data" / "covid_ct_zhao"
    for folder, n in (("CT_COVID", 3), ("CT_NonCOVID", 3)):
        (data / folder).mkdir(parents=True)
        for i in range(n):
            PILImage.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(data / folder / f"{i}.png")
    image, _ = _phantom_image()
    scan = write_volume(image, tmp_path / "lidc_like.nii.gz")
    result = prepare_data(tmp_path / "data", tmp_path / "out", progress=False, negative_scans=[scan])
    rows = read_manifest(result.manifest)
    negatives = [r for r in rows if r.source == "hu_scan"]
    assert len(negatives) == 1 and negatives[0].split == "train" and negatives[0].label is None
    assert negatives[0].mask and (tmp_path / "out" / "masks" / "negative" / "lidc_like.nii.gz").exists()
    assert result.summary["counts"]["hu_scan"]["train"]

    # a smoke run of the augmented training on them: the recipe is recorded in the checkpoint it writes
    from covid_mtl.cli import main
    from covid_mtl.nets.checkpoint import load_checkpoint

    out = tmp_path / "run"
    assert main(["train", "--manifest", str(result.manifest), "--config", "tiny", "--image-size", "32", "--out",
                 str(out), "--max-steps", "3", "--batch-size", "4", "--device", "cpu", "--threads", "1"]) == 0
    meta = load_checkpoint(out / "last.pt").meta
    assert Preprocessing.from_meta(meta, 32).augmentation == Augmentation()
    assert meta["preprocessing"]["augmentation"]["window_slope"] == list(Augmentation().window_slope)


@pytest.mark.parametrize("name", [n for n in REMAPS if n != "plain"])
def test_display_remaps_change_an_8bit_export_and_keep_its_bit_depth(name):
    rng = np.random.default_rng(0)
    export = Image(rng.integers(20, 235, (1, 32, 32)).astype(np.float32), None, None, False, "x.png", bit_depth=8)
    out = remapped(export, name)
    assert out.array.shape == export.array.shape and out.bit_depth == 8
    assert np.array_equal(out.array, np.round(out.array)) and 0 <= out.array.min() and out.array.max() <= 255
    assert not np.array_equal(out.array, export.array)
    assert np.array_equal(remapped(export, name).array, out.array)  # seeded: the same table every run
    with pytest.raises(ValueError):
        remapped(Image(export.array, None, None, True, "hu"), name)
