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


def test_every_round_starts_from_the_round_base_until_another_model_is_served(tmp_path: Path) -> None:
    import torch

    from covid_mtl.nets.checkpoint import checkpoint_digest, save_checkpoint
    from covid_mtl.nets.config import get_config, parse_tasks
    from covid_mtl.nets.factory import build_model
    from tests.server import app_module

    rb = app_module("lib.trainers.round_base")
    config = get_config("tiny")
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "covid_mtl.pt", build_model(config, parse_tasks(None, config)))
    base = Path(rb.round_base(str(start), str(tmp_path)))
    assert base.name == rb.BASE_NAME and base.read_bytes() == start.read_bytes()
    # a round's model records its base: the next round starts from that base, not from the round's model
    made = {rb.MADE_FROM: checkpoint_digest(base)}
    torch.manual_seed(1)
    save_checkpoint(start, build_model(config, parse_tasks(None, config)), meta={"train_settings": made})
    assert rb.round_base(str(start), str(tmp_path)) == str(base) and base.read_bytes() != start.read_bytes()
    # a model no round made from this base (an admin's, a new training) becomes the new base
    torch.manual_seed(2)
    save_checkpoint(start, build_model(config, parse_tasks(None, config)), meta={"train_settings": {}})
    assert rb.round_base(str(start), str(tmp_path)) == str(base) and base.read_bytes() == start.read_bytes()
