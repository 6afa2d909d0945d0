"""Lung mask on a 512x512x300 HU CT: the mask before issue 14 (2D hole filling) vs the mask as shipped.

before    = ``covid_mtl/measure/lungmask.py`` at commit ``BASELINE_COMMIT``, loaded from git history;
candidate = ``covid_mtl.lungs.mask.lung_mask`` as it is now (the lungs found in 3D, airways left out: issue 19).
Both run on the same CT (the cached 300x512x512 phantom of ``bench.infer_volume``, 1.0 x 0.7 x 0.7 mm), and
on the real scans in ``../shared/data/real_ct`` when that folder exists (volumes only matter there).
Run: ``.venv/bin/python -m bench.lungmask [--repeats N]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import REAL_CT, ROOT, save, table

BASELINE_COMMIT = "c1f8950"
BASELINE_PATH = "lib/covid_mtl/measure/lungmask.py"
REAL_CASES = ("totalsegmentator_example/example_ct.nii.gz",
              "totalsegmentator_example/pulmonary_report_ct_cropped.nii.gz",
              "full_chest/lidc0001", "full_chest/lidc0002", "full_chest/lidc0003")


def baseline_lung_mask() -> Callable | None:
    """``lung_mask`` of the baseline commit, imported as ``covid_mtl.measure._lungmask_baseline``; None
    without git history (a source archive)."""
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:{BASELINE_PATH}"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    name = "covid_mtl.measure._lungmask_baseline"  # inside the package, so its relative imports resolve
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "covid_mtl.measure"
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    exec(compile(source, f"{BASELINE_COMMIT}:{BASELINE_PATH}", "exec"), module.__dict__)
    return module.lung_mask


def rows_for(image, name: str, variants: dict[str, Callable], repeats: int) -> list[dict[str, Any]]:
    """Median seconds of each variant; the variants take turns, so a load change on shared cores hits both."""
    samples: dict[str, list[float]] = {v: [] for v in variants}
    masks: dict[str, Any] = {}
    for _ in range(repeats):
        for variant, fn in variants.items():
            start = time.perf_counter()
            masks[variant] = fn(image)
            samples[variant].append(time.perf_counter() - start)
    rows = []
    for variant in variants:
        summary = masks[variant].summary()
        rows.append({"ct": name, "variant": variant, "median_s": statistics.median(samples[variant]),
                     "right_ml": summary["right_ml"], "left_ml": summary["left_ml"], "total_ml": summary["total_ml"],
                     "samples_s": [round(s, 3) for s in samples[variant]]})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from bench.infer_volume import SHAPE, phantom_path
    from covid_mtl.io import read_image
    from covid_mtl.lungs.mask import lung_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    variants: dict[str, Callable] = {}
    before = baseline_lung_mask()
    if before is None:
        print(f"bench.lungmask: no git history for {BASELINE_COMMIT}; timing the candidate only")
    else:
        variants["before"] = before
    variants["candidate"] = lung_mask
    ct = read_image(phantom_path())
    rows = rows_for(ct, f"phantom {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]}", variants, args.repeats)
    for relative in REAL_CASES:
        if (REAL_CT / relative).exists():
            rows += rows_for(read_image(REAL_CT / relative), Path(relative).name, variants, 1)
    shown = [{k: v for k, v in r.items() if k != "samples_s"} for r in rows]
    print(table("lungmask: seconds per CT and volumes (mL), before vs candidate", shown))
    payload = {"baseline_commit": BASELINE_COMMIT, "rows": rows, "time": time.time()}
    print(f"saved {save('lungmask', payload)}")
    return payload


if __name__ == "__main__":
    main()
