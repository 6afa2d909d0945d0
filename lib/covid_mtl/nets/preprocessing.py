"""What the network sees of an image: the one preprocessing path, recorded in the checkpoint that was trained on it.

Training (``covid_mtl.train.samples``) and prediction (``covid_mtl.predict.predictor``) both call
:meth:`Preprocessing.plan` and :meth:`Preprocessing.pixels`, so a model always sees at prediction time what it was
taught on:

1. **orientation**: volumes are reordered into the canonical axial layout ``LPS`` (``covid_mtl.io.geometry``);
2. **slice selection**: a CT volume in HU runs only the slices that hold enough lung, i.e. whose lung-mask area
   (``covid_mtl.lungs``, found in 3D) is at least ``min_lung_share`` of the scan's largest lung slice. The neck,
   the shoulders above the apices and the abdomen below the bases never reach the network: the packaged model was
   trained on lung-cropped slices and on such slices it paints bowel and liver and calls COVID-19. Images that are
   not in HU (PNG/JPG exports, which carry no lung mask) and single slices run every slice;
3. **crop**: a HU volume is cut to the box of its lung mask over the slices that run, plus ``crop_margin`` of the
   box's own size on each side (the pleura and chest wall, as in the public lung-cropped slices); a non-HU volume to
   the box of its dark body-enclosed regions (``covid_mtl.io.crop``); a 2D image is used whole (the public slice
   collections are already lung crops);
4. **window**: HU to [0, 1] through ``window`` (W 1500 / L -600); non-HU by bit depth (``covid_mtl.io.normalize``);
5. **size**: each slice resized to ``size`` x ``size`` (bilinear; masks nearest).

The record is the checkpoint's ``meta["preprocessing"]``. It also holds the :class:`Augmentation` the model was
trained with (what training varies in steps 3-4 so that the network sees real scans, not one exporter's
screenshots); prediction never augments, but fine-tuning a model keeps its recipe. Checkpoints saved before it existed load with
:data:`DEFAULTS` (what they were trained with: the same window, orientation and size; their training slices were
2D lung crops, so the lung-based selection only changes what whole scans send them).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import ModelFileError
from ..image import Image
from ..io.crop import MARGIN, Box, image_box
from ..io.geometry import CANONICAL
from ..io.normalize import LUNG_WINDOW, normalize_array
from ..io.slices import resize_slices

MIN_LUNG_SHARE = 0.1
"""A volume slice runs when its lung area is at least this share of the scan's largest lung slice: the apical and
basal slices whose lung is a rim around the dome of the diaphragm or a tip in the neck run too, while slices with
a few voxels of lung among the bowel do not (see the model card's full-chest section for the measurement)."""


@dataclass(frozen=True)
class Augmentation:
    """What training varies about how a slice looks, and by how much (``covid_mtl.train.augment`` builds MONAI
    transforms from it). Grey levels are those of step 4, [0, 1] with W 1500 / L -600 for HU. Each range and why:

    * ``window_slope`` / ``window_offset``: another display window is a linear map of these grey levels (slope
      1500 / W, offset from the level). Slopes 0.75-1.6 are windows W 2000 to W 940, the span of the lung windows
      in use (W 1000-2000, L -700 to -500); the offset +-0.15 (+-225 HU of level) moves aerated lung (about
      -850 HU: 0.33 here) over 0.1-0.5, and the crops measured it at 5 %, 12 % and 33 % of the grey range;
    * ``gamma``: an exporter's display curve (PDF figures, screen captures); 0.6-1.7 covers the crops' darkest
      lungs from our 0.33 (0.33 ** 1.7 = 0.15);
    * ``noise_std``: up to 0.04 of the grey range = 60 HU at W 1500: the staged scans' soft-tissue noise is 19-31 HU
      with standard kernels and 41-69 HU with sharp ones (``../shared/data/real_ct/full_chest`` README);
    * ``blur_sigma`` / ``sharpen``: smooth and sharp reconstruction kernels (Gaussian blur 0.3-1.2 px at model
      size; unsharp mask of strength 1-3, the B40f-to-B70f step in noise above);
    * ``thick_mm``: partial volume of thicker slices: a slice of a HU volume is, with ``thick_prob``, replaced by
      the mean of its neighbours within +-``thick_mm`` / 2 (a 1.25 or 2.5 mm scan seen as a 5-7.5 mm one, the
      thicknesses the staged scans span); a 2D crop gets the blur instead;
    * ``low_resolution``: in-plane resolution: down- and up-sampled to 0.5-1.0 of model size (paper figures are
      screen crops of 150-500 px; a 512-px scan's lung box is about 360 px);
    * ``zoom``: the lung box margin: 0.8-1.25 puts the lungs at 70-100 % of the frame (the predictor's box gives
      about 86 %, the crops 75-100 %); quarter turns, flips and 15 degree rotations because the collections
      store slices in every orientation.
    """

    window_slope: tuple[float, float] = (0.75, 1.6)
    window_offset: float = 0.15
    window_prob: float = 0.8
    gamma: tuple[float, float] = (0.6, 1.7)
    gamma_prob: float = 0.5
    noise_std: float = 0.04
    noise_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    blur_prob: float = 0.2
    sharpen: tuple[float, float] = (1.0, 3.0)
    sharpen_prob: float = 0.2
    thick_mm: float = 5.0
    thick_prob: float = 0.3
    low_resolution: tuple[float, float] = (0.5, 1.0)
    low_resolution_prob: float = 0.2
    zoom: tuple[float, float] = (0.8, 1.25)
    rotate_degrees: float = 15.0
    version: int = 2

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> "Augmentation":
        """The recorded recipe; checkpoints without one get this version's (fine-tuning them uses it)."""
        if not record:
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}
        return cls(**values)


@dataclass(frozen=True)
class SlicePlan:
    """Which slices of a canonical (z, y, x) array run, and the box they are cut to.

    ``run``: (z,) bool, the slices the network sees. ``lung_share``: (z,) lung area of each slice over the largest
    (None without a lung mask). ``box``: (y0, y1, x0, x1). ``rule``: in words, for the reply.
    """

    run: np.ndarray
    box: Box
    rule: str
    lung_share: np.ndarray | None = None


@dataclass(frozen=True)
class Preprocessing:
    """The recorded preprocessing of one model; see the module docstring for each step."""

    size: int = 128
    window: tuple[float, float] = LUNG_WINDOW
    orientation: str = "".join(CANONICAL)
    min_lung_share: float = MIN_LUNG_SHARE
    crop_margin: float = MARGIN
    version: int = 1
    augmentation: Augmentation = field(default_factory=Augmentation, compare=False)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], size: int) -> "Preprocessing":
        """The record of a checkpoint's meta; without one, :data:`DEFAULTS` at the model's ``size``."""
        record = meta.get("preprocessing")
        if not record:
            return replace(DEFAULTS, size=int(size), notes=("checkpoint has no preprocessing record: defaults",))
        try:
            out = cls(size=int(record.get("size", size)), window=tuple(float(v) for v in record["window"]),
                      orientation=str(record.get("orientation", DEFAULTS.orientation)),
                      min_lung_share=float(record.get("min_lung_share", MIN_LUNG_SHARE)),
                      crop_margin=float(record.get("crop_margin", MARGIN)), version=int(record.get("version", 1)),
                      augmentation=Augmentation.from_record(record.get("augmentation")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"checkpoint preprocessing record is unreadable ({exc}): {dict(record)}") from exc
        if out.orientation != DEFAULTS.orientation:
            raise ModelFileError(f"checkpoint preprocessing orientation {out.orientation!r} is not supported "
                                f"(only {DEFAULTS.orientation!r})")
        if int(out.size) != int(size):
            raise ModelFileError(f"checkpoint preprocessing size {out.size} differs from the model's {size}")
        return out

    def display_window(self) -> dict[str, float]:
        """The window as a viewer's width and level (W 1500 / L -600): what the Slicer module and the web page
        show the CT with, so the radiologist sees what the model saw."""
        low, high = self.window
        return {"width": float(high - low), "level": float((low + high) / 2)}

    def as_meta(self) -> dict[str, Any]:
        """Plain types for ``save_checkpoint(meta={"preprocessing": ...})``."""
        record = asdict(self)
        record.pop("notes")
        record["window"] = list(self.window)
        record["augmentation"] = {k: list(v) if isinstance(v, tuple) else v for k, v in record["augmentation"].items()}
        return record

    def plan(self, image: Image, array: np.ndarray, lung_labels: np.ndarray | None) -> SlicePlan:
        """The slices to run and their box, for ``array`` (``image``'s pixels in the canonical layout) and its lung
        labelmap on the same grid (None when there is none: not HU, or not computed)."""
        nz, h, w = array.shape
        if nz == 1:
            return SlicePlan(np.ones(1, bool), (0, h, 0, w), "single slice: used whole")
        if not image.is_hu or lung_labels is None:
            run = np.ones(nz, bool)
            return SlicePlan(run, image_box(array, image.is_hu, image.bit_depth, run),
                             "not in HU: every slice, cut to the box of its dark body-enclosed regions")
        area = (lung_labels > 0).reshape(nz, -1).sum(axis=1).astype(np.float64)
        if area.max() <= 0:
            return SlicePlan(np.zeros(nz, bool), (0, h, 0, w), "no lung found: no slice runs", np.zeros(nz))
        share = area / area.max()
        run = share >= self.min_lung_share
        rows = np.flatnonzero((lung_labels[run] > 0).any(axis=(0, 2)))
        cols = np.flatnonzero((lung_labels[run] > 0).any(axis=(0, 1)))
        box = self._margin((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), h, w)
        return SlicePlan(run, box, f"slices whose lung area is >= {self.min_lung_share:g} of the largest, cut to the "
                                   f"lungs' box + {self.crop_margin:g}", share)

    def _margin(self, box: Box, h: int, w: int) -> Box:
        y0, y1, x0, x1 = box
        dy, dx = int(round(self.crop_margin * (y1 - y0))), int(round(self.crop_margin * (x1 - x0)))
        return max(0, y0 - dy), min(h, y1 + dy), max(0, x0 - dx), min(w, x1 + dx)

    def pixels(self, image: Image, array: np.ndarray, zs: np.ndarray, box: Box) -> torch.Tensor:
        """(n, size, size) float32 in [0, 1]: slices ``zs`` of ``array`` cut to ``box``, windowed, resized.

        ``array`` is ``image``'s pixels in the canonical layout; a non-HU image without a bit depth is min-max
        scaled over the whole array (its only scale), every other image per voxel."""
        y0, y1, x0, x1 = box
        if image.is_hu or image.bit_depth:
            scaled = normalize_array(array[zs, y0:y1, x0:x1], image.is_hu, image.bit_depth, self.window)
        else:
            low, high = float(array.min()), float(array.max())
            part = np.asarray(array[zs, y0:y1, x0:x1], np.float32)
            scaled = (part - low) / (high - low) if high > low else np.zeros_like(part)
        return resize_slices(np.ascontiguousarray(scaled), self.size, "bilinear")

    def thick_pixels(self, image: Image, array: np.ndarray, zs: np.ndarray, box: Box) -> torch.Tensor | None:
        """Slices ``zs`` as a scan ``augmentation.thick_mm`` thick would show them: each the mean (in HU) of the
        slices within half that distance, then as :meth:`pixels`. None when there is nothing to average: not a HU
        volume, no slice spacing, or slices already that thick."""
        spacing = image.spacing[0] if image.spacing else None
        if not image.is_hu or array.shape[0] < 2 or not spacing or spacing <= 0:
            return None
        reach = int(round(self.augmentation.thick_mm / 2 / float(spacing)))
        if reach < 1:
            return None
        y0, y1, x0, x1 = box
        thick = np.stack([array[max(0, z - reach):z + reach + 1, y0:y1, x0:x1].mean(axis=0) for z in zs])
        return self.pixels(image, thick, np.arange(len(zs)), (0, y1 - y0, 0, x1 - x0))

    def mask_pixels(self, mask: np.ndarray, zs: np.ndarray, box: Box) -> torch.Tensor:
        """The lesion mask of the same slices at model size (nearest), as 0/1 float32."""
        y0, y1, x0, x1 = box
        return resize_slices((mask[zs, y0:y1, x0:x1] != 0).astype(np.float32), self.size, "nearest")


DEFAULTS = Preprocessing()
"""What every checkpoint without a record was trained with (the model's own ``size`` replaces 128)."""


def of_model(model: torch.nn.Module) -> Preprocessing:
    """The preprocessing a model was trained with: the record of the checkpoint it was loaded from (so
    fine-tuning keeps it), else the defaults at its input size (a new model)."""
    found = getattr(model, "preprocessing", None)
    return found if isinstance(found, Preprocessing) else replace(DEFAULTS, size=int(model.config.image_size))
