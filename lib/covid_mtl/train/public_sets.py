"""Where the public COVID-19 CT training sets are in a folder, and what each image is: label, source, patient.

The layouts, their public origins and the grouping rules are described in ``covid_mtl.train.prepare_data``, which
turns what is found here into a manifest.
"""
from __future__ import annotations

import os
import re
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..io.raster import RASTER_SUFFIXES

MAX_DEPTH = 6  # how deep to look for the layouts under DIR
_TEST_DIR = re.compile(r"(^|[-_ ])test")  # TestingSet, LungInfection-Test: official test portions, held out
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


# ---------------------------------------------------------------- finding the layouts

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith("."))


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


