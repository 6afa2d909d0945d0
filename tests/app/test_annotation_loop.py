"""The annotation loop on a real server (issue 20): the short version of ``bench.annotation_loop`` drives a real
MONAI Label server over HTTP (strategy picks, corrections as final labels, train rounds that publish and swap in
a new model) and writes its curves; the seeded random strategy; the admin's replay set checked at start-up."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from PIL import Image as PILImage

from tests.server import copy_studies, quiet_env, running_server, start

TIMEOUT = 120


def test_the_short_loop_serves_a_new_model_each_round_and_writes_its_curves(tmp_path: Path) -> None:
    from bench import annotation_loop

    out = tmp_path / "loop"
    assert annotation_loop.main(["--quick", "--work", str(tmp_path), "--out", str(out)]) == 0
    rounds = json.loads((out / "rounds.json").read_text())["rounds"]
    for strategy in ("uncertainty", "random"):
        mine = [r for r in rounds if r["strategy"] == strategy]
        assert [r["corrections"] for r in mine] == [0, 2, 3]
        assert len({r["model"] for r in mine}) == 3, "every round must serve a new model"
        picked = [i for r in mine for i in r["picked"]]
        assert len(picked) == len(set(picked)) == 3
        for r in mine[1:]:
            assert r["seconds"]["train"] > 0 and r["dice"] is not None and r["auc"] is not None
    corrected = {i for r in rounds for i in r["picked"]}
    # the pool holds 3D volumes and 2D slices (PNG); both serve as corrections
    assert any("_slice_" in i for i in corrected) and any("_slice_" not in i for i in corrected), corrected
    uncertainty = [r for r in rounds if r["strategy"] == "uncertainty"]
    # each pick was ranked by the model served at that moment: after a round, by the newly published one
    assert uncertainty[1]["scored_with"] == [f"tiny-{uncertainty[0]['model']}"]
    assert uncertainty[2]["scored_with"] == [f"tiny-{uncertainty[1]['model']}"]
    with PILImage.open(out / "curves.png") as png:
        assert png.format == "PNG" and png.size[0] > 600


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("loop_server")
    with running_server(copy_studies(work / "studies"), work, conf={"preload": "false"}, env=quiet_env(work)) as s:
        yield s


def test_random_order_is_repeatable_with_a_seed_and_skips_labelled_images(server) -> None:
    def pick(seed):
        r = requests.post(f"{server.url}/activelearning/random", json={"seed": seed}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        return r.json()["id"]

    labelled = {p.name.split(".")[0] for p in (server.studies / "labels" / "final").iterdir()}
    picks = {seed: pick(seed) for seed in range(8)}
    assert all(pick(seed) == chosen for seed, chosen in picks.items())
    assert not set(picks.values()) & labelled and len(set(picks.values())) > 1
    r = requests.post(f"{server.url}/activelearning/random", json={"seed": "x1"}, timeout=TIMEOUT)
    assert r.status_code == 400 and "seed" in r.json()["detail"], r.text


def test_the_train_task_shows_a_round_as_its_defaults(server) -> None:
    info = requests.get(f"{server.url}/info/", timeout=TIMEOUT).json()
    config = info["trainers"]["covid_mtl"]["config"]
    assert config["fine_tune"] is True and config["val_split"] == 0 and config["max_epochs"] == 1
    assert config["replay"] is False  # no replay set configured


def test_a_replay_set_that_cannot_be_trained_on_stops_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "base.csv"
    bad.write_text("image,label,split\nmissing.png,covid,train\n")
    with pytest.raises(RuntimeError, match="replay_manifest"):
        start(copy_studies(tmp_path / "studies"), tmp_path, conf={"preload": "false", "replay_manifest": str(bad)},
              env=quiet_env(tmp_path))
