"""Helpers shared by the Slicer module's tests: synthetic volumes on an oblique grid, NIfTI comparisons, a recorded
server."""
from __future__ import annotations

import copy
import gzip
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import nibabel as nib
import numpy as np
import slicer

from CovidMTLLib.client import Part

# GET /info/ of a covid-mtl server, as far as the module reads it (the real server's reply: test_slicer_logic.py).
SERVER_INFO = {
    "name": "covid-mtl", "version": "0.8.5",
    "models": {"covid_mtl": {"type": "segmentation", "labels": {"COVID-19 lesion": 1},
                             "classes": ["covid", "normal", "other"],
                             "correction_classes": ["covid", "normal", "other", "non-covid"],
                             "window": {"width": 1500.0, "level": -600.0}}},
    "trainers": {"covid_mtl": {}}, "strategies": {"uncertainty": {}, "random": {}},
}


def oblique_ijk_to_ras() -> np.ndarray:
    """Anisotropic spacing, a rotation about two axes and an origin far from 0: a geometry a swapped axis,
    a dropped direction or a lost origin would all change."""
    a, b = np.deg2rad(20.0), np.deg2rad(-7.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rz @ rx @ np.diag([0.7, 0.8, 2.5])
    matrix[:3, 3] = [120.5, -33.25, 410.0]
    return matrix


def add_volume(scene, array_zyx: np.ndarray, ijk_to_ras: np.ndarray, name: str = "ct", labelmap: bool = False):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, array_zyx)
    return node


def nifti_zyx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(voxels as (z, y, x), affine) of a NIfTI file read with nibabel, independently of Slicer."""
    image = nib.load(str(path))
    return np.asarray(image.dataobj).transpose(2, 1, 0), image.affine


def save_nifti_zyx(array_zyx: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array_zyx.transpose(2, 1, 0)), affine), str(path))
    return path


@contextmanager
def application_scene() -> Iterator["slicer.vtkMRMLScene"]:
    """A fresh scene with what the application always has in it: default color tables, a subject hierarchy."""
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    try:
        yield scene
    finally:
        colors.SetMRMLScene(None)
        scene.Clear(True)


class RecordedServer:
    """Stands in for the HTTP client: ``/info/`` and one Classify & Segment (a fixed reply, a mask on the volume's
    grid). Everything on the Slicer side stays real MRML; the real server's replies are test_slicer_logic.py's."""

    url = "http://recorded.invalid"
    logged_in = False

    def auth_required(self) -> bool:
        return False

    def __init__(self, reply: dict, mask_zyx: np.ndarray, ijk_to_ras: np.ndarray, info: Optional[dict] = None):
        self.reply = reply
        self.server_info = copy.deepcopy(SERVER_INFO if info is None else info)
        self.infers: list[tuple[str, str]] = []
        image = nib.Nifti1Image(np.ascontiguousarray(mask_zyx.transpose(2, 1, 0)), ijk_to_ras)
        self.mask = gzip.compress(image.to_bytes())

    def info(self) -> dict[str, Any]:
        return self.server_info

    def has_image(self, image_id: str) -> bool:
        return True

    def infer(self, model: str, image_id: str, params=None):
        self.infers.append((model, image_id))
        return self.reply, Part("image", "mask.nii.gz", "application/gzip", self.mask)
