"""Replay while fine-tuning (issue 20): an earlier training set learnt beside a few corrections, with its own share
of the draws, so a round of the annotation loop does not forget what the served model knew."""
from pathlib import Path

import numpy as np
import pytest
import torch

from covid_mtl.errors import CovidMTLError
from covid_mtl.nets.checkpoint import load_checkpoint
from covid_mtl.nets.preprocessing import Preprocessing
from covid_mtl.train.engine import ROUND, TrainConfig, replay_records
from covid_mtl.train.loop import train
from covid_mtl.train.samples import build_dataset, draw_weights, train_sampler
from covid_mtl.train.selection import split_validation
from tests.lib.test_training import write_phantoms

torch.set_num_threads(1)


def _sample(replay: bool, positive: bool | None, collection: str = "") -> dict:
    weight = np.array([0.0 if positive is None else 1.0, 0, 0], np.float32)
    target = np.array([1.0 if positive else 0.0, 0, 0], np.float32)
    return {"replay": replay, "cls_weight": weight, "cls_target": target, "collection": collection}


def test_the_replayed_set_gets_its_share_of_the_draws_and_each_part_its_own_balance() -> None:
    new = [_sample(False, True)] * 3  # three corrections, all COVID
    old = [_sample(True, True, "a")] * 90 + [_sample(True, False, "b")] * 10
    weights = draw_weights(new + old, balance=True, replay_share=0.3)
    assert weights[:3].sum() == pytest.approx(0.7) and weights[3:].sum() == pytest.approx(0.3)
    assert weights[3:93].sum() == pytest.approx(weights[93:].sum())  # balanced within the replayed set
    alone = draw_weights(new, balance=True, replay_share=0.3)  # nothing replayed: the corrections take it all
    assert alone.sum() == pytest.approx(1.0) and np.allclose(alone, 1 / 3)
    uniform = draw_weights(new + old, balance=False, replay_share=0.5)
    assert np.allclose(uniform[:3], 0.5 / 3) and np.allclose(uniform[3:], 0.5 / 100)


def test_a_sampler_over_a_dataset_with_replay_draws_the_share(tmp_path: Path) -> None:
    corrections = write_phantoms(tmp_path / "new", [0])
    earlier = write_phantoms(tmp_path / "old", [1, 2, 4])
    dataset = build_dataset(corrections, Preprocessing(size=32), replay=earlier)
    flags = np.array([s["replay"] for s in dataset.data])
    assert flags.any() and not flags.all() and not flags[: int((~flags).sum())].any()  # new first, then replayed
    sampler = train_sampler(dataset, 8, 250, True, torch.Generator().manual_seed(0), replay_share=0.25)
    drawn = flags[list(sampler)]
    assert len(drawn) == 2000 and abs(drawn.mean() - 0.25) < 0.04


def _manifest(folder: Path, records: list[dict], splits: list[str]) -> Path:
    lines = ["image,mask,label,split"] + [f"{r['image']},{r['mask'] or ''},{r['label'] or ''},{s}"
                                           for r, s in zip(records, splits)]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_records_are_labelled_training_rows_drawn_with_the_seed(tmp_path: Path) -> None:
    records = write_phantoms(tmp_path, [0, 1, 2, 3, 4, 5])
    records[5]["mask"], records[5]["label"] = None, None  # unlabelled: nothing to remember
    manifest = _manifest(tmp_path, records, ["train", "train", "train", "val", "test", "train"])
    rows = replay_records(TrainConfig(replay=str(manifest)))
    assert sorted(Path(r.image).name for r in rows) == sorted(Path(records[i]["image"]).name for i in (0, 1, 2))
    skip = replay_records(TrainConfig(replay=str(manifest)), exclude=[{"image": records[1]["image"]}])
    assert len(skip) == 2 and records[1]["image"] not in {r.image for r in skip}
    two = [r.image for r in replay_records(TrainConfig(replay=str(manifest), replay_images=2, seed=3))]
    assert len(two) == 2 and two == [r.image for r in replay_records(TrainConfig(replay=str(manifest),
                                                                                 replay_images=2, seed=3))]
    assert replay_records(TrainConfig()) == []
    (tmp_path / "empty").mkdir()
    empty = _manifest(tmp_path / "empty", records[3:5], ["val", "test"])
    with pytest.raises(CovidMTLError, match="no labelled training rows"):
        replay_records(TrainConfig(replay=str(empty)))
    with pytest.raises(CovidMTLError, match="replay share"):
        TrainConfig(replay_share=1.0)


def test_a_round_holds_nothing_back_for_validation() -> None:
    rows = [{"image": f"{i}.png", "mask": f"{i}_m.png", "label": "covid"} for i in range(6)]
    train_rows, val_rows = split_validation(rows, ROUND.val_fraction)
    assert ROUND.val_fraction == 0 and train_rows == rows and val_rows == []
    assert len(split_validation(rows, 0.2)[1]) == 1


def test_fine_tuning_with_replay_records_it_and_learns(tmp_path: Path) -> None:
    base = write_phantoms(tmp_path / "base", [0, 1, 2])
    manifest = _manifest(tmp_path / "base", base, ["train"] * 3)
    first = train(TrainConfig(config="tiny", epochs=1, steps_per_epoch=2, batch_size=2, device="cpu"),
                  base, [], tmp_path / "first", progress=False)
    corrections = write_phantoms(tmp_path / "new", [3])
    cfg = TrainConfig(init=str(first.last_checkpoint), epochs=3, steps_per_epoch=6, batch_size=4, lr=1e-3,
                      device="cpu", replay=str(manifest), replay_images=2, augment=False)
    result = train(cfg, corrections, [], tmp_path / "round", progress=False)
    meta = load_checkpoint(result.last_checkpoint).meta
    assert meta["train_settings"]["replay_images"] == 2 and meta["train_settings"]["replay"] == str(manifest)
    losses = [epoch["train_loss"] for epoch in result.history]
    assert losses[-1] < losses[0], losses


def test_frozen_parts_and_statistics_do_not_move_while_the_rest_learns(tmp_path: Path) -> None:
    base = write_phantoms(tmp_path / "base", [0, 1, 2])
    first = train(TrainConfig(config="tiny", epochs=1, steps_per_epoch=2, batch_size=2, device="cpu"),
                  base, [], tmp_path / "first", progress=False)
    before = load_checkpoint(first.last_checkpoint).state_dict
    cfg = TrainConfig(init=str(first.last_checkpoint), epochs=1, steps_per_epoch=4, batch_size=4, lr=1e-3,
                      device="cpu", freeze="norm,encoder,classifier")
    after = load_checkpoint(train(cfg, write_phantoms(tmp_path / "new", [3]), [], tmp_path / "round",
                                  progress=False).last_checkpoint).state_dict
    frozen = [k for k in before if k.startswith(("encoder.", "classifier.")) or "running_" in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    moved = [k for k in before if k.startswith("seg_decoder.") and "running_" not in k
             and before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert moved, "the segmentation decoder must still learn"
    with pytest.raises(CovidMTLError, match="cannot freeze"):
        train(TrainConfig(init=str(first.last_checkpoint), freeze="decoder", device="cpu", max_steps=1), base, [],
              tmp_path / "bad", progress=False)
