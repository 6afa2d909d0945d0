"""`covid-mtl train` and the MONAI Label train task are one training set-up (issue 22): a new model takes the CLI's
defaults, and on the same images with the same settings both train the same weights and write the same checkpoint
metadata (``covid_mtl.train.engine``). The task runs in this process, as MONAI Label's task subprocess runs it."""
from __future__ import annotations

import shutil
from dataclasses import asdict

import pytest
import torch

from covid_mtl.io.manifest import read_manifest
from covid_mtl.nets.checkpoint import load_checkpoint
from covid_mtl.train.engine import build_training_model
from covid_mtl.train.loop import TrainConfig, train
from covid_mtl.train.selection import split_validation
from tests.server import app_module

SETTINGS = {"epochs": 2, "steps_per_epoch": 2, "val_steps": 1, "batch_size": 2, "augment": False}
REQUEST = {"max_epochs": 2, "steps_per_epoch": 2, "val_steps": 1, "train_batch_size": 2, "augment": False,
           "fine_tune": False, "model_config": "tiny", "device": "cpu"}


@pytest.fixture(scope="module")
def task_class():
    trainer = app_module("lib.trainers.covid_mtl")
    return trainer.CovidMTLTrain, trainer.DEFAULTS


def test_a_new_model_takes_the_cli_defaults_and_a_plain_request_is_a_round(task_class, tmp_path) -> None:
    """``{"fine_tune": false}`` trains anew with the CLI's defaults; a plain request is one round of the
    annotation loop (issue 20), with the core's ``ROUND`` defaults, both named in one place."""
    import argparse

    from covid_mtl.commands.train import register
    from covid_mtl.train.engine import ROUND

    CovidMTLTrain, defaults = task_class
    trainer = app_module("lib.trainers.covid_mtl")
    assert asdict(defaults) == asdict(TrainConfig())
    config = CovidMTLTrain(str(tmp_path), str(tmp_path / "covid_mtl.pt"), [], "lite", "cpu").config()
    keys = ("max_epochs", "early_stop_patience", "train_batch_size", "learning_rate", "val_split", "steps_per_epoch")
    assert tuple(config[k] for k in keys) == (ROUND.epochs, ROUND.patience, ROUND.batch_size, ROUND.lr,
                                              ROUND.val_fraction, ROUND.steps_per_epoch)
    anew = trainer.request_defaults(defaults)
    parser = argparse.ArgumentParser().add_subparsers()
    register(parser)
    cli = parser.choices["train"].parse_args(["--manifest", "m.csv", "--out", "o"])
    expected = (defaults.epochs, defaults.patience, defaults.batch_size, defaults.lr, defaults.val_fraction, 0)
    assert tuple(anew[k] for k in keys) == expected
    assert expected[:4] == (cli.epochs, cli.patience, cli.batch_size, cli.lr) and cli.steps_per_epoch is None
    assert (cli.replay_share, cli.replay_images) == (defaults.replay_share, defaults.replay_images)


def test_cli_and_train_task_train_the_same_model(tmp_path, sample_data, task_class) -> None:
    from monailabel.datastore.local import LocalDatastore

    CovidMTLTrain, _ = task_class
    studies = tmp_path / "studies"
    shutil.copytree(sample_data, studies, ignore=shutil.ignore_patterns("datastore_v2.json", ".lock", "dicom*"))
    lines = [line for line in (studies / "manifest.csv").read_text().splitlines() if "dicom" not in line]
    (studies / "manifest.csv").write_text("\n".join(lines) + "\n")

    train_rows, val_rows = split_validation(read_manifest(studies / "manifest.csv"), 0.2, seed=0)
    cli = train(TrainConfig(config="tiny", device="cpu", **SETTINGS), train_rows, val_rows, tmp_path / "cli",
                progress=False)

    model_dir = tmp_path / "app_model"
    model_dir.mkdir()
    task = CovidMTLTrain(str(model_dir), str(model_dir / "covid_mtl.pt"), [], model_config="tiny", device="cpu")
    datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.png"), auto_reload=False)
    task(dict(REQUEST), datastore)

    ours, theirs = load_checkpoint(cli.last_checkpoint), load_checkpoint(model_dir / "covid_mtl.pt")
    assert set(ours.meta) == set(theirs.meta)
    assert ours.meta["trained_by"] == "covid-mtl train" and theirs.meta["trained_by"] == "monailabel"
    assert ours.meta["decision"] == theirs.meta["decision"]
    assert ours.meta["preprocessing"] == theirs.meta["preprocessing"]
    shared = {k for k in ours.meta["train_settings"] if k != "device"}
    assert {k: ours.meta["train_settings"][k] for k in shared} == \
        {k: theirs.meta["train_settings"][k] for k in shared}
    # the task publishes its best epoch; with two epochs compare the weights of the epoch both kept last
    assert theirs.meta["epoch"] in (1, 2)
    same = load_checkpoint(cli.best_checkpoint) if theirs.meta["epoch"] == cli.best_epoch else ours
    assert same.meta["epoch"] == theirs.meta["epoch"]
    for key, value in same.state_dict.items():
        assert torch.allclose(value, theirs.state_dict[key], atol=1e-6), key
    start = build_training_model(TrainConfig(config="tiny"))[0].state_dict()  # the same seed's initial weights
    assert any(not torch.allclose(v, start[k]) for k, v in same.state_dict.items())  # both did train
