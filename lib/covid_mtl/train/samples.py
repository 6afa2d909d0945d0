"""Training samples: the 2D axial slices of labelled images, at the model's input size.

Records (``VolumeRecord``: image path, mask path or None, class label or None) come from a manifest
(``covid_mtl.io.manifest.read_manifest`` rows) or from any list of dicts (the MONAI Label train task builds its own).
Each image is read with ``covid_mtl.io.read_image`` and scaled with ``covid_mtl.io.normalize`` (the same rule the
predictor uses); masks are read the same way and any non-zero voxel is lesion.

Which slices, and which class each slice teaches:

* What the network sees of each image is the model's recorded preprocessing (``covid_mtl.nets.preprocessing``),
  the same function the predictor calls: a volume in Hounsfield units keeps only the slices that hold enough lung
  (its lung mask, ``covid_mtl.lungs``, found in 3D), cut to the lungs' box; non-HU volumes and 2D images keep
  every slice. So a radiologist's corrected whole-chest CT teaches on the slices the model will be run on.
* Class per slice from the volume's label: ``normal`` and ``other`` -> every kept slice gets that class;
  ``non-covid`` -> every kept slice is "not COVID" (only P(covid) is supervised); ``covid`` *with a mask* ->
  slices with lesion are COVID, slices without lesion get **no** class (unknown), so clean lung is never
  taught to be COVID; ``other`` with a mask -> slices with lesion are "other", slices without are only
  "not COVID"; ``covid``/``other`` without a mask -> every kept slice takes the label (a weak label, the only one
  available); no label -> no class. A 2D image (one slice) always takes its image's label, since whoever
  labelled it labelled that slice.
* A slice of a HU volume also carries its thick-slice version (``thick``: partial volume of the neighbouring
  slices, ``Preprocessing.thick_pixels``), which the augmentation may show instead.
* A slice of an image with a mask is a segmentation sample whether or not it shows lesion (an empty mask is a
  label: "no lesion here"); slices of images without a mask do not supervise the segmentation.

Slices are resized to the model's size (MONAI ``Resize``: bilinear for images, nearest for masks; non-square images
are stretched, as in the paper's 256 x 256 slices) and kept in memory (float32 at model size: 64 KiB per 128 x 128
slice), so each image file is read once.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import Dataset
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

from ..errors import CovidMTLError
from ..image import CLASSES, LABELS, Image
from ..io import read_image, read_mask
from ..io.geometry import canonical
from ..lungs.mask import lung_mask
from ..nets.preprocessing import Preprocessing
from .augment import THICK

@dataclass(frozen=True)
class VolumeRecord:
    """One image to learn from: ``image`` path, ``mask`` path or None, ``label`` in ``LABELS`` or None, and
    the manifest's ``source`` (data set) and ``group`` (patient/scan) when known."""

    image: str
    mask: str | None = None
    label: str | None = None
    source: str | None = None
    group: str | None = None


def as_records(items: Iterable[object]) -> list[VolumeRecord]:
    """``VolumeRecord``s from manifest rows, records, or mappings with keys ``image``, ``mask``, ``label``."""
    records = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            image, mask, label, source, group = (item.get(k) for k in ("image", "mask", "label", "source", "group"))
        else:
            image, mask, label, source, group = (getattr(item, k, None)
                                                 for k in ("image", "mask", "label", "source", "group"))
        where = f"training record {i} ({image})"
        if not image:
            raise CovidMTLError(f"training record {i}: no image path")
        label = str(label).lower() if label not in (None, "") else None
        if label is not None and label not in LABELS:
            raise CovidMTLError(f"{where}: label {label!r} is not one of {list(LABELS)} (the mask path goes "
                                f"in 'mask')")
        records.append(VolumeRecord(str(image), str(mask) if mask else None, label,
                                    str(source) if source else None, str(group) if group else None))
    return records


def class_target(label: str | None, lesion_in_slice: bool | None, single_slice: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(target, weight)`` for the three sigmoid outputs of one slice by the rule in the module docstring.

    ``lesion_in_slice`` is None when the image has no mask.
    """
    target = np.zeros(len(CLASSES), dtype=np.float32)
    weight = np.zeros(len(CLASSES), dtype=np.float32)
    if label is None:
        return target, weight
    if label == "non-covid":
        weight[CLASSES.index("covid")] = 1.0  # target 0 on P(covid), the other outputs unknown
        return target, weight
    if lesion_in_slice is False and not single_slice and label in ("covid", "other"):
        if label == "other":  # a clean slice of a non-COVID infection: only "not COVID" is certain
            weight[CLASSES.index("covid")] = 1.0
        return target, weight  # a clean slice of a COVID volume: its class is unknown
    target[CLASSES.index(label)] = 1.0
    weight[:] = 1.0
    return target, weight


def image_slices(image: Image, mask: np.ndarray | None, label: str | None, preprocessing: Preprocessing,
                 collection: str | None = None) -> list[dict]:
    """Samples of one read image: dicts with ``image``/``mask`` (1, S, S) float32, ``has_mask`` (scalar),
    ``cls_target``/``cls_weight`` (3,), ``source`` (the file), ``collection`` (the data set it belongs to, for
    class balance) and ``z`` (slice index in the canonical axial order). What the network sees is
    ``preprocessing``'s plan (the predictor's: canonical layout, lung slices, lung box, window, size)."""
    if mask is not None and mask.shape != image.array.shape:
        raise CovidMTLError(f"{image.source}: mask shape {mask.shape} differs from image shape {image.array.shape}")
    canon, oriented = canonical(image)
    array = canon.array
    mask = oriented.forward(mask) if mask is not None else None
    lung = lung_mask(canon) if canon.is_hu and array.shape[0] > 1 else None
    plan = preprocessing.plan(canon, array, lung.labels if lung is not None and lung.available else None)
    z_kept = np.flatnonzero(plan.run)
    if z_kept.size == 0:
        return []
    image_size = preprocessing.size
    pixels = preprocessing.pixels(canon, array, z_kept, plan.box).numpy()
    thick = preprocessing.thick_pixels(canon, array, z_kept, plan.box)
    lesions = None
    if mask is not None:
        lesions = preprocessing.mask_pixels(mask, z_kept, plan.box).numpy() > 0.5
    single = array.shape[0] == 1
    samples = []
    for i, z in enumerate(z_kept):
        has_lesion = None if mask is None else bool(np.any(mask[z]))
        target, weight = class_target(label, has_lesion, single)
        samples.append({
            "image": pixels[i][None].astype(np.float32),
            "mask": (lesions[i][None] if lesions is not None else np.zeros((1, image_size, image_size), bool)
                     ).astype(np.float32),
            "has_mask": np.float32(mask is not None),
            "cls_target": target,
            "cls_weight": weight,
            "source": str(image.source),
            "collection": collection or "",
            "z": int(z),
            **({THICK: thick[i][None].numpy().astype(np.float32)} if thick is not None else {}),
        })
    return samples


def record_slices(record: VolumeRecord, preprocessing: Preprocessing) -> list[dict]:
    """Read one record's image (and mask) and cut it into samples."""
    image = read_image(record.image)
    mask = read_mask(record.mask, image) if record.mask else None
    return image_slices(image, mask, record.label, preprocessing, collection=record.source)


def build_dataset(records: Sequence[object], preprocessing: Preprocessing, transform=None,
                  progress: bool = False, replay: Sequence[object] = ()) -> Dataset:
    """A MONAI ``Dataset`` of the slices of ``records`` (see ``as_records``) as ``preprocessing`` (the model's,
    ``covid_mtl.nets.preprocessing.of_model``) cuts them; ``transform`` is applied per sample each time it is
    drawn (``covid_mtl.train.augment.train_transforms`` for training). ``replay``: records of an earlier
    training set learnt alongside (their samples carry ``replay`` True; see :func:`draw_weights`)."""
    from tqdm.auto import tqdm

    from .augment import eval_transforms

    records, replay = as_records(records), as_records(replay)
    samples: list[dict] = []
    for i, record in enumerate(tqdm(records + replay, desc="reading", unit="image", disable=not progress)):
        for sample in record_slices(record, preprocessing):
            sample["replay"] = i >= len(records)
            samples.append(sample)
    if not samples:
        raise CovidMTLError(f"no usable slices in {len(records)} training records (no lung-containing slices?)")
    return Dataset(samples, transform=transform or eval_transforms())


def balance_weights(samples: Sequence[dict]) -> np.ndarray:
    """Drawing weights for class balance: the three states of P(covid) (supervised positive, supervised
    negative, unknown) each get a third of the draws, shared equally by the collections present in that state
    and then by their slices. So COVID and non-COVID slices are drawn equally often, no single collection
    stands for a class (a network could learn the collection instead), and unlabelled slices still train the
    reconstruction and, where masked, the segmentation. States with no slices give their share to the others."""
    keys = []
    for s in samples:
        supervised = float(np.asarray(s["cls_weight"])[0]) > 0
        state = ("positive" if float(np.asarray(s["cls_target"])[0]) > 0.5 else "negative") if supervised else "unknown"
        keys.append((state, s.get("collection", "")))
    states: dict[str, dict[str, int]] = {}
    for state, collection in keys:
        states.setdefault(state, {}).setdefault(collection, 0)
        states[state][collection] += 1
    weights = np.array([1.0 / len(states) / len(states[st]) / states[st][c] for st, c in keys], dtype=np.float64)
    return weights / weights.sum()


def draw_weights(samples: Sequence[dict], balance: bool, replay_share: float) -> np.ndarray:
    """Drawing weights when some samples are replayed (``replay`` True): the replayed set gets ``replay_share``
    of the draws and the new samples the rest, each part balanced on its own (:func:`balance_weights`) or
    uniform. So a handful of corrections is not drowned by a large earlier set, and the earlier set keeps
    being seen, which is what stops fine-tuning from forgetting it. A part with no samples gives its share
    to the other."""
    replayed = np.array([bool(s.get("replay", False)) for s in samples])
    weights = np.zeros(len(samples), dtype=np.float64)
    for part, share in ((~replayed, 1.0 - replay_share), (replayed, replay_share)):
        index = np.flatnonzero(part)
        if index.size == 0 or index.size == len(samples):
            share = 1.0
        if index.size:
            chosen = [samples[i] for i in index]
            weights[index] = share * (balance_weights(chosen) if balance else np.full(index.size, 1.0 / index.size))
    return weights  # each part sums to 1 and the shares to 1: nothing replayed gives balance_weights unchanged


def train_sampler(dataset: Dataset, batch_size: int, steps_per_epoch: int | None, balance: bool,
                  generator: torch.Generator | None = None, replay_share: float = 0.5) -> Sampler:
    """What one training epoch draws: ``steps_per_epoch`` batches (None or 0: as many slices as the dataset
    has), with the class balance above or uniformly; replayed samples get ``replay_share`` of the draws."""
    draws = steps_per_epoch * batch_size if steps_per_epoch else len(dataset)
    if balance or any(s.get("replay") for s in dataset.data):
        return WeightedRandomSampler(draw_weights(dataset.data, balance, replay_share), draws, generator=generator)
    return RandomSampler(dataset, num_samples=draws, generator=generator)


class ShareOfDraws(Sampler[int]):
    """One process's share of an epoch of ``draws`` that every process computes alike (the same sampler with the
    same seeded generator, advanced once per epoch as in a single process): every ``world_size``-th (W) draw from
    ``rank``. The shares' batches k (batch size B) together are batch k of one process with batch W x B: its draws
    ``k*W*B`` to ``(k+1)*W*B - 1`` are the draws ``k*B`` to ``(k+1)*B - 1`` of the W shares. A last uneven
    stretch is topped up from the epoch's first draws (as torch's ``DistributedSampler`` does), so every process
    takes as many steps as the others and none waits for gradients that never come."""

    def __init__(self, draws: Sampler[int], rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise CovidMTLError(f"rank {rank} outside a world of {world_size}")
        self.draws, self.rank, self.world_size = draws, rank, world_size

    def __len__(self) -> int:
        return -(-len(self.draws) // self.world_size)

    def __iter__(self) -> Iterator[int]:
        draws = list(self.draws)  # the whole epoch, identical in every process
        total = len(self) * self.world_size
        draws = (draws * -(-total // max(len(draws), 1)))[:total]
        return iter(draws[self.rank::self.world_size])


def count_samples(dataset: Dataset) -> dict[str, int]:
    """Counts for logs: slices, segmentation samples, fully and partly labelled class samples."""
    data = dataset.data
    return {
        "slices": len(data),
        "with_mask": int(sum(bool(s["has_mask"]) for s in data)),
        "with_class": int(sum(bool(s["cls_weight"].all()) for s in data)),
        "covid_only": int(sum(bool(s["cls_weight"][0]) and not bool(s["cls_weight"].all()) for s in data)),
        **{name: int(sum(bool(s["cls_weight"].all() and s["cls_target"][i]) for s in data))
           for i, name in enumerate(CLASSES)},
    }
