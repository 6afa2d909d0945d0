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
import json
import math
import os
import random
import re
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import CovidMTLError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_DEPTH = 6  # how deep to look for the layouts under DIR
_TEST_DIR = re.compile(r"(^|[-_ ])test")  # TestingSet, LungInfection-Test: official test portions, held out
SOURCES = ("covid_ct", "medseg", "infnet")
LICENCES = {
    "covid_ct": "COVID-CT (UCSD-AI4H): research use",
    "medseg": "MedSeg: CC BY-NC-SA (non-commercial)",
    "infnet": "coronacases.org Apache-2.0 + Radiopaedia CC BY-NC-SA (non-commercial)",
}
LICENCE_LINE = ("Licences: MedSeg and Radiopaedia images are CC BY-NC-SA: a model trained on them is for "
                "non-commercial use only (coronacases.org Apache-2.0, COVID-CT research use).")


@dataclass(frozen=True)
class Entry:
    """One image found in a layout, before splitting."""

    image: Path
    label: str
    source: str
    group: str
    mask: Path | None = None
    mask_kind: str | None = None  # "binary" (0/255) | "labels" (0/1/2)
    pseudo: bool = False  # mask predicted by a model, not drawn by a radiologist


@dataclass
class Layouts:
    covid: Path | None = None
    noncovid: Path | None = None
    doctor: Path | None = None  # Doctor-label folder (Imgs, GT)
    multiclass: Path | None = None  # MultiClassInfection-Train folder (Imgs, GT)
    infnet_images: Path | None = None
    infnet_pseudo: Path | None = None

    def found(self) -> list[str]:
        return [name for name in ("covid", "noncovid", "doctor", "multiclass", "infnet_images")
                if getattr(self, name) is not None]


@dataclass
class PreparedData:
    manifest: Path
    summary_path: Path
    summary: dict
    rows: list[dict]
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- finding the layouts

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _child(folder: Path, name: str) -> Path | None:
    """A sub-folder by name, case-insensitive (copies unzipped on other systems vary in case)."""
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def find_layouts(data_dir: Path, skip: Path | None = None) -> tuple[Layouts, list[str]]:
    """Walk ``data_dir`` (at most MAX_DEPTH levels) for the known folders; the first copy of each wins."""
    layouts, notes = Layouts(), []

    def take(attr: str, path: Path) -> None:
        if getattr(layouts, attr) is None:
            setattr(layouts, attr, path)
        elif getattr(layouts, attr) != path:
            notes.append(f"second copy of a layout ignored: {path} (using {getattr(layouts, attr)})")

    root_depth = len(data_dir.parts)
    for current, dirs, _ in os.walk(data_dir):
        here = Path(current)
        # never descend into our own output, hidden folders, or held-out test portions
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _TEST_DIR.search(d.lower())
                         and (skip is None or (here / d).resolve() != skip))
        if len(here.parts) - root_depth >= MAX_DEPTH:
            dirs[:] = []
        name = here.name.lower()
        if name == "ct_covid":
            take("covid", here)
        elif name == "ct_noncovid":
            take("noncovid", here)
        elif name == "doctor-label" and _child(here, "Imgs"):
            take("doctor", here)
        elif name == "multiclassinfection-train" and _child(here, "Imgs"):
            take("multiclass", here)
        elif _child(here, "Imgs") and (name in ("infnet_unlabeled", "pseudo-label")
                                       or _child(here, "PseudoGT_model_generated")):
            if layouts.infnet_images is None:
                layouts.infnet_images = _child(here, "Imgs")
                # this project's copy names the pseudo masks; Inf-Net's Pseudo-label/ calls them GT
                layouts.infnet_pseudo = _child(here, "PseudoGT_model_generated") or _child(here, "GT")
            else:
                notes.append(f"second copy of a layout ignored: {here} (using {layouts.infnet_images.parent})")
    return layouts, notes


# ---------------------------------------------------------------- groups from file names

_PREPRINT = re.compile(r"^(\d{4}\.\d{2}\.\d{2}\.\d+)")
_PAGE = re.compile(r"^(.+?)-p\d+(?:[-_%].*)?$")
_NUMBERED = re.compile(r"^(\d+)(?:%(\d+))?$")
_INFNET = re.compile(r"^(?:Data-\d+_)?(.+)_(\d+)$")
_RADIOPAEDIA_CASE = re.compile(r"^(radiopaedia_org_.+?-\d+)_\d+_\d+-dcm$")


def covid_ct_covid_group(stem: str) -> str:
    """Preprint id (``2020.01.24.919183``), else the text before ``-p<page>``, else the name before ``%``."""
    match = _PREPRINT.match(stem)
    if match:
        return match.group(1)
    match = _PAGE.match(stem)
    if match:
        return match.group(1)
    return stem.split("%")[0]


def covid_ct_noncovid_groups(stems: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Group per (stem, suffix): ``N%k.jpg`` -> ``jpg-N``; runs of ``N.png`` at most 2 apart -> ``png-a-b``."""
    groups: dict[str, str] = {}
    pngs: list[tuple[int, str]] = []
    for stem, suffix in stems:
        match = _NUMBERED.match(stem)
        if match and suffix == ".png" and match.group(2) is None:
            pngs.append((int(match.group(1)), stem))
        elif match:
            groups[stem + suffix] = f"{suffix.lstrip('.')}-{match.group(1)}"
        else:
            groups[stem + suffix] = stem.split("%")[0]
    run: list[tuple[int, str]] = []
    for number, stem in sorted(pngs) + [(math.inf, "")]:  # sentinel closes the last run
        if run and number - run[-1][0] > 2:
            name = f"png-{run[0][0]}-{run[-1][0]}" if len(run) > 1 else f"png-{run[0][0]}"
            for _, member in run:
                groups[member + ".png"] = name
            run = []
        run.append((number, stem))
    return groups


def infnet_group(stem: str) -> str:
    """``Data-1_<volume>_<slice>`` -> volume; Radiopaedia series of one case -> the case."""
    match = _INFNET.match(stem)
    volume = match.group(1) if match else stem
    case = _RADIOPAEDIA_CASE.match(volume)
    return case.group(1) if case else volume


# ---------------------------------------------------------------- entries per layout

def _by_stem(folder: Path | None) -> dict[str, Path]:
    return {p.stem: p for p in _images_in(folder)} if folder is not None else {}


def scan_covid_ct(layouts: Layouts) -> list[Entry]:
    entries = []
    if layouts.covid is not None:
        for p in _images_in(layouts.covid):
            entries.append(Entry(p, "covid", "covid_ct", "covid_ct:covid:" + covid_ct_covid_group(p.stem)))
    if layouts.noncovid is not None:
        files = _images_in(layouts.noncovid)
        groups = covid_ct_noncovid_groups((p.stem, p.suffix.lower()) for p in files)
        for p in files:
            entries.append(Entry(p, "non-covid", "covid_ct",
                                 "covid_ct:non-covid:" + groups[p.stem + p.suffix.lower()]))
    return entries


def scan_medseg(layouts: Layouts, notes: list[str]) -> list[Entry]:
    doctor_imgs = _by_stem(_child(layouts.doctor, "Imgs") if layouts.doctor else None)
    doctor_gt = _by_stem(_child(layouts.doctor, "GT") if layouts.doctor else None)
    multi_imgs = _by_stem(_child(layouts.multiclass, "Imgs") if layouts.multiclass else None)
    multi_gt = _by_stem(_child(layouts.multiclass, "GT") if layouts.multiclass else None)
    entries = []
    for stem in sorted(set(doctor_imgs) | set(multi_imgs), key=_natural):
        # one row per slice: the two folders hold the same slices; the radiologist's binary mask wins
        if stem in doctor_gt:
            image, mask, kind = doctor_imgs.get(stem, multi_imgs.get(stem)), doctor_gt[stem], "binary"
        elif stem in multi_gt:
            image, mask, kind = multi_imgs.get(stem, doctor_imgs.get(stem)), multi_gt[stem], "labels"
        else:
            image, mask, kind = doctor_imgs.get(stem, multi_imgs.get(stem)), None, None
            notes.append(f"{image}: no MedSeg mask found; kept without a mask")
        entries.append(Entry(image, "covid", "medseg", f"medseg:{stem}", mask, kind))
    return entries


def scan_infnet(layouts: Layouts) -> list[Entry]:
    if layouts.infnet_images is None:
        return []
    pseudo = _by_stem(layouts.infnet_pseudo)
    return [Entry(p, "", "infnet", "infnet:" + infnet_group(p.stem), pseudo.get(p.stem),
                  "binary" if p.stem in pseudo else None, pseudo=True)
            for p in _images_in(layouts.infnet_images)]


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


# ---------------------------------------------------------------- split

def assign_splits(entries: list[Entry], val_fraction: float, seed: int) -> list[str]:
    """``train``/``val`` per entry: per (source, stratum) a seeded group-wise ``val_fraction`` of the rows."""
    strata: dict[tuple[str, str], dict[str, int]] = defaultdict(Counter)
    for e in entries:
        stratum = e.label if e.source == "covid_ct" else ""  # stratify by label where labels differ
        strata[(e.source, stratum)][e.group] += 1
    val_groups: set[str] = set()
    for (source, stratum), sizes in sorted(strata.items()):
        groups = sorted(sizes, key=_natural)
        random.Random(f"{seed}:{source}:{stratum}").shuffle(groups)
        target, chosen, total = val_fraction * sum(sizes.values()), [], 0
        for g in groups:
            # greedy subset sum: take a group when it brings the val count closer to the target
            if abs(total + sizes[g] - target) < abs(total - target) and len(chosen) < len(groups) - 1:
                chosen.append(g)
                total += sizes[g]
        if not chosen and val_fraction > 0 and len(groups) >= 2:
            chosen = [min(groups, key=lambda g: sizes[g])]  # every source keeps some validation rows
        val_groups.update(chosen)
    return ["val" if e.group in val_groups else "train" for e in entries]


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
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, path)
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

def prepare_data(data_dir: str | os.PathLike, out_dir: str | os.PathLike, val_fraction: float = 0.2,
                 seed: int = 0, pseudo_masks: bool = False, progress: bool = True) -> PreparedData:
    """Find the layouts in ``data_dir``, write ``out_dir``/manifest.csv, masks/ and summary.json."""
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
    for sub in ("medseg", "pseudo", "infnet", "covid_ct"):  # masks an earlier run wrote (ours only)
        for old in (out / "masks" / sub).glob("*.png") if (out / "masks" / sub).is_dir() else ():
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

    manifest = out / "manifest.csv"
    tmp = manifest.with_name("manifest.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "mask", "label", "split", "source", "group"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)

    summary = summarize(rows, resized, skipped)
    summary.update({"data_dir": str(data.resolve()), "val_fraction": val_fraction, "seed": seed,
                    "pseudo_masks": pseudo_masks,
                    "layouts": {k: str(v) for k, v in vars(layouts).items() if v is not None},
                    "notes": notes})
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if notes:  # one warning, not one per file; the notes themselves are in summary.json and the result
        warnings.warn(f"prepare-data: {len(notes)} note(s), first: {notes[0]}", stacklevel=2)
    return PreparedData(manifest, summary_path, summary, rows, notes)
