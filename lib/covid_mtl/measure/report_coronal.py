"""The report's coronal view: one coronal slice through the lungs with the lung contour and the lesions.

A lung mask that leaks below the diaphragm (liver dome, stomach) or along the table is obvious here and easy to
miss in axial key slices. Head up, patient's right on the viewer's left, true proportions (slice spacing).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..image import Image
from ..lungs.shape import LEFT_LUNG, RIGHT_LUNG
from .report_style import LESION_RGBA, display_range


def coronal_row(lung: np.ndarray | None, mask: np.ndarray | None, depth_y: int) -> int:
    """The y index to show: the lung voxels' mean row (else the lesion's, else the middle), which cuts through
    the domes of the diaphragm; the row with the most lung lies far back, behind the domes."""
    for volume in (lung, mask):
        if volume is not None and np.any(volume):
            counts = (np.asarray(volume) > 0).sum(axis=(0, 2))
            return int(round(float((counts * np.arange(counts.size)).sum() / counts.sum())))
    return depth_y // 2


def _head_up(plane_zx: np.ndarray) -> np.ndarray:
    """(z, x) plane of the canonical layout (z towards the head, x towards the patient's left) -> display rows
    top = head, columns left = patient's right."""
    return plane_zx[::-1, :]


def coronal_view(fig: Figure, rect: tuple[float, float, float, float], image: Image, mask: np.ndarray | None,
                 lung: np.ndarray | None) -> None:
    """Draw the coronal slice of a canonical-layout ``image`` into ``rect`` (figure fractions: left, bottom,
    width, height)."""
    y = coronal_row(lung, mask, image.array.shape[1])
    dz, dx = (image.spacing[0], image.spacing[2]) if image.spacing is not None else (1.0, 1.0)
    vmin, vmax = display_range(image)
    ax = fig.add_axes(rect)
    ax.imshow(_head_up(image.array[:, y, :]), cmap="gray", vmin=vmin, vmax=vmax, aspect=dz / dx,
              interpolation="nearest")
    if lung is not None and lung[:, y, :].any():
        for label, colour in ((RIGHT_LUNG, "cyan"), (LEFT_LUNG, "yellow")):
            plane = _head_up(lung[:, y, :] == label)
            if plane.any():
                ax.contour(plane.astype(float), levels=[0.5], colors=colour, linewidths=0.6)
    if mask is not None and mask[:, y, :].any():
        overlay = np.zeros(mask[:, y, :].shape + (4,), float)
        overlay[mask[:, y, :] > 0] = LESION_RGBA
        ax.imshow(_head_up(overlay), aspect=dz / dx, interpolation="nearest")
    ax.set_title(f"coronal, row {y + 1}/{image.array.shape[1]} (head up)", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    if image.affine is not None:
        ax.text(0.02, 0.02, "R", transform=ax.transAxes, color="yellow", fontsize=8)
        ax.text(0.95, 0.02, "L", transform=ax.transAxes, color="yellow", fontsize=8)
