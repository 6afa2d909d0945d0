"""The annotation loop on a real server: do corrections make the served model better, and does "Next case" pick
the corrections that help most?

An annotation team simulated over HTTP. A pool of images whose true masks are held back is served by a real
MONAI Label server that starts from a model which has never seen them. Each round the server's strategy
(``POST /activelearning/<strategy>``) picks the next images, the simulated reader sends each one's true mask and
class as the ``final`` label (``PUT /datastore/label``), and when the round's budget of corrections is reached
the train task (``POST /train/covid_mtl`` with its defaults: one round, ``covid_mtl.train.engine.ROUND``)
fine-tunes the round base on all corrections, and the server publishes the new model and swaps it in. The served
model (``GET /model/covid_mtl``) is then scored on a fixed validation set that is never in the pool. Every
strategy and seed starts from the same model and the same pool.

``python -m bench.annotation_loop``: the real run (about 20 minutes on 2 CPU cores). Pool: the MedSeg slices with
radiologist masks in the training part of the project's one split (40). Validation: MedSeg's validation slices
(10, lesion Dice) and COVID-CT's validation slices (100, COVID AUC). The start model is the packaged recipe without
any MedSeg row (``--start-model``; made first when absent, about 30 minutes, and the command is printed). The
server replays that model's own training manifest (``--conf replay_manifest``). ``--train KEY=VALUE`` changes
every round's request (how the round's defaults were chosen).
``--quick``: synthetic phantoms (NIfTI volumes and PNG slices), a fresh ``tiny`` model, two short rounds, one
seed; what ``make test`` runs.

Writes ``rounds.json`` (every round: picks, timings, metrics), ``curves.png`` and a printed table to ``--out``.
``--docs`` also copies the curves to ``docs/annotation_loop.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.common import OUT, ROOT
from bench.loop_report import plot_curves, summary_rows, write_rounds
from tests.server import running_server

DATA = ROOT.parent / "shared" / "data" / "train"
TIMEOUT = 600


@dataclass
class Case:
    """One pool image: its id in the datastore, the file served, the correction the reader sends, its class."""

    id: str
    image: Path
    correction: Path
    label: str


@dataclass
class Setup:
    pool: list[Case]
    validation: list[Any]  # covid_mtl.io.manifest.ManifestRow
    start_model: Path
    replay: Path | None
    budgets: list[int]
    data: str
    train_request: dict[str, Any] = field(default_factory=dict)


# ----- the simulated annotation team ------------------------------------------------------------------------------
class Team:
    """What an annotation team does over HTTP, each step timed."""

    def __init__(self, url: str):
        self.url = url

    def pick(self, strategy: str, seed: int) -> str:
        r = requests.post(f"{self.url}/activelearning/{strategy}", json={"seed": seed}, timeout=TIMEOUT)
        r.raise_for_status()
        chosen = r.json().get("id")
        if not chosen:
            raise RuntimeError(f"strategy {strategy} picked nothing: {r.text}")
        return chosen

    def scored_with(self, image_id: str) -> str | None:
        """The model version whose uncertainty score of ``image_id`` the server holds (None: never scored)."""
        r = requests.get(f"{self.url}/datastore/image/info", params={"image": image_id}, timeout=TIMEOUT)
        r.raise_for_status()
        return (r.json().get("covid_mtl_uncertainty") or {}).get("model")

    def correct(self, case: Case) -> None:
        with open(case.correction, "rb") as f:
            r = requests.put(f"{self.url}/datastore/label", params={"image": case.id, "tag": "final"},
                             files={"label": (case.correction.name, f, "application/octet-stream")},
                             data={"params": json.dumps({"classification": case.label})}, timeout=TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"correction of {case.id} refused: {r.status_code} {r.text}")

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.url}/train/covid_mtl", json=request, timeout=60)
        r.raise_for_status()
        task_id = r.json()["id"]
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            tasks = requests.get(f"{self.url}/train/", params={"all": "true"}, timeout=60).json()
            task = next((t for t in tasks if t.get("id") == task_id), {})
            if task.get("status") in ("DONE", "ERROR"):
                if task["status"] != "DONE":
                    raise RuntimeError(f"training failed:\n{''.join(task.get('details', []))[-3000:]}")
                return task
            time.sleep(1)
        raise RuntimeError("training did not finish in an hour")

    def served_model(self, dest: Path) -> str:
        r = requests.get(f"{self.url}/model/covid_mtl", timeout=TIMEOUT)
        r.raise_for_status()
        dest.write_bytes(r.content)
        return hashlib.sha256(r.content).hexdigest()[:12]


def score(model: Path, rows: list[Any]) -> dict[str, Any]:
    """Validation lesion Dice (global and mean over slices) and COVID-vs-rest AUC (with its grouped 95 % interval)
    of ``model`` on ``rows``, by the core's evaluation."""
    from covid_mtl.evaluation.evaluate import compute_metrics, evaluate_rows
    from covid_mtl.predict.predictor import Predictor

    predictor = Predictor.from_checkpoint(model, device="cpu")
    cases, _ = evaluate_rows(predictor, rows, n_overlays=0, progress=False)
    result = compute_metrics(cases, predictor.decision.threshold if predictor.decision.binary else None)
    seg, cls = result["segmentation"] or {}, result["covid_vs_rest"] or {}
    return {"dice": seg.get("dice_global"), "dice_mean": seg.get("dice_mean"), "auc": cls.get("auc"),
            "auc_ci95": cls.get("auc_ci95"), "n_dice": seg.get("n_images"), "n_auc": cls.get("n")}


def run_loop(setup: Setup, strategy: str, seed: int, work: Path, start_scores: dict[str, Any]) -> list[dict]:
    """One strategy and seed from the start model over every budget; a row per round."""
    studies = work / "studies"
    studies.mkdir(parents=True)
    for case in setup.pool:
        shutil.copy(case.image, studies / f"{case.id}{''.join(case.image.suffixes)}")
    app = _app_with_model(work / "app", setup.start_model)
    conf = {"preload": "true", **({"replay_manifest": str(setup.replay)} if setup.replay else {})}
    env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "MONAI_LABEL_SESSION_PATH": str(work / "sessions")}
    by_id = {c.id: c for c in setup.pool}
    rows = [{"strategy": strategy, "seed": seed, "round": 0, "corrections": 0, "picked": [],
             "model": _sha(setup.start_model), **start_scores}]
    with running_server(studies, work, conf=conf, env=env, app_dir=app) as server:
        team, picked, previous = Team(server.url), [], rows[0]["model"]
        for number, budget in enumerate(setup.budgets, start=1):
            started, new, scored_with = time.perf_counter(), [], set()
            pick_s = correct_s = 0.0
            while len(picked) < budget:
                t = time.perf_counter()
                chosen = team.pick(strategy, seed)
                pick_s += time.perf_counter() - t
                if strategy == "uncertainty":
                    scored_with.add(team.scored_with(chosen))
                t = time.perf_counter()
                team.correct(by_id[chosen])
                correct_s += time.perf_counter() - t
                picked.append(chosen)
                new.append(chosen)
            t = time.perf_counter()
            team.train({"seed": seed * 100 + number, **setup.train_request})
            train_s = time.perf_counter() - t
            model = work / f"served-{number}.pt"
            version = team.served_model(model)
            if version == previous:
                raise RuntimeError(f"round {number}: the served model did not change")
            t = time.perf_counter()
            scores = score(model, setup.validation)
            score_s = time.perf_counter() - t
            previous = version
            rows.append({"strategy": strategy, "seed": seed, "round": number, "corrections": len(picked),
                         "picked": new, "scored_with": sorted(scored_with), "model": version, **scores,
                         "seconds": {"pick": round(pick_s, 2), "correct": round(correct_s, 2),
                                     "train": round(train_s, 2), "score": round(score_s, 2),
                                     "round": round(time.perf_counter() - started, 2)}})
            print(f"  {strategy} seed {seed} round {number}: {len(picked)} corrections, Dice {_f(scores['dice'])}, "
                  f"AUC {_f(scores['auc'])}; pick {pick_s:.1f} s, train {train_s:.1f} s, score {score_s:.1f} s",
                  flush=True)
    return rows


def _app_with_model(dest: Path, model: Path) -> Path:
    from tests.server import copy_app

    app = copy_app(dest)
    (app / "model").mkdir()
    shutil.copy(model, app / "model" / "covid_mtl.pt")  # served as the published model: the loop's start
    return app


def _sha(path: Path) -> str:
    from covid_mtl.nets.checkpoint import checkpoint_digest

    return checkpoint_digest(path)[:12]  # as the server's model version names it


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# ----- the two set-ups -----------------------------------------------------------------------------------------
def medseg_pool(rows: list[Any]) -> list[Any]:
    """The loop's pool: the MedSeg slices the project's split puts in training."""
    return [r for r in rows if r.source == "medseg" and r.split == "train"]


def medseg_validation(rows: list[Any]) -> list[Any]:
    """The fixed validation set: MedSeg's validation slices (Dice) and COVID-CT's (AUC)."""
    return [r for r in rows if r.split == "val" and r.source in ("medseg", "covid_ct")]


def medseg_setup(data: Path, out: Path, start_model: Path | None) -> Setup:
    """The real pool and validation set by the project's one split (``covid-mtl prepare-data``)."""
    from covid_mtl.io import read_image, read_mask
    from covid_mtl.io.manifest import read_manifest
    from covid_mtl.io.write import write_mask

    if not data.is_dir():
        raise SystemExit(f"bench.annotation_loop: no training data at {data} (--data, or --quick for phantoms)")
    prepared = out / "data"
    manifest = prepared / "manifest.csv"
    if not manifest.is_file():
        _run([sys.executable, "-m", "covid_mtl.cli", "prepare-data", "--data", str(data), "--out", str(prepared),
              "--pseudo-masks", "--no-progress"])
    rows = read_manifest(manifest)
    replay = prepared / "without-medseg.csv"  # the start model's training set: every row but MedSeg's
    lines = manifest.read_text().splitlines(keepends=True)
    replay.write_text(lines[0] + "".join(line for line, row in zip(lines[1:], rows) if row.source != "medseg"))
    start = start_model or out / "start" / "model.pt"
    if not start.is_file():
        command = [sys.executable, "-m", "covid_mtl.cli", "train", "--manifest", str(replay), "--config", "lite",
                   "--out", str(start.parent), "--epochs", "12", "--steps-per-epoch", "100", "--batch-size", "16",
                   "--lr", "1e-3", "--patience", "6", "--seed", "0"]
        print("start model (never saw a MedSeg mask):", " ".join(command), flush=True)
        _run(command)
    corrections = out / "corrections"
    corrections.mkdir(parents=True, exist_ok=True)
    pool = []
    for row in medseg_pool(rows):
        case_id = f"medseg_{Path(row.image).stem}"
        correction = corrections / f"{case_id}.nii.gz"
        if not correction.is_file():
            image = read_image(row.image)
            write_mask(read_mask(row.mask, image), image, correction)
        pool.append(Case(case_id, Path(row.image), correction, row.label))
    validation = medseg_validation(rows)
    return Setup(pool, validation, start, replay, [4, 8, 16, 32], data=f"MedSeg slices ({data.name})")


def phantom_setup(out: Path) -> Setup:
    """Synthetic phantoms (3D volumes and 2D slices, every one with its mask) and a fresh tiny model."""
    from covid_mtl.demo.sample_data import write_sample_data
    from covid_mtl.io import read_image, read_mask
    from covid_mtl.io.manifest import read_manifest
    from covid_mtl.io.write import write_mask
    from covid_mtl.nets.checkpoint import save_checkpoint
    from covid_mtl.train.engine import TrainConfig, build_training_model

    shape = (12, 96, 96)
    pool_manifest = write_sample_data(out / "pool", n_per_class=1, seed=11, shape=shape, n_labelled=1,
                                      overwrite=True)
    val_manifest = write_sample_data(out / "validation", n_per_class=1, seed=12, shape=shape, n_labelled=1,
                                     overwrite=True)
    corrections = out / "corrections"
    corrections.mkdir(parents=True, exist_ok=True)
    pool = []
    for row in read_manifest(pool_manifest):
        if row.mask is None or Path(row.image).is_dir():  # the DICOM series folder: not a pool file
            continue
        case_id = Path(row.image).name.split(".")[0]
        image = read_image(row.image)
        correction = corrections / f"{case_id}.nii.gz"
        write_mask(read_mask(row.mask, image), image, correction)
        pool.append(Case(case_id, Path(row.image), correction, row.label))
    validation = [r for r in read_manifest(val_manifest) if not Path(r.image).is_dir()]
    start = save_checkpoint(out / "start.pt", build_training_model(TrainConfig(config="tiny", seed=0))[0])
    return Setup(pool, validation, start, ROOT / "sample_data" / "manifest.csv", [2, 3], data="phantoms",
                 train_request={"steps_per_epoch": 4, "train_batch_size": 2, "replay_images": 4})


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, cwd=ROOT)


# ----- the run -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.annotation_loop", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="phantoms, a tiny model, two short rounds (make test)")
    parser.add_argument("--strategies", default="uncertainty,random")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default=None, help="corrections after each round, e.g. 4,8,12 (default: "
                                                        "4,8,16,32; --quick: 2,3)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--start-model", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=OUT / "annotation_loop",
                        help="prepared data, start model and corrections, kept between runs")
    parser.add_argument("--out", type=Path, default=None, help="rounds.json and curves.png (default: --work)")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="a train request key for every round, e.g. replay=false or learning_rate=3e-5 "
                             "(default: none, the train task's own round)")
    parser.add_argument("--docs", action="store_true", help="also write docs/annotation_loop.png")
    args = parser.parse_args(argv)
    work = args.work / "quick" if args.quick else args.work
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    setup = phantom_setup(work) if args.quick else medseg_setup(args.data, work, args.start_model)
    for item in args.train:
        key, _, value = item.partition("=")
        try:
            setup.train_request[key] = json.loads(value)
        except json.JSONDecodeError:
            setup.train_request[key] = value
    if args.budgets:
        setup.budgets = [int(b) for b in args.budgets.split(",")]
    if max(setup.budgets) >= len(setup.pool):
        raise SystemExit(f"bench.annotation_loop: budgets {setup.budgets} need more than {len(setup.pool)} "
                         f"pool images (at the whole pool every strategy has picked the same)")
    strategies = [s for s in args.strategies.split(",") if s]
    seeds = list(range(1 if args.quick else args.seeds))
    print(f"annotation loop on {setup.data}: pool {len(setup.pool)}, validation {len(setup.validation)}, "
          f"budgets {setup.budgets}, strategies {strategies}, seeds {seeds}", flush=True)
    t = time.perf_counter()
    start_scores = score(setup.start_model, setup.validation)
    print(f"start model: Dice {_f(start_scores['dice'])}, AUC {_f(start_scores['auc'])} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    rows: list[dict] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="annotation-loop-") as tmp:
        for strategy in strategies:
            for seed in seeds:
                rows += run_loop(setup, strategy, seed, Path(tmp) / f"{strategy}-{seed}", start_scores)
    meta = {"data": setup.data, "pool": len(setup.pool), "validation": len(setup.validation),
            "start_model": str(setup.start_model), "replay": str(setup.replay) if setup.replay else None,
            "budgets": setup.budgets, "strategies": strategies, "seeds": seeds, "train_request": setup.train_request,
            "minutes": round((time.perf_counter() - began) / 60, 1), "command": " ".join(["python -m bench.annotation_loop", *(argv if argv is not None else sys.argv[1:])])}
    write_rounds(out / "rounds.json", meta, rows)
    curves = plot_curves(rows, out / "curves.png", title=f"annotation loop on {setup.data}")
    if args.docs:
        shutil.copy(curves, ROOT / "docs" / "annotation_loop.png")
    from bench.common import table
    print(table("validation after each round: mean (sd) over seeds", summary_rows(rows)))
    print(f"wrote {out / 'rounds.json'} and {curves} in {meta['minutes']} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
