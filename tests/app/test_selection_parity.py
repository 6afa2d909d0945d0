"""`covid-mtl train` and the MONAI Label train task choose validation images and the best model the same way
(issue 11): the same studies folder gives the same validation images, and the same scores keep the same epoch."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from covid_mtl.io.manifest import read_manifest
from covid_mtl.train.selection import best_epoch, selection_score, split_validation
from covid_mtl.train.step import EpochStats
from tests.server import app_module



@pytest.fixture(scope="module")
def app_trainer():
    return app_module("lib.trainers.covid_mtl").CovidMTLTrain, app_module("lib.trainers.datalist").datastore_records


def _studies(tmp_path: Path, sample_data: Path, with_split: bool) -> Path:
    studies = tmp_path / ("split" if with_split else "nosplit")
    shutil.copytree(sample_data, studies, ignore=shutil.ignore_patterns("datastore_v2.json", ".lock", "dicom*"))
    # the DICOM series is not a datastore image (MONAI Label's local datastore lists files)
    lines = [line for line in (studies / "manifest.csv").read_text().splitlines() if "dicom" not in line]
    if not with_split:  # no val rows: the seeded per-source share of labelled groups decides
        lines = [line.rsplit(",", 1)[0] for line in lines]
    (studies / "manifest.csv").write_text("\n".join(lines) + "\n")
    return studies


@pytest.mark.parametrize("with_split", [True, False])
def test_cli_and_app_validate_on_the_same_images(tmp_path, sample_data, app_trainer, with_split):
    from monailabel.datastore.local import LocalDatastore

    CovidMTLTrain, datastore_records = app_trainer
    studies = _studies(tmp_path, sample_data, with_split)
    cli_train, cli_val = split_validation(read_manifest(studies / "manifest.csv"), 0.2, seed=0)

    datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.png"), auto_reload=False)
    task = CovidMTLTrain.__new__(CovidMTLTrain)  # only the partition step: no model folder, no server

    class Context:
        datalist = datastore_records(datastore)
        request = {"val_split": 0.2}

    app_train, app_val = task.partition_datalist(Context())
    real = lambda items: sorted(os.path.realpath(getattr(i, "image", None) or i["image"]) for i in items)  # noqa
    assert real(cli_val) and real(app_val) == real(cli_val)
    assert real(app_train) == real(cli_train)


def test_cli_and_app_keep_the_same_best_epoch(app_trainer):
    from monai.engines.utils import default_metric_cmp_fn

    CovidMTLTrain, _ = app_trainer
    # per-epoch validation numbers with a tie (epochs 2 and 4) and a loss that keeps falling after the best
    epochs = [{"dice": 0.40, "covid_auc": 0.70, "loss": 0.9}, {"dice": 0.60, "covid_auc": 0.80, "loss": 0.8},
              {"dice": 0.55, "covid_auc": 0.70, "loss": 0.7}, {"dice": 0.70, "covid_auc": 0.70, "loss": 0.6}]
    scores = [selection_score(e) for e in epochs]
    cli_best = best_epoch(scores)
    app_best, best = 0, None  # MONAI's engines keep the key metric's best with their default comparison
    for epoch, score in enumerate(scores, start=1):
        if best is None or default_metric_cmp_fn(score, best):
            app_best, best = epoch, score
    assert cli_best == app_best == 2  # the tie stays with the earlier epoch; the loss does not decide
    task = CovidMTLTrain.__new__(CovidMTLTrain)

    class Context:
        network = type("Net", (), {"tasks": ("recon", "seg", "cls")})()
        covid_mtl_loss = None

    Context.covid_mtl_loss = type("Loss", (), {"lambdas": {"recon": 1.0, "seg": 1.0, "cls": 1.0}})()
    key = task.val_key_metric(Context())
    assert list(key) == ["val_score"] and key["val_score"].key == "score"
    assert EpochStats({"seg": 1.0}).compute()["score"] == selection_score(EpochStats({"seg": 1.0}).compute())
