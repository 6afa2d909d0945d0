"""How the report's views draw a CT and its masks, shared by the axial slices (``report``) and the coronal view
(``report_coronal``)."""
from __future__ import annotations

from ..image import Image
from ..io.normalize import LUNG_WINDOW

LESION_RGBA = (1.0, 0.1, 0.1, 0.45)
LUNG_COLOUR = "cyan"


def display_range(image: Image) -> tuple[float, float]:
    """Grey levels shown black and white: the model's lung window for HU, the full range of the bit depth else."""
    return LUNG_WINDOW if image.is_hu else (0.0, float(2 ** (image.bit_depth or 8) - 1))
