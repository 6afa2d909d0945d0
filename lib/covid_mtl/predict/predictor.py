"""The one predicting path: a read ``Image`` in, lesion mask on the input grid + classification out.

Used by ``covid-mtl evaluate``/``analyze``, the MONAI Label infer task and the benchmarks, so a fix or a speed-up
lands everywhere at once. Steps:

1. the voxels reordered into the canonical axial layout (``covid_mtl.io.geometry``; flips and axis swaps only),
   so a scan stored RAS, LPS or sagittally gives the same answer; the reply names the orientation;
2. for a HU volume, its lungs found in 3D (``covid_mtl.lungs``; the caller may pass them) and the model's recorded
   preprocessing (``covid_mtl.nets.preprocessing``): only slices holding enough lung run, cut to the lungs' box
   (every slice for non-HU images), so the network sees what it was trained on;
3. per batch, those slices windowed, cut and resized by the same preprocessing, run through encoder +
   segmentation decoder + classifier (never the reconstruction decoder); lesion probabilities are resized back to
   the box (bilinear) and thresholded at 0.5;
4. slice probabilities -> volume probabilities by ``covid_mtl.predict.aggregate`` (top-k mean over lung slices);
5. the statement the model was trained to make (``Decision``): with a checkpoint that learned only COVID-19 vs
   non-COVID, the label is ``covid`` or ``non-covid`` at its validated cut-off and only P(covid) is reported;
   three classes only when all three outputs were trained;
6. the mask mapped back onto the input grid.

By default the network runs on those slices only (``skip_non_lung``): the others can hold no lung lesion, get an
empty mask and no slice probabilities (NaN), and a chest CT's neck and abdomen cost nothing. A HU volume in which
no lung is found runs no slice and gets no classification. The mask is the network's raw answer: the one analysis
(``covid_mtl.measure.analysis``) keeps only what lies in the lungs and measures it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..device import resolve_device
from ..errors import CovidMTLError, InternalError, ModelFileError
from ..image import CLASSES, Image
from ..io.geometry import canonical
from ..lungs.mask import LungMask, lung_mask
from ..nets.checkpoint import load_model
from ..nets.preprocessing import Preprocessing, of_model
from ..nets.network import probabilities
from .aggregate import TOP_FRACTION, aggregate
from ..nets.decision import Decision

THRESHOLD = 0.5


def binary_entropy(p: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Entropy in bits of Bernoulli(p), elementwise (0 at p = 0 or 1)."""
    lib = torch if isinstance(p, torch.Tensor) else np
    p = lib.clip(p, 1e-7, 1 - 1e-7)
    return -(p * lib.log2(p) + (1 - p) * lib.log2(1 - p))


@dataclass
class Prediction:
    """What the predictor says about one image.

    ``mask``: uint8 0/1 (z, y, x) on the input grid (None without a segmentation head). ``probabilities``:
    volume-level {class: P} and ``label`` (None without a classifier). ``slice_probabilities``: (z, 3) float32
    in ``CLASSES`` order, NaN for slices not run. ``lung_slices``: (z,) bool, the slices run (canonical order). ``aggregation``: the rule and its
    details. ``seg_entropy``: mean binary entropy (bits, 0..1) of the lesion probabilities over the slices run,
    at model resolution. ``timings``: seconds per stage and ``ms_per_slice``. ``decision``: the classes the model
    was trained on and its cut-off (``probabilities`` holds only those classes; ``statement`` says it in words).
    ``geometry``: the canonical orientation used, the file's own, whether the slices were re-cut, the lung box.
    """

    mask: np.ndarray | None
    probabilities: dict[str, float] | None
    label: str | None
    slice_probabilities: np.ndarray | None
    lung_slices: np.ndarray
    aggregation: dict[str, Any]
    lesion_voxels: int
    seg_entropy: float | None
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    decision: Decision = field(default_factory=Decision)
    geometry: dict[str, Any] = field(default_factory=dict)
    lung: LungMask | None = None
    involved_percent: float | None = None

    @property
    def statement(self) -> str | None:
        """What the model says, in words, with only the classes it was trained on (and the volume rule's reason
        when the lungs hold too little lesion for the classifier's COVID-19)."""
        if self.probabilities is None:
            return None
        return self.decision.statement(self.probabilities, self.involved_percent)

    @property
    def cls_entropy(self) -> float | None:
        """Uncertainty of the classification, 0 (sure) .. 1 (flat): the binary entropy of P(covid) for a
        COVID-vs-rest model, else the entropy of the three probabilities normalised to sum 1, over log(3)."""
        if self.probabilities is None:
            return None
        if self.decision.binary:
            return float(binary_entropy(np.float64(self.probabilities["covid"])))
        p = np.array([self.probabilities[c] for c in CLASSES], dtype=np.float64)
        p = np.clip(p / max(p.sum(), 1e-12), 1e-12, 1.0)
        return float(-(p * np.log(p)).sum() / math.log(len(CLASSES)))

    def uncertainty(self) -> float:
        """Active-learning score: classification entropy + mean voxel entropy of the lesion map (each 0..1)."""
        return float((self.cls_entropy or 0.0) + (self.seg_entropy or 0.0))


class Predictor:
    """A loaded model ready to predict; build it with ``Predictor.from_checkpoint``."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "auto", batch_size: int = 16,
                 skip_non_lung: bool = True, top_fraction: float = TOP_FRACTION, info: dict[str, Any] | None = None,
                 decision: Decision | None = None, preprocessing: Preprocessing | None = None):
        self.device = resolve_device(device)
        # channels-last convolutions measured ~30 % faster on CPU (oneDNN); the model is converted in place
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.config = model.config
        self.heads = tuple(h for h in ("seg", "cls") if h in model.tasks)
        if not self.heads:
            raise ModelFileError(f"model {self.config.name!r} has neither a segmentation nor a classification head")
        self.batch_size = int(batch_size)
        self.skip_non_lung = skip_non_lung
        self.top_fraction = top_fraction
        self.decision = decision or Decision()
        self.preprocessing = preprocessing or of_model(model)
        self.info = {"config": self.config.name, "tasks": list(model.tasks), "image_size": self.config.image_size,
                     **(info or {})}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto", **kwargs: Any) -> "Predictor":
        model, checkpoint = load_model(path, "cpu")
        info = {"checkpoint": str(path), "saved_at": checkpoint.meta.get("saved_at"),
                "versions": checkpoint.versions}
        kwargs.setdefault("decision", Decision.from_meta(checkpoint.meta))
        return cls(model, device=device, info=info, **kwargs)

    @torch.inference_mode()
    def predict(self, image: Image, lung: LungMask | None = None) -> Prediction:
        """Mask on ``image``'s grid, volume and slice probabilities, aggregation details, timings.

        ``lung``: the lung mask of ``image`` in the canonical layout (``covid_mtl.io.geometry.canonical``), when
        the caller has it already; a HU volume without one gets it computed here (the slices and box the network
        sees come from it, ``covid_mtl.nets.preprocessing``)."""
        t_start = time.perf_counter()
        if image.array.ndim != 3 or min(image.array.shape) < 1:
            raise CovidMTLError(f"{image.source}: expected a (z, y, x) image, got shape {image.array.shape}")
        canon, oriented = canonical(image)
        array = canon.array
        nz, ny, nx = array.shape
        if lung is None and image.is_hu and nz > 1:
            lung = lung_mask(canon)
        labels = lung.labels if lung is not None and lung.available else None
        if labels is not None and labels.shape != array.shape:
            raise InternalError(f"{image.source}: lung mask shape {labels.shape} differs from the canonical image's "
                                f"{array.shape}")
        plan = self.preprocessing.plan(canon, array, labels)
        run = plan.run if self.skip_non_lung else np.ones(nz, dtype=bool)
        y0, y1, x0, x1 = plan.box
        t_prepared = time.perf_counter()

        want_seg, want_cls = "seg" in self.heads, "cls" in self.heads
        mask = np.zeros((nz, ny, nx), dtype=np.uint8) if want_seg else None
        slice_probs = np.full((nz, len(CLASSES)), np.nan, dtype=np.float32) if want_cls else None
        entropy_sum, entropy_count = 0.0, 0
        size = self.config.image_size
        amp = self.device.type == "cuda"
        z_run = np.flatnonzero(run)
        for start in range(0, z_run.size, self.batch_size):
            zs = z_run[start:start + self.batch_size]
            x = self.preprocessing.pixels(canon, array, zs, plan.box).to(self.device)
            x = x[:, None].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16) if amp else torch.autocast("cpu", enabled=False):
                probs = probabilities(self.model(x, heads=self.heads))
            if want_seg:
                seg = probs["seg"].float()
                entropy_sum += float(binary_entropy(seg).sum())
                entropy_count += seg.numel()
                box = (y1 - y0, x1 - x0)
                back = F.interpolate(seg, size=box, mode="bilinear", align_corners=False) if box != (size, size) else seg
                mask[zs, y0:y1, x0:x1] = (back[:, 0] > THRESHOLD).to(torch.uint8).cpu().numpy()
            if want_cls:
                slice_probs[zs] = probs["cls"].float().cpu().numpy()
        t_network = time.perf_counter()

        probabilities_, label, details = None, None, {"rule": "none (model has no classifier)"}
        if want_cls and z_run.size:
            result = aggregate(slice_probs, run, self.top_fraction)
            probabilities_, label = self.decision.decide(result.probabilities)
            details = result.details
        elif want_cls:
            details = {"rule": "none (no slice holds lung: nothing to classify)"}
        details["slice_rule"] = plan.rule
        details["slices_run"] = int(z_run.size)
        geometry = {"orientation": oriented.codes, "input_orientation": oriented.input_codes,
                    "resliced": oriented.resliced, "lung_box_yx": [int(y0), int(y1), int(x0), int(x1)],
                    "slice_indices": "canonical axial order (head-foot axis, feet first)"}
        if oriented.resliced:
            geometry["warning"] = (f"the file stores the scan as {oriented.input_codes}, not as axial slices: the "
                                   f"network ran on axial slices re-cut from it ({oriented.codes})")
        if mask is not None:
            mask = oriented.back(mask)
        t_end = time.perf_counter()
        timings = {
            "prepare_s": t_prepared - t_start,
            "network_s": t_network - t_prepared,  # normalise, resize, network, resize back
            "aggregate_s": t_end - t_network,
            "total_s": t_end - t_start,
            "ms_per_slice": 1000 * (t_network - t_prepared) / max(1, z_run.size),
        }
        return Prediction(
            mask=mask, probabilities=probabilities_, label=label, slice_probabilities=slice_probs,
            lung_slices=run, aggregation=details, lesion_voxels=int(mask.sum()) if mask is not None else 0,
            seg_entropy=entropy_sum / entropy_count if entropy_count else None, timings=timings,
            model=dict(self.info), decision=self.decision, geometry=geometry, lung=lung,
        )
