"""MRML scene pieces, free of Qt: volume node <-> NIfTI with its IJK-to-RAS geometry, mask -> segmentation
node on the CT grid, segment -> 0/1 labelmap on the CT grid, the grid-equality rule, a volume's window / level.

Files are read and written with Slicer's own ITK-based storage node, so the geometry round trip is the one Slicer
uses when a radiologist loads or saves a volume (NIfTI is RAS on disk, Slicer converts from/to LPS internally).
Arrays are numpy (z, y, x) = reversed IJK, as slicer.util returns them.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

import numpy as np
import slicer
import vtk
from slicer.util import arrayFromVolume, updateVolumeFromArray

from .client import CovidMTLLogicError

# The grid-equality rule of the server (covid_mtl.io.grid.same_grid, which PUT /datastore/label applies), copied
# because Slicer's Python lacks the covid_mtl package: same shape, and every origin and axis-vector component of the
# IJK-to-RAS matrices within TOLERANCE_VOXELS of the reference's smallest voxel side. A mask the module accepts is
# then one the server accepts too; tests/slicer/test_grid_rule.py runs both on the same cases.
TOLERANCE_VOXELS = 0.01  # covid_mtl.io.grid.TOLERANCE_VOXELS; float32 NIfTI round trips move the affine ~1e-5 mm


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface rules once: Slicer's Segmentations module does it at start-up, a bare
    MRML (slicer-core) does not, and without them a segment cannot even be created empty."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) > 0:
        return
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def dimensions(volume_node) -> tuple[int, int, int]:
    image = volume_node.GetImageData()
    if image is None:
        raise CovidMTLLogicError(f'The volume "{volume_node.GetName()}" has no voxels loaded')
    return tuple(image.GetDimensions())


def tolerance_mm(ijk_to_ras_matrix: np.ndarray) -> float:
    """The rule's tolerance in mm for a grid (its smallest voxel side times ``TOLERANCE_VOXELS``)."""
    sides = np.linalg.norm(np.asarray(ijk_to_ras_matrix, float)[:3, :3], axis=0)
    return TOLERANCE_VOXELS * float(max(min(sides), 1e-6))


def grids_match(dims_a, ijk_to_ras_a: np.ndarray, dims_b, ijk_to_ras_b: np.ndarray) -> bool:
    """Whether grid ``a`` lies on grid ``b`` (the reference, whose voxel size sets the tolerance).

    Dimensions are Slicer's (i, j, k); the core compares its (z, y, x) shapes, the same test reversed. Both
    matrices map (i, j, k) to RAS, as the core's ``Image.affine`` (the NIfTI affine) does.
    """
    if tuple(dims_a) != tuple(dims_b):
        return False
    a, b = np.asarray(ijk_to_ras_a, float), np.asarray(ijk_to_ras_b, float)
    return bool(np.all(np.abs(a[:3, :] - b[:3, :]) <= tolerance_mm(b)))


def same_grid(a, b) -> bool:
    """Whether volume node ``a`` lies on the grid of volume node ``b`` (:func:`grids_match`)."""
    return grids_match(dimensions(a), ijk_to_ras(a), dimensions(b), ijk_to_ras(b))


def read_volume(scene, path: Path, name: str, labelmap: bool = False):
    """Load a file (NIfTI, NRRD, ...) as a new scalar or labelmap volume node of ``scene``."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)  # never gather neighbouring files of the temp folder into a series
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise CovidMTLLogicError(f"Slicer could not read the file {Path(path).name}")
    return node


def write_volume(volume_node, path: Path) -> Path:
    """Write a volume node's voxels with its (untransformed) IJK-to-RAS geometry; ``.nii.gz`` gives gzip NIfTI."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(volume_node):
        raise CovidMTLLogicError(f'Slicer could not write the volume "{volume_node.GetName()}" to {Path(path).name}')
    return Path(path)


def write_labelmap(array_zyx: np.ndarray, reference_volume, path: Path) -> Path:
    """Write a 0/1 uint8 mask on the reference volume's grid (shape must be the volume's (z, y, x))."""
    expected = tuple(reversed(dimensions(reference_volume)))
    if tuple(array_zyx.shape) != expected:
        raise CovidMTLLogicError(f"mask shape {array_zyx.shape} differs from the volume's {expected} (z, y, x)")
    node = slicer.vtkMRMLLabelMapVolumeNode()  # outside any scene: nothing appears in the user's data tree
    matrix = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)
    updateVolumeFromArray(node, (np.asarray(array_zyx) > 0).astype(np.uint8))
    return write_volume(node, path)


def content_id(volume_node) -> str:
    """Stable datastore id: the node name (made safe) + a digest of voxels and geometry.

    The same scan gets the same id in every session, so it is uploaded once; a different scan with the same
    name never overwrites another one on the server.
    """
    digest = hashlib.sha256()
    voxels = np.ascontiguousarray(arrayFromVolume(volume_node))
    digest.update(f"{voxels.dtype.str}{voxels.shape}".encode())
    digest.update(np.round(ijk_to_ras(volume_node), 4).tobytes())
    digest.update(voxels.tobytes())
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", volume_node.GetName() or "").strip("_-")[:60] or "volume"
    return f"{name}-{digest.hexdigest()[:12]}"


def mask_to_segmentation(labelmap_node, reference_volume, segment_name: str, segmentation_node=None,
                         color: tuple[float, float, float] = (0.95, 0.35, 0.2)):
    """Put a 0/1 labelmap into segment ``segment_name`` of a segmentation aligned to ``reference_volume``.

    A given ``segmentation_node`` is reused (its segment of that name replaced) so a second click does not pile
    up nodes. Returns (segmentation node, segment id).
    """
    ensure_segmentation_converters()
    if not same_grid(labelmap_node, reference_volume):
        raise CovidMTLLogicError(
            f"The server's mask grid {dimensions(labelmap_node)} does not match the CT grid "
            f"{dimensions(reference_volume)}: the mask would be misaligned, so it was not loaded"
        )
    scene = reference_volume.GetScene()
    binary = (arrayFromVolume(labelmap_node) > 0).astype(np.uint8)  # label value must be 1 for one segment
    updateVolumeFromArray(labelmap_node, binary)
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segment_name)
    segmentation = segmentation_node.GetSegmentation()
    old_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if old_id:
        segmentation.RemoveSegment(old_id)
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    segment_id = segmentation.AddEmptySegment("", segment_name, list(color))
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic
    if not segmentations.ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node, ids):
        raise CovidMTLLogicError("Slicer could not import the lesion mask into a segmentation")
    segmentation_node.CreateDefaultDisplayNodes()
    return segmentation_node, segment_id


def segment_array(segmentation_node, segment_name: str, reference_volume) -> np.ndarray:
    """Segment ``segment_name`` as a 0/1 uint8 (z, y, x) array resampled onto the reference volume's grid, whatever
    extent or geometry the Segment Editor left the segment in."""
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise CovidMTLLogicError(
            f'The segmentation "{segmentation_node.GetName()}" has no segment named "{segment_name}"'
        )
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__covid_mtl_export__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        segmentations = slicer.vtkSlicerSegmentationsModuleLogic
        if not segmentations.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_volume):
            raise CovidMTLLogicError(f'Slicer could not export the segment "{segment_name}" on the CT grid')
        return (arrayFromVolume(labelmap) > 0).astype(np.uint8)
    finally:
        _remove_with_display(scene, labelmap)


def _remove_with_display(scene, node) -> None:
    """Remove a temporary node with the display and (non-shared) color nodes the export made for it."""
    display = node.GetDisplayNode()
    if display is not None:
        color = display.GetColorNode()
        if color is not None and not color.GetSingletonTag():
            scene.RemoveNode(color)
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def remove_node(scene, node: Optional[object]) -> None:
    if node is not None:
        _remove_with_display(scene, node)


def show_window(volume_node, width: float, level: float) -> None:
    """Show the volume with this window / level (in its display node, made here when it has none yet)."""
    if volume_node.GetDisplayNode() is None:
        volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()  # else Slicer recomputes a window from the histogram and overrides this one
    display.SetWindowLevel(float(width), float(level))
