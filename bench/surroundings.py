"""The lung mask on a phantom chest in each synthetic surrounding (``covid_mtl.demo.surroundings``): couches, a
couch wider than the image, arms, thick slices, a neck-to-thigh scan. Per variant: the phantom's true lung volume,
the volume found, the millilitres of "lung" in what was added around the patient, the error of the lungs' extent
along z (slices), and the seconds taken.

``--baseline COMMIT`` runs the same variants with the lung mask of an earlier commit as well (its ``lib/`` taken
from git into a temporary folder and run in a subprocess), for before/after tables.
Run: ``.venv/bin/python -m bench.surroundings [--baseline COMMIT]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, save, table

SHAPE, SPACING = (48, 256, 256), (2.5, 1.4, 1.4)  # as tests/lib/test_surroundings.py


def variants(around, phantom) -> dict:
    chest = around.from_phantom(phantom)
    found = {"plain": chest}
    for couch in around.COUCHES:
        found[couch] = around.with_couch(chest, couch)
        found[f"{couch}, wider than the image"] = around.narrowed(found[couch])
    shell = found["curved_shell"]
    found["curved_shell + arms down"] = around.with_arms(shell, "down")
    found["curved_shell + arms up"] = around.with_arms(shell, "up")
    for factor in (2, 3, 4):
        found[f"curved_shell, {SPACING[0] * factor:g} mm slices"] = around.with_thick_slices(shell, factor)
    found["flat_mattress, neck to thigh"] = around.neck_to_thigh(found["flat_mattress"])
    return found


def measure() -> list[dict]:
    """Every variant through ``covid_mtl.lungs.mask.lung_mask`` of whichever ``covid_mtl`` is importable; the
    variants always come from this repository's ``demo/surroundings.py``."""
    import covid_mtl.demo.phantom as phantom_module
    from covid_mtl.lungs.mask import lung_mask

    spec = importlib.util.spec_from_file_location("covid_mtl.demo.surroundings",
                                                  ROOT / "lib" / "covid_mtl" / "demo" / "surroundings.py")
    around = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = around
    spec.loader.exec_module(around)
    rows = []
    for name, scan in variants(around, phantom_module.make_phantom("normal", 3, SHAPE, SPACING)).items():
        start = time.perf_counter()
        found = lung_mask(scan.hu, scan.spacing, scan.affine).mask
        seconds = time.perf_counter() - start
        voxel_ml = float(np.prod(scan.spacing)) / 1000.0
        z_found = np.flatnonzero(found.any(axis=(1, 2)))
        z_true = np.flatnonzero(scan.lung.any(axis=(1, 2)))
        rows.append({"variant": name, "true_ml": round(scan.lung_ml, 1),
                     "found_ml": round(float(found.sum()) * voxel_ml, 1),
                     "in_added_ml": round(float((found & scan.not_lung).sum()) * voxel_ml, 1),
                     "z_error_slices": int(max(abs(z_found[0] - z_true[0]), abs(z_found[-1] - z_true[-1]))),
                     "seconds": round(seconds, 2)})
    return rows


def baseline_rows(commit: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit, "lib/covid_mtl"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        env_path = f"{tmp}/lib{':' + str(ROOT)}"
        out = subprocess.run([sys.executable, "-m", "bench.surroundings", "--worker"], cwd=ROOT, check=True,
                             capture_output=True, text=True, env={"PYTHONPATH": env_path, "OMP_WAIT_POLICY": "PASSIVE",
                                                                  "PATH": "/usr/bin:/bin"})
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="also run the lung mask of this commit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure()))
        return 0
    rows = [{"code": "now", **r} for r in measure()]
    if args.baseline:
        before = [{"code": args.baseline, **r} for r in baseline_rows(args.baseline)]
        rows = [row for pair in zip(before, rows) for row in pair]
    print(table("lung mask in synthetic surroundings (phantom 'normal', seed 3; mL)", rows))
    print(f"saved {save('surroundings', {'baseline': args.baseline, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
