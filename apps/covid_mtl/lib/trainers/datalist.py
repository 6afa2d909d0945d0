"""What the train task learns from: every datastore image, its final label and its class.

Class labels come, first found wins, from the final label's info (``{"classification": ...}`` as sent with a
correction), the image info, then a ``manifest.csv`` in the studies folder (the sample data ships one). The
manifest's ``split``, ``source`` and ``group`` columns come along, so the core's one validation split
(``covid_mtl.train.selection.split_validation``) sees what ``covid-mtl train`` sees on the same manifest.
Images without a mask or class still train the reconstruction head (the paper's partial labels).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

from lib.monailabel_compat import datastore_root

from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.io.manifest import read_manifest
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

logger = logging.getLogger(__name__)


def manifest_rows(studies: str) -> Dict[str, Any]:
    """Real path of each image in ``studies/manifest.csv`` -> its manifest row."""
    path = os.path.join(studies, "manifest.csv")
    if not os.path.isfile(path):
        return {}
    try:
        rows = read_manifest(path)
    except CovidMTLError as exc:  # a broken manifest must not block training on the rest
        logger.warning(f"covid_mtl: ignoring {path}: {exc}")
        return {}
    return {os.path.realpath(r.image): r for r in rows}


def _classification(*infos: Optional[Dict[str, Any]]) -> Optional[str]:
    for info in infos:
        value = (info or {}).get("classification")
        if value in LABELS:
            return value
    return None


def training_images(datastore: Datastore) -> List[str]:
    """Every image of a folder (those without a label train the reconstruction head); a datastore that says
    otherwise (the PACS: only its corrected series, so training never pulls the whole archive) decides."""
    chosen = getattr(datastore, "training_images", None)
    return list(chosen()) if callable(chosen) else datastore.list_images()


def datastore_records(datastore: Datastore) -> List[Dict[str, Any]]:
    by_manifest = manifest_rows(datastore_root(datastore))
    labeled = set(datastore.get_labeled_images(label_tag=DefaultLabelTag.FINAL))
    records = []
    for image_id in sorted(training_images(datastore)):
        image = os.path.realpath(datastore.get_image_uri(image_id))
        mask = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL) if image_id in labeled else None
        label_info = datastore.get_label_info(image_id, DefaultLabelTag.FINAL) if mask else None
        row = by_manifest.get(image)
        label = _classification(label_info, datastore.get_image_info(image_id)) or (row.label if row else None)
        records.append({"id": image_id, "image": image, "mask": mask or None, "label": label,
                        **({"split": row.split, "source": row.source, "group": row.group} if row else {})})
    logger.info(f"covid_mtl: {len(records)} images, {sum(r['mask'] is not None for r in records)} with masks, "
                f"{sum(r['label'] is not None for r in records)} with a class")
    return records
