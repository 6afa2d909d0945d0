"""``covid-mtl prepare-data`` on a tiny tree in the public sets' layouts (never ../shared/data/train)."""
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from covid_mtl.cli import main
from covid_mtl.errors import CovidMTLError
from covid_mtl.io.manifest import read_manifest
from covid_mtl.train.prepare_data import assign_splits, binarize_mask, prepare_data
from covid_mtl.train.public_sets import Entry, covid_ct_covid_group, covid_ct_noncovid_groups, infnet_group

SIZE = (40, 32)  # (width, height) of every test image
COVID = ["2020.01.24.919183-p27-132.png", "2020.01.24.919183-p27-133.png", "2020.02.10.20021584-p6-52%0.png",
         "2020.02.10.20021584-p6-52%1.png", "2020.03.01.11111111-p3-1.png", "2020.03.02.22222222-p1-1%0.png",
         "Some-journal-article_2020-p1-12%3.png"]
NONCOVID = ["1.png", "2.png", "4.png", "10.png", "20%0.jpg", "20%1.jpg", "21.jpg", "22%0.jpg"]
INFNET = [f"Data-1_{v}_{i}" for v in ("coronacases_org_001", "coronacases_org_002",
                                      "radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm",
                                      "radiopaedia_org_covid-19-pneumonia-10_85902_3-dcm",
                                      "radiopaedia_org_covid-19-pneumonia-7_85703_0-dcm") for i in (1, 2, 3)]


def _gray(seed: int, size=SIZE, mode="L") -> PILImage.Image:
    array = np.random.default_rng(seed).integers(0, 256, size[::-1], dtype=np.uint8)
    return PILImage.fromarray(array).convert(mode)


def _lesion(seed: int, size=SIZE) -> np.ndarray:
    """A 0/1 blocky lesion (two rectangles), so JPEG noise around it is what the threshold must remove."""
    mask = np.zeros(size[::-1], np.uint8)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        y, x = rng.integers(0, size[1] - 10), rng.integers(0, size[0] - 10)
        mask[y:y + 8, x:x + 10] = 1
    return mask


def _labels(seed: int) -> np.ndarray:
    """A 0/1/2 label map (ground glass 1, consolidation 2) saved as a palette PNG, as Inf-Net's MultiClass GT."""
    labels = _lesion(seed)
    labels[labels > 0] = 1
    labels[: SIZE[1] // 2][labels[: SIZE[1] // 2] > 0] = 2
    return labels


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    zhao = root / "covid_ct_zhao"
    for i, name in enumerate(COVID):
        (zhao / "CT_COVID").mkdir(parents=True, exist_ok=True)
        _gray(i, mode="RGBA" if i % 2 else "RGB").save(zhao / "CT_COVID" / name)  # COVID-CT has RGB(A) crops
    for i, name in enumerate(NONCOVID):
        (zhao / "CT_NonCOVID").mkdir(parents=True, exist_ok=True)
        _gray(100 + i).save(zhao / "CT_NonCOVID" / name)
    (zhao / "CT_NonCOVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")

    doctor = root / "medseg_train" / "LungInfection-Train" / "Doctor-label"
    multi = root / "medseg_train" / "MultiClassInfection-Train"
    for d in (doctor / "Imgs", doctor / "GT", multi / "Imgs", multi / "GT"):
        d.mkdir(parents=True)
    for i in range(6):
        image = _gray(200 + i)
        image.save(multi / "Imgs" / f"{i}.jpg")
        PILImage.fromarray(_labels(i)).convert("P").save(multi / "GT" / f"{i}.png")
        if i == 5:
            continue  # slice 5: only the multi-class mask exists
        image.save(doctor / "Imgs" / f"{i}.jpg")
        mask = _lesion(i) * 255
        if i == 3:  # a mask at half the image's size: resized nearest-neighbour
            PILImage.fromarray(mask).resize((SIZE[0] // 2, SIZE[1] // 2), PILImage.NEAREST).save(doctor / "GT" / "3.png")
        elif i == 4:  # a JPG mask with JPEG noise and a little added noise
            noisy = np.clip(mask.astype(int) + np.random.default_rng(4).integers(-30, 31, mask.shape), 0, 255)
            PILImage.fromarray(noisy.astype(np.uint8)).save(doctor / "GT" / "4.jpg", quality=75)
        else:
            PILImage.fromarray(mask).save(doctor / "GT" / f"{i}.png")

    infnet = root / "infnet_unlabeled"
    (infnet / "Imgs").mkdir(parents=True)
    (infnet / "PseudoGT_model_generated").mkdir()
    for i, stem in enumerate(INFNET):
        _gray(300 + i).save(infnet / "Imgs" / f"{stem}.jpg")
        soft = (_lesion(300 + i) * 200 + np.random.default_rng(i).integers(0, 50, SIZE[::-1])).astype(np.uint8)
        PILImage.fromarray(soft).save(infnet / "PseudoGT_model_generated" / f"{stem}.png")  # soft probability map
    return root


def _read(csv_path: Path) -> list[dict]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    with pytest.warns(UserWarning, match="broken.png"):
        result = prepare_data(tree, out, progress=False)
    return result, out


def test_group_rules_from_names():
    assert covid_ct_covid_group("2020.01.24.919183-p27-132") == "2020.01.24.919183"
    assert covid_ct_covid_group("2020.02.10.20021584-p6-52%0") == "2020.02.10.20021584"
    assert covid_ct_covid_group("Talaromyces-marneffei_2020_International-p1-12%3") == \
        "Talaromyces-marneffei_2020_International"
    groups = covid_ct_noncovid_groups([("1", ".png"), ("2", ".png"), ("4", ".png"), ("10", ".png"),
                                       ("20%0", ".jpg"), ("20%1", ".jpg"), ("21", ".jpg")])
    assert groups["1.png"] == groups["2.png"] == groups["4.png"] == "png-1-4"
    assert groups["10.png"] == "png-10"
    assert groups["20%0.jpg"] == groups["20%1.jpg"] == "jpg-20" != groups["21.jpg"]
    assert infnet_group("Data-1_coronacases_org_001_12") == "coronacases_org_001"
    assert infnet_group("Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_3-dcm_7") == \
        infnet_group("Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm_1") == \
        "radiopaedia_org_covid-19-pneumonia-10"


def test_binarize_thresholds():
    assert binarize_mask(np.array([0, 3, 127, 128, 255]), "binary").tolist() == [0, 0, 0, 1, 1]
    assert binarize_mask(np.array([0, 1, 2]), "labels").tolist() == [0, 1, 1]
    assert binarize_mask(np.array([0, 1]), "binary").tolist() == [0, 1]  # a 0/1 mask stored as such


def test_labels_sources_and_manifest_reads(prepared, tree):
    result, out = prepared
    rows = _read(out / "manifest.csv")
    assert list(rows[0]) == ["image", "mask", "label", "split", "source", "group"]
    by_name = {Path(r["image"]).name: r for r in rows}
    assert all(by_name[n]["label"] == "covid" and by_name[n]["source"] == "covid_ct" for n in COVID)
    assert all(by_name[n]["label"] == "non-covid" for n in NONCOVID)
    assert "broken.png" not in by_name and any("broken.png" in w for w in result.warnings)
    medseg = [r for r in rows if r["source"] == "medseg"]
    assert len(medseg) == 6 and all(r["label"] == "covid" and r["mask"] for r in medseg)  # one row per slice
    assert sum(r["source"] == "infnet" and r["label"] == "" for r in rows) == len(INFNET)  # patient-level only
    assert {r["split"] for r in rows} == {"train", "val"}

    manifest = read_manifest(out / "manifest.csv")
    assert len(manifest) == len(rows) == len(COVID) + len(NONCOVID) + 6 + len(INFNET)
    assert all(Path(r.image).is_file() and (r.mask is None or Path(r.mask).is_file()) for r in manifest)
    assert {r.source for r in manifest} == {"covid_ct", "medseg", "infnet"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["medseg"]["train"]["covid"]["masks"] + \
        summary["counts"]["medseg"]["val"]["covid"]["masks"] == 6
    assert summary["masks_resized"] == 1 and summary["skipped_unreadable"] == 1


def test_masks_are_binary_with_image_size(prepared, tree):
    _, out = prepared
    rows = {Path(r["image"]).stem: r for r in _read(out / "manifest.csv") if r["source"] == "medseg"}
    for stem, row in rows.items():
        mask = np.asarray(PILImage.open(out / row["mask"]))
        assert mask.dtype == np.uint8 and mask.shape == SIZE[::-1] and set(np.unique(mask)) <= {0, 1}
        assert row["mask"].startswith("masks/medseg/")
        if stem in ("0", "1", "2"):
            assert np.array_equal(mask, _lesion(int(stem)))
    noisy = np.asarray(PILImage.open(out / rows["4"]["mask"]))
    assert (noisy == _lesion(4)).mean() > 0.98  # JPEG noise thresholded away
    assert np.array_equal(np.asarray(PILImage.open(out / rows["5"]["mask"])), (_labels(5) > 0).astype(np.uint8))


def test_groups_never_straddle_and_every_source_validates(prepared):
    _, out = prepared
    rows = _read(out / "manifest.csv")
    splits = defaultdict(set)
    for r in rows:
        splits[r["group"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    for source in ("covid_ct", "medseg", "infnet"):
        assert {"train", "val"} <= {r["split"] for r in rows if r["source"] == source}, source
    for label in ("covid", "non-covid"):  # stratified within COVID-CT
        assert "val" in {r["split"] for r in rows if r["source"] == "covid_ct" and r["label"] == label}
    radiopaedia10 = {r["split"] for r in rows if "pneumonia-10_" in r["image"]}
    assert len(radiopaedia10) == 1  # two series of one case stay together


def test_pseudo_masks_only_with_flag_and_only_on_train(tree, prepared, tmp_path):
    _, plain = prepared
    assert not any(r["mask"] for r in _read(plain / "manifest.csv") if r["source"] == "infnet")
    with pytest.warns(UserWarning):
        prepare_data(tree, tmp_path, pseudo_masks=True, progress=False)
    infnet = [r for r in _read(tmp_path / "manifest.csv") if r["source"] == "infnet"]
    assert all(r["mask"].startswith("masks/pseudo/") for r in infnet if r["split"] == "train")
    assert all(not r["mask"] for r in infnet if r["split"] == "val")
    assert any(r["split"] == "val" for r in infnet)
    for r in infnet:
        if r["mask"]:
            mask = np.asarray(PILImage.open(tmp_path / r["mask"]))
            assert set(np.unique(mask)) <= {0, 1} and mask.shape == SIZE[::-1]


def test_same_seed_same_split_and_split_is_groupwise():
    from covid_mtl.train.public_sets import Entry

    entries = [Entry(Path(f"{g}_{i}.png"), "covid", "infnet", f"infnet:{g}") for g in "abcdefghij" for i in range(3)]
    first = assign_splits(entries, 0.2, seed=1)
    assert first == assign_splits(entries, 0.2, seed=1)
    assert first.count("val") == 6  # 2 of 10 groups, whole
    assert assign_splits(entries, 0.0, seed=1).count("val") == 0


def test_subset_of_layouts(tree, tmp_path):
    with pytest.warns(UserWarning):
        result = prepare_data(tree / "covid_ct_zhao", tmp_path, progress=False)
    assert {r["source"] for r in result.rows} == {"covid_ct"}


def test_empty_dir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CovidMTLError, match="none of the known layouts"):
        prepare_data(tmp_path / "empty", tmp_path / "out", progress=False)
    assert main(["prepare-data", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "none of the known layouts" in capsys.readouterr().err


def test_cli_runs_and_prints_summary(tree, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["prepare-data", "--data", str(tree), "--out", str(out), "--val-fraction", "0.3", "--seed", "2",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "medseg" in printed and "infnet" in printed and "CC BY-NC-SA" in printed and "broken.png" in printed
    assert len(read_manifest(out / "manifest.csv")) == len(COVID) + len(NONCOVID) + 6 + len(INFNET)


def test_upstream_layouts_and_test_portions_ignored(tree, tmp_path):
    """A user's own clones: Inf-Net's Dataset/TrainingSet (Pseudo-label/{Imgs,GT}) and UCSD's Images-processed;
    Inf-Net's TestingSet is never read."""
    import shutil

    user = tmp_path / "user"
    train = user / "Inf-Net" / "Dataset" / "TrainingSet"
    shutil.copytree(tree / "medseg_train" / "LungInfection-Train" / "Doctor-label",
                    train / "LungInfection-Train" / "Doctor-label")
    shutil.copytree(tree / "medseg_train" / "MultiClassInfection-Train", train / "MultiClassInfection-Train")
    shutil.copytree(tree / "infnet_unlabeled" / "Imgs", train / "LungInfection-Train" / "Pseudo-label" / "Imgs")
    shutil.copytree(tree / "infnet_unlabeled" / "PseudoGT_model_generated",
                    train / "LungInfection-Train" / "Pseudo-label" / "GT")
    shutil.copytree(tree / "medseg_train" / "LungInfection-Train" / "Doctor-label",
                    user / "Inf-Net" / "Dataset" / "TestingSet" / "LungInfection-Test")
    shutil.copytree(tree / "covid_ct_zhao" / "CT_COVID", user / "COVID-CT" / "Images-processed" / "CT_COVID")
    with pytest.warns(UserWarning, match="resized nearest-neighbour"):
        result = prepare_data(user, tmp_path / "out", pseudo_masks=True, progress=False)
    assert {r["source"] for r in result.rows} == {"covid_ct", "medseg", "infnet"}
    assert not any("Test" in r["image"] for r in result.rows)
    assert sum(r["source"] == "medseg" for r in result.rows) == 6
    assert any(r["mask"].startswith("masks/pseudo/") for r in result.rows)
