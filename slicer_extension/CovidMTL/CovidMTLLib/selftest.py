"""Offline checks the Slicer self-test runs (Reload & Test): needs numpy, vtk and MRML only, so pytest runs the
very same function in slicer-core. Each check raises AssertionError with a message when it fails."""
from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import numpy as np
import slicer

from . import scene as mrml
from .client import CovidMTLLogicError
from .logic import SEGMENT_NAME, CovidMTLLogic


def _oblique_volume(scene, name: str, array: np.ndarray, labelmap: bool = False):
    matrix = np.eye(4)
    c, s = np.cos(np.deg2rad(15.0)), np.sin(np.deg2rad(15.0))
    matrix[:3, :3] = np.array([[-c, s, 0], [-s, -c, 0], [0, 0, 1]]) @ np.diag([0.75, 0.75, 2.0])
    matrix[:3, 3] = [100.0, -50.0, 300.0]
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    slicer.util.updateVolumeFromArray(node, array)
    return node


def run_self_test(scene) -> list[str]:
    """Run the checks on ``scene`` (nodes they add are removed); returns the names of the checks that passed."""
    passed = []
    added = []
    try:
        rng = np.random.default_rng(0)
        ct = _oblique_volume(scene, "CovidMTLSelfTest_ct", rng.integers(-1000, 400, (6, 10, 12)).astype(np.int16))
        added.append(ct)
        with tempfile.TemporaryDirectory(prefix="covid_mtl_selftest_") as tmp:
            back = mrml.read_volume(scene, mrml.write_volume(ct, Path(tmp) / "ct.nii.gz"), "CovidMTLSelfTest_back")
            added.append(back)
            assert mrml.same_grid(back, ct), "NIfTI round trip changed the volume geometry"
            same_voxels = np.array_equal(slicer.util.arrayFromVolume(back), slicer.util.arrayFromVolume(ct))
            assert same_voxels, "NIfTI round trip changed voxels"
            passed.append("volume -> NIfTI -> volume keeps voxels and IJK-to-RAS")

            mask = np.zeros((6, 10, 12), np.uint8)
            mask[1:4, 2:6, 3:9] = 1
            labelmap = _oblique_volume(scene, "CovidMTLSelfTest_mask", mask, labelmap=True)
            added.append(labelmap)
            segmentation, _ = mrml.mask_to_segmentation(labelmap, ct, SEGMENT_NAME)
            added.append(segmentation)
            assert np.array_equal(mrml.segment_array(segmentation, SEGMENT_NAME, ct), mask), "segment voxels moved"
            passed.append("mask -> segmentation -> labelmap on the CT grid")

            label_path = mrml.write_labelmap(mask, ct, Path(tmp) / "l.nii.gz")
            written = mrml.read_volume(scene, label_path, "CovidMTLSelfTest_l", labelmap=True)
            added.append(written)
            assert mrml.same_grid(written, ct), "correction label file is off the CT grid"
            assert np.array_equal(slicer.util.arrayFromVolume(written), mask), "correction label voxels changed"
            passed.append("correction labelmap file is 0/1 on the CT grid")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}"
        try:
            CovidMTLLogic(scene, url, timeout=5).connect()
            raise AssertionError(f"connecting to the closed port {url} did not fail")
        except CovidMTLLogicError as exc:
            assert str(exc).startswith(f"Cannot reach the covid-mtl server at {url}"), f"unclear message: {exc}"
        passed.append("a server that is down gives a readable message")
    finally:
        for node in reversed(added):
            if node.GetScene() is not None:
                mrml.remove_node(scene, node)
    return passed
