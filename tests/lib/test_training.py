"""Slice datasets, the slice-class rule, and training on phantoms (learning must show)."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from covid_mtl.nets.checkpoint import load_checkpoint
from covid_mtl.errors import CovidMTLError
from covid_mtl.image import Image
from covid_mtl.demo.phantom import make_phantom
from covid_mtl.lungs.mask import lung_mask
from covid_mtl.nets.preprocessing import Preprocessing
from covid_mtl.train.samples import as_records, build_dataset, class_target, count_samples, image_slices
from covid_mtl.train.loop import TrainConfig, train
from covid_mtl.train.selection import split_validation

torch.set_num_threads(1)  # the test machine is shared; one thread avoids OpenMP oversubscription

KINDS = ("covid", "normal", "other")
SHAPE = (12, 64, 64)


def write_phantoms(folder: Path, seeds, with_mask=True) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        kind = KINDS[seed % 3]
        p = make_phantom(kind, seed, shape=SHAPE)
        image = folder / f"{kind}_{seed}.nii.gz"
        nib.save(nib.Nifti1Image(p.hu.transpose(2, 1, 0), p.affine), image)
        record = {"image": str(image), "mask": None, "label": kind}
        if with_mask:
            record["mask"] = str(folder / f"{kind}_{seed}_mask.nii.gz")
            nib.save(nib.Nifti1Image(p.lesion.transpose(2, 1, 0), p.affine), record["mask"])
        records.append(record)
    return records


def test_slice_class_rule():
    def rule(*args):
        target, weight = class_target(*args)
        return target.tolist(), weight.tolist()

    assert rule("normal", None, False) == ([0, 1, 0], [1, 1, 1])
    assert rule("covid", True, False) == ([1, 0, 0], [1, 1, 1])
    assert rule("covid", False, False) == ([0, 0, 0], [0, 0, 0])  # clean slice of a COVID volume: unknown
    assert rule("covid", None, False) == ([1, 0, 0], [1, 1, 1])   # no mask: weak volume label
    assert rule("covid", False, True) == ([1, 0, 0], [1, 1, 1])   # a 2D image keeps its own label
    assert rule("other", False, False) == ([0, 0, 0], [1, 0, 0])  # clean slice of another infection: not COVID
    assert rule("non-covid", None, False) == ([0, 0, 0], [1, 0, 0])
    assert rule(None, True, False) == ([0, 0, 0], [0, 0, 0])


def _run_slices(hu: np.ndarray, spacing, affine) -> np.ndarray:
    image = Image(hu.astype(np.float32), spacing, affine, True, "ph")
    return Preprocessing(size=32).plan(image, image.array, lung_mask(image).labels).run


def test_only_slices_with_enough_lung_run_and_every_non_hu_slice_does():
    p = make_phantom("normal", 3, shape=(16, 48, 48))
    run = _run_slices(p.hu, p.spacing, p.affine)
    area = p.lung.reshape(16, -1).sum(1)
    assert run[area >= 0.2 * area.max()].all() and not run[area == 0].any()
    assert 0 < run.sum() < 16
    flat = Image(np.zeros((4, 8, 8), np.float32), None, None, False, "x.png", bit_depth=8)
    assert Preprocessing(size=32).plan(flat, flat.array, None).run.all()


def test_dataset_from_in_memory_records(tmp_path):
    records = write_phantoms(tmp_path, [0, 1]) + [{"image": write_phantoms(tmp_path / "b", [5], False)[0]["image"],
                                                    "label": "other"}]
    dataset = build_dataset(records, Preprocessing(size=32))
    sample = dataset[0]
    assert sample["image"].shape == (1, 32, 32) and sample["mask"].shape == (1, 32, 32)
    assert isinstance(sample["image"], torch.Tensor) and 0 <= float(sample["image"].min()) <= 1
    assert set(torch.unique(sample["mask"]).tolist()) <= {0.0, 1.0}
    counts = count_samples(dataset)
    covid = make_phantom("covid", 0, shape=SHAPE)
    covid_lung = _run_slices(covid.hu, covid.spacing, covid.affine)
    lesion_slices = int(covid.lesion[covid_lung].reshape(covid_lung.sum(), -1).any(1).sum())
    assert counts["covid"] == lesion_slices  # only COVID slices with lesion teach "covid"
    assert counts["with_mask"] == sum(1 for s in dataset.data if s["source"].endswith(("_0.nii.gz", "_1.nii.gz")))
    assert counts["other"] > 0 and counts["normal"] > 0
    with pytest.raises(CovidMTLError, match="mask path goes"):
        as_records([{"image": records[0]["image"], "label": records[0]["mask"]}])


def test_image_slices_check_the_mask_grid():
    image = Image(np.zeros((2, 8, 8), np.float32), None, None, False, "x.png", bit_depth=8)
    with pytest.raises(CovidMTLError, match="mask shape"):
        image_slices(image, np.zeros((2, 8, 9), np.uint8), "covid", Preprocessing(size=16))


def test_split_validation_takes_a_seeded_fifth_of_train_when_there_is_no_val():
    class Row:
        def __init__(self, i, split):
            self.image, self.mask, self.label, self.split = f"{i}.nii.gz", None, "normal", split

    rows = [Row(i, "train") for i in range(10)] + [Row(10, "test")]
    train_rows, val_rows = split_validation(rows, 0.2, seed=1)
    assert len(val_rows) == 2 and len(train_rows) == 8 and not {r.image for r in val_rows} & {r.image for r in train_rows}
    assert [r.image for r in split_validation(rows, 0.2, seed=1)[1]] == [r.image for r in val_rows]
    rows[0].split = "val"
    assert split_validation(rows)[1] == [rows[0]]


def test_training_on_phantoms_learns_segmentation_and_classification(tmp_path):
    # the paper's three tasks; about 75 s on one CPU thread. Measured curves (seed 0): val Dice 0 -> 0.78,
    # val accuracy 0.43 (all "normal") -> 0.77 by step 550; the classifier "clicks" after ~400 steps.
    train_records = write_phantoms(tmp_path / "train", range(60))
    val_records = write_phantoms(tmp_path / "val", range(1000, 1012))
    # without augmentation: the real-data augmentation (quarter turns, random windows) is sized for 40-minute runs
    # and would need many more than 600 steps here; test_train_augmentation_keeps_masks_binary covers it
    config = TrainConfig(config="tiny", tasks="recon,seg,cls", epochs=100, patience=100, batch_size=8, lr=1e-3,
                         seed=0, max_steps=600, device="cpu", augment=False)
    result = train(config, train_records, val_records, tmp_path / "run", progress=False)
    history = result.history
    first, last = history[0], history[-1]
    majority = max(first["val_accuracy"], 0.45)  # an untrained net calls every slice "normal" (~43 %)
    # chance: Dice of an empty prediction is 0
    assert max(h["val_dice"] for h in history) > 0.6, [h["val_dice"] for h in history]
    assert max(h["val_accuracy"] for h in history) > majority + 0.2, [h["val_accuracy"] for h in history]
    assert last["train_loss"] < 0.7 * first["train_loss"]
    assert last["train_loss_recon"] < 0.2 * first["train_loss_recon"]
    assert result.steps == 600 and not result.stopped_early
    for name in ("model.pt", "last.pt", "history.json", "learning_curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["best_epoch"] == result.best_epoch and len(saved["epochs"]) == len(history)
    best_ckpt = load_checkpoint(result.best_checkpoint)
    assert best_ckpt.config.name == "tiny" and best_ckpt.tasks == ("recon", "seg", "cls")
    assert best_ckpt.meta["epoch"] == result.best_epoch
    # the best checkpoint is the epoch with the highest selection score (Dice + COVID AUC), the first of ties
    assert best_ckpt.meta["metrics"]["val_score"] == pytest.approx(max(h["val_score"] for h in history))
    assert result.best_epoch == next(h["epoch"] for h in history if h["val_score"] == max(g["val_score"] for g in history))
    assert best_ckpt.meta["decision"]["classes"] == ["covid", "normal", "other"]  # phantoms teach all three
    assert 0.0 <= best_ckpt.meta["decision"]["threshold"] <= 1.0


def test_cli_train_writes_checkpoints_and_fine_tunes_from_one(tmp_path):
    from covid_mtl.cli import main

    records = write_phantoms(tmp_path / "data", range(6))
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text("image,mask,label,split\n" + "".join(
        f"{Path(r['image']).name},{Path(r['mask']).name},{r['label']},{'val' if i == 5 else 'train'}\n"
        for i, r in enumerate(records)))
    out = tmp_path / "run"
    rc = main(["train", "--manifest", str(manifest), "--config", "tiny", "--image-size", "32", "--out", str(out),
               "--max-steps", "3", "--batch-size", "4", "--device", "cpu", "--threads", "1"])
    assert rc == 0
    first = load_checkpoint(out / "model.pt")
    assert first.tasks == ("recon", "seg", "cls") and first.meta["steps"] == 3
    assert first.meta["train_settings"]["val_images"] == 1
    # fine-tune the segmentation only, from that checkpoint: the encoder starts from its weights
    rc = main(["train", "--manifest", str(manifest), "--init", str(out / "model.pt"), "--tasks", "seg",
               "--out", str(tmp_path / "tuned"), "--max-steps", "1", "--device", "cpu", "--threads", "1"])
    assert rc == 0
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned.tasks == ("seg",) and tuned.config.image_size == 32
    assert tuned.meta["train_settings"]["init_loaded"] > 0
    assert main(["train", "--manifest", str(manifest), "--init", str(out / "model.pt"), "--config", "lite",
                 "--out", str(tmp_path / "bad")]) == 2


def test_train_augmentation_keeps_masks_binary_and_pixels_in_range():
    from covid_mtl.train.augment import train_transforms

    transform = train_transforms(seed=3)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(40):
        image = rng.random((1, 32, 32), dtype=np.float32)
        mask = np.zeros((1, 32, 32), np.float32)
        mask[0, 8:20, 5:12] = 1
        out = transform({"image": image, "mask": mask, "has_mask": np.float32(1),
                         "cls_target": np.zeros(3, np.float32), "cls_weight": np.zeros(3, np.float32)})
        assert isinstance(out["image"], torch.Tensor) and tuple(out["image"].shape) == (1, 32, 32)
        assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0}
        assert float(out["image"].min()) >= -0.2 and float(out["image"].max()) <= 1.2  # clipped window + faint noise
        changed += not np.array_equal(out["mask"].numpy(), mask)
    assert changed >= 20  # quarter turns, flips, rotations and zooms move the mask most of the time


def test_training_slices_use_the_predictors_canonical_orientation():
    """A volume and its mask stored RAS, LPS or sagittally give the same training slices (the predictor's
    canonical axial layout), so a datastore volume stored another way trains on the slices it is predicted on."""
    from tests.lib.test_orientation import restored

    ph = make_phantom("covid", seed=2, shape=(10, 64, 64))
    image = Image(ph.hu.astype(np.float32), ph.spacing, ph.affine, True, "ph")
    reference = image_slices(image, ph.lesion, "covid", Preprocessing(size=32))
    assert reference and any(s["mask"].any() for s in reference)
    for flip, swap in ((True, False), (False, True)):
        other = restored(image, flip_xy=flip, transpose_xz=swap)
        mask = restored(Image(ph.lesion.astype(np.float32), ph.spacing, ph.affine, True, "m"), flip, swap).array
        samples = image_slices(other, mask.astype(np.uint8), "covid", Preprocessing(size=32))
        assert [s["z"] for s in samples] == [s["z"] for s in reference]
        for a, b in zip(samples, reference):
            np.testing.assert_allclose(a["image"], b["image"], atol=1e-5)
            np.testing.assert_array_equal(a["mask"], b["mask"])
            np.testing.assert_array_equal(a["cls_target"], b["cls_target"])
