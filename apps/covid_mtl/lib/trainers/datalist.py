"""What the train task learns from: every datastore image, its final label and its class.

Class labels come, first found wins, from the final label's info (``{"classification": ...}`` as sent with a
correction), the image info, then a ``manifest.csv`` in the studies folder (the sample data ships one).
Images without a mask or class still train the reconstruction head (the paper's partial labels).
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Dict, List, Optional, Tuple

from covid_mtl.errors import CovidMTLError
from covid_mtl.image import LABELS
from covid_mtl.io.manifest import read_manifest
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag

logger = logging.getLogger(__name__)


def manifest_labels(studies: str) -> Dict[str, str]:
    """Real path of each image in ``studies/manifest.csv`` -> its class label."""
    path = os.path.join(studies, "manifest.csv")
    if not os.path.isfile(path):
        return {}
    try:
        rows = read_manifest(path)
    except CovidMTLError as exc:  # a broken manifest must not block training on the rest
        logger.warning(f"covid_mtl: ignoring {path}: {exc}")
        return {}
    return {os.path.realpath(r.image): r.label for r in rows if r.label}


def _classification(*infos: Optional[Dict[str, Any]]) -> Optional[str]:
    for info in infos:
        value = (info or {}).get("classification")
        if value in LABELS:
            return value
    return None


def datastore_records(datastore: Datastore) -> List[Dict[str, Any]]:
    by_manifest = manifest_labels(getattr(datastore, "_datastore_path", ""))
    labeled = set(datastore.get_labeled_images(label_tag=DefaultLabelTag.FINAL))
    records = []
    for image_id in sorted(datastore.list_images()):
        image = os.path.realpath(datastore.get_image_uri(image_id))
        mask = datastore.get_label_uri(image_id, DefaultLabelTag.FINAL) if image_id in labeled else None
        label_info = datastore.get_label_info(image_id, DefaultLabelTag.FINAL) if mask else None
        label = _classification(label_info, datastore.get_image_info(image_id)) or by_manifest.get(image)
        records.append({"id": image_id, "image": image, "mask": mask or None, "label": label})
    logger.info(f"covid_mtl: {len(records)} images, {sum(r['mask'] is not None for r in records)} with masks, "
                f"{sum(r['label'] is not None for r in records)} with a class")
    return records


def split_records(records: List[Dict[str, Any]], val_fraction: float, seed: int = 0) -> Tuple[list, list]:
    """Validation images are drawn (seeded) from those with a mask, since the key metric is Dice."""
    masked = [r for r in records if r["mask"]]
    random.Random(seed).shuffle(masked)
    n_val = min(len(masked) - 1, max(1, round(val_fraction * len(masked)))) if len(masked) >= 2 else 0
    val_ids = {r["id"] for r in masked[:n_val]}
    return [r for r in records if r["id"] not in val_ids], [r for r in records if r["id"] in val_ids]
