"""Turn the public COVID-19 CT training sets, in their own folder layouts, into one manifest with clean masks.

``prepare_data(data_dir, out_dir)`` finds any subset of these layouts under ``data_dir`` (searched a few levels
deep, so ``DIR`` may be the folder that holds them or a parent of it), writes ``OUT/manifest.csv`` (columns
image, mask, label, split, source, group), binary masks under ``OUT/masks/`` and ``OUT/summary.json``.
Nothing is downloaded; a user's own copy of the same public sets works the same way:

| layout (folder names matched) | public origin | source | label, masks |
|---|---|---|---|
| ``CT_COVID/`` + ``CT_NonCOVID/`` (either alone also works) | COVID-CT, github.com/UCSD-AI4H/COVID-CT, ``Images-processed/CT_COVID.zip`` and ``CT_NonCOVID.zip`` unzipped | ``covid_ct`` | covid / non-covid, no masks |
| ``Doctor-label/{Imgs,GT}`` | MedSeg COVID-19 CT segmentation (medicalsegmentation.com/covid19), as split by github.com/DengPingFan/Inf-Net ``Dataset/TrainingSet/LungInfection-Train/Doctor-label`` | ``medseg`` | covid, radiologist masks 0/255 |
| ``MultiClassInfection-Train/{Imgs,GT}`` | the same slices, Inf-Net ``Dataset/TrainingSet/MultiClassInfection-Train`` | ``medseg`` | masks 0/1/2 (ground glass, consolidation) merged into one lesion class; used only for slices Doctor-label lacks |
| ``Imgs/`` next to ``PseudoGT_model_generated/`` (this project's copy) or Inf-Net's ``Pseudo-label/{Imgs,GT}`` | Inf-Net ``Dataset/TrainingSet/LungInfection-Train/Pseudo-label`` (slices of 20 CT volumes from coronacases.org and Radiopaedia) | ``infnet`` | no slice label (see below), pseudo masks predicted by Semi-Inf-Net |

Inf-Net's slices come from COVID-19 patients, but many of them show no lesion, and they are the only slices in
these sets that look like a CT export rather than a paper figure: labelling each one "covid" would teach the
network that a clean CT-export look means COVID (a first model here called every real volume COVID with
P = 1.00). So their rows carry no label: they train the reconstruction (and, with ``--pseudo-masks``, the
segmentation), and the patient-level diagnosis stays in the ``group`` (all of them are COVID-19 patients) for
volume-level checks.

**Scans without pneumonia** (``negative_scans``: whole chest CT series in Hounsfield units, DICOM folders or
NIfTI/NRRD files, e.g. the LIDC-IDRI and Lung-PET-CT-Dx series beside the project) become rows of source
``hu_scan`` with an empty lesion mask (``masks/negative/<name>.nii.gz``) and **no class**: their slices teach the
segmentation decoder that vessels, fissures, nodules, tumours and partial volume at the diaphragm are not
infection, cut and windowed exactly as prediction does, while the classifier never learns that "looks like a
Hounsfield scan" means non-COVID (the only COVID-19 scan in HU has no mask, so the look would be the only cue).
They are training rows only: a whole volume in validation would swamp the ten MedSeg slices' Dice. Check them
on scans that were not given here.

Test portions (``TestingSet``, ``LungInfection-Test``...) are never matched: they are held out elsewhere.
Licences: MedSeg and Radiopaedia images are CC BY-NC-SA (non-commercial; a model trained on them inherits it),
coronacases.org Apache-2.0, COVID-CT for research use.

Masks: read as the stored integers (palette PNGs give their indices); 0/255 masks (radiologist and pseudo, JPG
noise or soft probability maps included) are lesion where > 127; 0/1/2 label maps where > 0. A mask whose size
differs from its image is resized nearest-neighbour to the image and counted in the summary. Every mask is
written as a uint8 0/1 PNG of the image's size: ``OUT/masks/medseg/<name>.png``; pseudo masks go to
``OUT/masks/pseudo/<name>.png`` (the path says they are predictions, not ground truth) and only with
``pseudo_masks=True``, only on training rows. Image paths in the manifest are absolute (the originals, untouched);
mask paths are relative to the manifest.

Groups (a group never straddles the train/validation split):
- COVID-CT COVID slices are crops of figures in preprints named ``<medRxiv/bioRxiv id>-p<page>-<figure>...``
  (``2020.01.24.919183-p27-132.png``, ``2020.02.10.20021584-p6-52%0.png``): group = the preprint id
  (``2020.01.24.919183``), so all slices of one paper, hence of its patients, stay together. Other names (one
  journal article here) group by the text before ``-p<page>``, else by the name before ``%``.
- COVID-CT non-COVID slices are numbered: ``N%k.jpg`` are crops k of one figure N -> group ``jpg-N``; ``N.png``
  are numbered in collection order and consecutive numbers are mostly slices of one case (same size, same look),
  so runs of numbers at most 2 apart form one group ``png-<first>-<last>`` (conservative: may merge two cases,
  never splits one that was numbered consecutively). Other names group by the name before ``%``.
- Inf-Net slices ``Data-1_<volume>_<slice>`` -> the volume (``coronacases_org_001``); Radiopaedia volumes of one
  case (``radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm`` and ``..._3-dcm`` are two series of case 10) are
  one group ``radiopaedia_org_covid-19-pneumonia-10``.
- MedSeg slices carry no patient id: each slice is its own group (two slices of one patient may land on both
  sides; nothing in the public files says which slices share a patient).

Split: for each source (and within ``covid_ct`` for each label) a seeded, group-wise ``val_fraction`` of the
rows goes to ``val`` (at least one group when a source has two or more), the rest to ``train``. No ``test`` rows.
"""
from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import CovidMTLError
from .public_sets import Entry, find_layouts, scan_covid_ct, scan_infnet, scan_medseg
from .selection import split_validation

LICENCES = {
    "covid_ct": "COVID-CT (UCSD-AI4H): research use",
    "medseg": "MedSeg: CC BY-NC-SA (non-commercial)",
    "infnet": "coronacases.org Apache-2.0 + Radiopaedia CC BY-NC-SA (non-commercial)",
    "hu_scan": "the scans' own collections (TCIA: LIDC-IDRI CC BY 3.0, Lung-PET-CT-Dx CC BY 4.0)",
}
LICENCE_LINE = ("Licences: MedSeg and Radiopaedia images are CC BY-NC-SA: a model trained on them is for "
                "non-commercial use only (coronacases.org Apache-2.0, COVID-CT research use).")


@dataclass
class PreparedData:
    manifest: Path
    summary_path: Path
    summary: dict
    rows: list[dict]
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- split

def assign_splits(entries: list[Entry], val_fraction: float, seed: int) -> list[str]:
    """``train``/``val`` per entry by the project's one validation split (``covid_mtl.train.selection``), with
    COVID-CT's two labels as separate sources so both get validation rows; images with a pseudo mask count as
    labelled here (the mask is dropped from validation rows afterwards)."""
    items = [{"image": str(e.image), "mask": e.mask, "label": e.label,
              "source": f"{e.source}:{e.label}" if e.source == "covid_ct" else e.source, "group": e.group}
             for e in entries]
    _, val = split_validation(items, val_fraction, seed) if val_fraction > 0 else (items, [])
    chosen = {id(i) for i in val}
    return ["val" if id(i) in chosen else "train" for i in items]


# ---------------------------------------------------------------- masks

def binarize_mask(values: np.ndarray, kind: str) -> np.ndarray:
    """uint8 0/1 lesion mask from stored mask values (see the module docstring for the thresholds)."""
    values = np.asarray(values)
    peak = int(values.max()) if values.size else 0
    if kind == "labels":
        # 0/1/2 label maps; a map saved scaled to 0..255 (a visualisation) falls back to > 127
        return (values > (0 if peak <= 8 else 127)).astype(np.uint8)
    # 0/255 masks, JPEG noise and soft probability maps included; a 0/1 mask saved as such is lesion where > 0
    return (values > (127 if peak > 1 else 0)).astype(np.uint8)


def read_mask_values(path: Path) -> np.ndarray:
    """The stored integers of a mask file: palette indices for 'P' images, gray levels otherwise."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        if im.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            return np.asarray(im)
        return np.asarray(im.convert("L"))  # RGB(A) or 1-bit: the gray level


def write_mask_png(mask01: np.ndarray, size_wh: tuple[int, int], path: Path) -> bool:
    """Write a 0/1 uint8 PNG of ``size_wh`` (nearest-neighbour resize if needed); True when resized."""
    from PIL import Image as PILImage

    im = PILImage.fromarray(mask01.astype(np.uint8), mode="L")
    resized = im.size != tuple(size_wh)
    if resized:
        im = im.resize(tuple(size_wh), PILImage.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: im.save(handle, format="PNG"))
    return resized


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a readable slice, through the project's one reader (so training can read it too)."""
    from ..io import read_image

    image = read_image(path)
    if image.array.shape[0] != 1:
        raise CovidMTLError(f"{path}: {image.array.shape[0]} frames; expected one 2D slice")
    return int(image.array.shape[2]), int(image.array.shape[1])


# ---------------------------------------------------------------- summary

def summarize(rows: list[dict], resized: int, skipped: int) -> dict:
    """Counts per source x split x label: images, masks (pseudo among them) and groups."""
    cells: dict = defaultdict(lambda: {"images": 0, "masks": 0, "pseudo_masks": 0, "groups": set()})
    for r in rows:
        cell = cells[(r["source"], r["split"], r["label"])]
        cell["images"] += 1
        cell["masks"] += bool(r["mask"])
        cell["pseudo_masks"] += r["mask"].startswith("masks/pseudo/")
        cell["groups"].add(r["group"])
    counts: dict = {}
    for (source, split, label), cell in sorted(cells.items()):
        counts.setdefault(source, {}).setdefault(split, {})[label] = {**cell, "groups": len(cell["groups"])}
    totals = {split: sum(1 for r in rows if r["split"] == split) for split in ("train", "val")}
    return {"rows": len(rows), "splits": totals, "masks": sum(1 for r in rows if r["mask"]),
            "counts": counts, "licences": {s: LICENCES[s] for s in counts if s in LICENCES},
            "masks_resized": resized, "skipped_unreadable": skipped, "licence_note": LICENCE_LINE}


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table (one line per source x split x label)."""
    head = f"{'source':<9} {'split':<6} {'label':<10} {'images':>7} {'masks':>6} {'pseudo':>7} {'groups':>7}"
    lines = [head, "-" * len(head)]
    for source, splits in summary["counts"].items():
        for split in ("train", "val"):
            for label, c in splits.get(split, {}).items():
                lines.append(f"{source:<9} {split:<6} {label:<10} {c['images']:>7} {c['masks']:>6} "
                             f"{c['pseudo_masks']:>7} {c['groups']:>7}")
    lines.append("-" * len(head))
    lines.append(f"{summary['rows']} images (train {summary['splits']['train']}, val {summary['splits']['val']}), "
                 f"{summary['masks']} masks; masks resized to their image: {summary['masks_resized']}; "
                 f"unreadable files skipped: {summary['skipped_unreadable']}")
    lines.append("groups = patients/papers/volumes as named in the files (MedSeg: one per slice); "
                 "pseudo = predicted masks (masks/pseudo/), train rows only")
    lines.append(summary["licence_note"])
    return "\n".join(lines)


# ---------------------------------------------------------------- the entry point

def negative_scan_row(scan: Path, out: Path) -> dict:
    """The manifest row of a whole chest CT without pneumonia: an empty lesion mask on its grid, no class."""
    from ..io import read_image
    from ..io.write import write_mask

    image = read_image(scan)
    if not image.is_hu or image.is_2d:
        raise CovidMTLError(f"{scan}: a scan without pneumonia must be a CT volume in Hounsfield units")
    name = scan.name.split(".")[0]
    mask_rel = f"masks/negative/{name}.nii.gz"
    (out / mask_rel).parent.mkdir(parents=True, exist_ok=True)
    write_mask(np.zeros(image.array.shape, np.uint8), image, out / mask_rel)
    return {"image": str(scan.resolve()), "mask": mask_rel, "label": "", "split": "train", "source": "hu_scan",
            "group": name}


def prepare_data(data_dir: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.2,
                 seed: int = 0, pseudo_masks: bool = False, progress: bool = True,
                 negative_scans: Sequence[str | os.PathLike] = ()) -> PreparedData:
    """Find the layouts in ``data_dir``, write ``out_dir``/manifest.csv, masks/ and summary.json; add
    ``negative_scans`` (whole CT scans without pneumonia) as training rows with empty masks."""
    data, out = Path(data_dir), Path(out_dir)
    if not data.is_dir():
        raise CovidMTLError(f"{data}: no such folder")
    if not 0.0 <= val_fraction < 1.0:
        raise CovidMTLError(f"--val-fraction must be in [0, 1); got {val_fraction}")
    layouts, notes = find_layouts(data, skip=out.resolve())
    if not layouts.found():
        raise CovidMTLError(
            f"{data}: none of the known layouts found (CT_COVID/ and CT_NonCOVID/ of COVID-CT; "
            f"Doctor-label/{{Imgs,GT}} or MultiClassInfection-Train/{{Imgs,GT}} of MedSeg via Inf-Net; "
            f"Imgs/ with PseudoGT_model_generated/ or Pseudo-label/ of Inf-Net); see "
            f"`covid-mtl prepare-data --help`")
    entries = scan_covid_ct(layouts) + scan_medseg(layouts, notes) + scan_infnet(layouts)
    splits = assign_splits(entries, val_fraction, seed)

    out.mkdir(parents=True, exist_ok=True)
    for sub in ("medseg", "pseudo", "infnet", "covid_ct", "negative"):  # masks an earlier run wrote (ours only)
        for old in (out / "masks" / sub).glob("*.*") if (out / "masks" / sub).is_dir() else ():
            old.unlink()

    from tqdm import tqdm

    rows, resized, skipped = [], 0, 0
    for entry, split in tqdm(list(zip(entries, splits)), desc="prepare-data", unit="image",
                             disable=not progress):
        try:
            size = _image_size(entry.image)
        except CovidMTLError as exc:
            notes.append(f"skipped unreadable image: {exc}")
            skipped += 1
            continue
        mask_rel = ""
        use_mask = entry.mask is not None and (not entry.pseudo or (pseudo_masks and split == "train"))
        if use_mask:
            folder = "pseudo" if entry.pseudo else entry.source
            mask_rel = f"masks/{folder}/{entry.image.stem}.png"
            try:
                values = read_mask_values(entry.mask)
            except Exception as exc:  # Pillow raises many types for broken files
                notes.append(f"{entry.mask}: unreadable mask ({type(exc).__name__}: {exc}); row kept without mask")
                skipped += 1
                mask_rel = ""
            else:
                if values.shape[::-1] != size:
                    notes.append(f"{entry.mask}: mask {values.shape[1]}x{values.shape[0]} vs image "
                                 f"{size[0]}x{size[1]}; resized nearest-neighbour")
                resized += write_mask_png(binarize_mask(values, entry.mask_kind or "binary"), size, out / mask_rel)
        rows.append({"image": str(entry.image.resolve()), "mask": mask_rel, "label": entry.label,
                     "split": split, "source": entry.source, "group": entry.group})
    if not rows:
        raise CovidMTLError(f"{data}: layouts found but no readable images in them")
    rows += [negative_scan_row(Path(scan), out) for scan in tqdm(negative_scans, desc="scans without pneumonia",
                                                                  unit="scan", disable=not progress)]

    manifest = out / "manifest.csv"
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["image", "mask", "label", "split", "source", "group"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(manifest, text.getvalue().encode("utf-8"))

    summary = summarize(rows, resized, skipped)
    summary.update({"data_dir": str(data.resolve()), "val_fraction": val_fraction, "seed": seed,
                    "pseudo_masks": pseudo_masks, "negative_scans": [str(Path(p).resolve()) for p in negative_scans],
                    "layouts": {k: str(v) for k, v in vars(layouts).items() if v is not None},
                    "notes": notes})
    summary_path = out / "summary.json"
    atomic_write(summary_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    if notes:  # one warning, not one per file; the notes themselves are in summary.json and the result
        warnings.warn(f"prepare-data: {len(notes)} note(s), first: {notes[0]}", stacklevel=2)
    return PreparedData(manifest, summary_path, summary, rows, notes)
