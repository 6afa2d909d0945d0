"""One writer for datastore_v2.json (issue 13): a scoring run (its own process, with its own copy of the
datastore) interleaved with label saves must not write back a stale copy; after a restart every class and mask
is the last one saved. Uncertainty scores are keyed by the model's version, so a retrained model published under
the same path re-scores.

Two servers in sequence on one studies folder and one app folder. MONAI Label's auto-reload (a file watcher that
sometimes refreshes a process's copy in time) is off, so a stale copy is written back every time, not by chance.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
import torch

from covid_mtl.image import CLASSES
from covid_mtl.nets.checkpoint import load_model, save_checkpoint
from covid_mtl.nets.packaged import packaged_model_path
from tests.server import Server, Site, box_label, stop

TIMEOUT = 120
LABELLED = ("covid_001", "normal_001", "other_001")
EXTRA = [f"extra_{i}" for i in range(8)]  # more unlabeled images: the scoring run writes for several seconds


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    site = Site(tmp_path_factory.mktemp("datastore_writer"), env={"MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false"})
    for name in EXTRA:
        shutil.copy(site.studies / "covid_002.nii.gz", site.studies / f"{name}.nii.gz")
    site.start()
    yield site
    if site.server is not None:
        stop(site.server)


def mask_bytes(studies: Path, image: str, k: int) -> bytes:
    return box_label(studies, image, (slice(20 + 2 * k, 60 + 2 * k), slice(40, 90), slice(5, 25)))


def save(server: Server, image: str, data: bytes, label: str) -> None:
    r = requests.put(f"{server.url}/datastore/label", params={"image": image, "tag": "final"},
                     files={"label": (f"{image}.nii.gz", data, "application/octet-stream")},
                     data={"params": json.dumps({"classification": label})}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def scoring_status(server: Server) -> str:
    r = requests.get(f"{server.url}/scoring/", timeout=30)
    return r.json().get("status", "") if r.status_code == 200 else ""


def check_last_saved(site: Site, last: dict) -> None:
    datastore = json.loads((site.studies / "datastore_v2.json").read_text())
    for image, (data, label) in last.items():
        assert (site.studies / "labels" / "final" / f"{image}.nii.gz").read_bytes() == data, image
        assert datastore["objects"][image]["labels"]["final"]["info"]["classification"] == label, image
        info = requests.get(f"{site.server.url}/datastore/label/info", params={"label": image, "tag": "final"},
                            timeout=30).json()
        assert info["classification"] == label, image


def scores_on_disk(studies: Path) -> list[str]:
    datastore = json.loads((studies / "datastore_v2.json").read_text())
    return [i for i, o in datastore["objects"].items() if "covid_mtl_uncertainty" in o["image"]["info"]]


def test_scoring_run_and_label_saves_interleaved_keep_the_last_save(site: Site) -> None:
    """Saves run while the scoring process starts, loads the datastore and scores, and stop at its first write,
    so its later writes would carry the labels as they were when it loaded them."""
    server = site.server
    r = requests.post(f"{server.url}/scoring/covid_mtl_uncertainty", json={}, timeout=30)
    assert r.status_code == 200, r.text
    last, saves_while_running, k = {}, 0, 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not scores_on_disk(site.studies):
        status = scoring_status(server)
        if status in ("DONE", "ERROR", "STOPPED"):
            break
        image = LABELLED[k % 3]
        data, label = mask_bytes(site.studies, image, k % 7), CLASSES[(k // 3) % 3]
        save(server, image, data, label)
        last[image] = (data, label)
        saves_while_running += status == "RUNNING"
        k += 1
    while time.monotonic() < deadline and scoring_status(server) not in ("DONE", "ERROR", "STOPPED"):
        time.sleep(0.5)
    assert scoring_status(server) == "DONE", requests.get(f"{server.url}/scoring/", timeout=30).text[-2000:]
    assert saves_while_running >= 3
    check_last_saved(site, last)
    assert len(scores_on_disk(site.studies)) == 3 + len(EXTRA), "the scoring run's own results were lost"
    site.restart()
    check_last_saved(site, last)


def publish_variant(app_dir: Path, seed: int) -> None:
    """A retrained model, published the way training does: same path, atomic replace."""
    model, checkpoint = load_model(packaged_model_path())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=generator))
    (app_dir / "model").mkdir(exist_ok=True)
    save_checkpoint(app_dir / "model" / "covid_mtl.pt", model, meta={"seed": seed})


def next_sample(server: Server) -> tuple[str, dict]:
    r = requests.post(f"{server.url}/activelearning/uncertainty", json={}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    chosen = r.json()["id"]
    info = requests.get(f"{server.url}/datastore/image/info", params={"image": chosen}, timeout=30).json()
    return chosen, info["covid_mtl_uncertainty"]


def served_version(server: Server) -> str:
    r = requests.post(f"{server.url}/infer/covid_mtl", params={"image": "covid_002", "output": "json"},
                      data={"params": "{}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def test_uncertainty_scores_are_keyed_by_model_version(site: Site) -> None:
    server = site.server
    for name in EXTRA:  # removals go through the one writer too
        r = requests.delete(f"{server.url}/datastore/image", params={"id": name}, timeout=30)
        assert r.status_code == 200, r.text
        assert not (site.studies / f"{name}.nii.gz").exists()
    assert not set(EXTRA) & set(json.loads((site.studies / "datastore_v2.json").read_text())["objects"])
    versions = []
    for seed in (None, 1, 2):  # the packaged model, then two retrained ones under the same published path
        if seed is not None:
            publish_variant(site.app_dir, seed)
        version = served_version(server)
        _, cached = next_sample(server)
        assert cached["model"] == version, (seed, cached)
        versions.append(version)
    assert len(set(versions)) == 3
    info = requests.get(f"{server.url}/info/", timeout=30).json()
    assert info["models"]["covid_mtl"]["model"] == versions[-1]
