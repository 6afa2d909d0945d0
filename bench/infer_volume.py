"""End-to-end classify + segment + quantify of a 512x512x300 HU phantom, library and server, baseline vs candidate.

baseline  = the predictor with the speed-ups switched off (one slice per batch, every slice run);
candidate = the predictor as shipped (batched slices, only lung-containing slices run).
Run: ``.venv/bin/python -m bench.infer_volume [--repeats N] [--skip-server]``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import OUT, PeakRSS, save, table, timed

SHAPE = (300, 512, 512)
SPACING = (1.0, 0.7, 0.7)


def phantom_path() -> Path:
    """The benchmark CT, generated once and cached (about 30 s)."""
    from covid_mtl.demo.phantom import make_phantom
    from covid_mtl.demo.sample_data import nifti_bytes

    path = OUT / "phantom_300x512x512.nii.gz"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        phantom = make_phantom("covid", seed=7, shape=SHAPE, spacing=SPACING)
        path.write_bytes(nifti_bytes(phantom.hu, phantom.affine))
    return path


def library_rows(checkpoint: str, ct: Path, device: str, repeats: int) -> list[dict[str, Any]]:
    from covid_mtl.io import read_image
    from covid_mtl.measure.analysis import analyze
    from covid_mtl.predict.predictor import Predictor

    rows = []
    variants = {"baseline": {"batch_size": 1, "skip_non_lung": False}, "candidate": {}}
    for name, kwargs in variants.items():
        predictor = Predictor.from_checkpoint(checkpoint, device=device, **kwargs)
        last: dict[str, Any] = {}

        def run() -> None:
            image = read_image(ct)
            analysis = analyze(image, predictor)
            last.update(analysis.result, slices_run=analysis.prediction.aggregation["slices_run"])

        with PeakRSS() as rss:
            median, samples = timed(run, repeats=repeats if name == "candidate" else max(1, repeats - 1))
        rows.append({"path": "library", "variant": name, "device": device, "config": predictor.config.name,
                     "median_s": median, "slices_run": last["slices_run"], "slices_per_s": last["slices_run"] / median,
                     "peak_rss_mib": rss.mib, "label": last["label"], "samples_s": [round(s, 3) for s in samples],
                     "where_s": _where(last["timings"])})
    base, cand = rows[0]["median_s"], rows[1]["median_s"]
    rows[1]["speedup"] = base / cand
    return rows


def _where(timings: dict[str, Any]) -> dict[str, float]:
    """Where the time of one analysis went (seconds), from the reply's timings."""
    keys = ("read_s", "lung_mask_s", "prepare_s", "network_s", "quantify_s", "analysis_s", "total_s")
    return {k: round(float(timings[k]), 2) for k in keys if timings.get(k) is not None}


def server_rows(checkpoint: str, ct: Path, repeats: int) -> list[dict[str, Any]]:
    import requests

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.server import running_server

    work = Path(tempfile.mkdtemp(prefix="covid_mtl_bench_"))
    studies = work / "studies"
    studies.mkdir()
    rows = []
    try:
        with running_server(studies, work, conf={"preload": "true"}) as server, PeakRSS(server.process.pid) as rss:
            data = ct.read_bytes()

            def run() -> None:
                r = requests.post(f"{server.url}/infer/covid_mtl", params={"output": "json"},
                                  files={"file": (ct.name, data, "application/gzip")}, timeout=600)
                r.raise_for_status()
                run.result = r.json()  # type: ignore[attr-defined]

            median, samples = timed(run, repeats=repeats)
            result = run.result  # type: ignore[attr-defined]
        rows.append({"path": "server (HTTP, upload included)", "variant": "candidate", "device": "server default",
                     "config": result.get("model_config"), "median_s": median,
                     "slices_run": result["aggregation"].get("slices_run"),
                     "slices_per_s": (result["aggregation"].get("slices_run") or 0) / median,
                     "peak_rss_mib": rss.mib, "label": result["label"], "samples_s": [round(s, 3) for s in samples],
                     "where_s": _where(result["timings"])})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from covid_mtl.nets.packaged import packaged_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=packaged_model_path())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args(argv)
    ct = phantom_path()
    rows = library_rows(args.checkpoint, ct, "cpu", args.repeats)
    if torch.cuda.is_available():
        rows += library_rows(args.checkpoint, ct, "cuda", args.repeats)
    if not args.skip_server:
        rows += server_rows(args.checkpoint, ct, args.repeats)
    shown = [{k: v for k, v in r.items() if k not in ("samples_s", "where_s")} for r in rows]
    print(table(f"infer_volume: {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} HU phantom, checkpoint {Path(args.checkpoint).name}",
                shown))
    for r in rows:
        print(f"  where the time goes ({r['path']}, {r['variant']}, {r['device']}): {r['where_s']}")
    payload = {"shape_zyx": SHAPE, "spacing_zyx": SPACING, "checkpoint": args.checkpoint, "rows": rows,
               "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "time": time.time()}
    print(f"saved {save('infer_volume', payload)}")
    return payload


if __name__ == "__main__":
    main()
