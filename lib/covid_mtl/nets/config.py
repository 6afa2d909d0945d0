"""Named model configurations and task sets.

A configuration fixes the architecture (``arch``), the widths and the model's input size; the checkpoint stores
it in full, so a saved model is rebuilt without guessing.

Cost per slice (parameters and FLOPs counted with ``torch.utils.flop_counter.FlopCounterMode``, a multiply-add
counts 2; "inference" = encoder + segmentation decoder + classifier, as the predictor runs it). CPU times:
torch 2.14, fp32, 2 threads, batch 16, on the 2-core development VM while other jobs shared it (load 3-4).

=======  =====  ==========  ===================  ================  ==========================================
config   input  parameters  GFLOPs all heads     GFLOPs inference  CPU per slice (inference)
=======  =====  ==========  ===================  ================  ==========================================
paper    256    93.20 M     268.3                171.7             1.49 s  -> ~7.5 min for a 300-slice CT
lite     128    2.41 M      2.25                 1.40              16-25 ms -> 300-slice CT in 6 s
tiny     64     0.15 M      0.053                0.032             tests only
unet     256    1.98 M      9.89 (seg only)      -                 -
cnn      256    0.92 M      0.20 (cls only)      -                 -
=======  =====  ==========  ===================  ================  ==========================================

``lite`` was chosen among same-topology candidates (inference GFLOPs / best ms per slice): widths 8..128 at
128 px (0.64 / 7-10 ms), 12..192 at 128 px (1.40 / 16 ms), 16..256 at 128 px (2.46 / 32 ms), 8..128 at 256 px
(2.54 / 30-53 ms). 12..192 at 128 px meets the "300 slices in about 10 s on 2 cores" target with margin; the
predictor also runs only lung-containing slices. Whole ``Predictor.predict`` on a 300 x 512 x 512 phantom CT
(236 lung slices run): 5.9 s total, 24 ms per slice, resizing 512 <-> 128 and thresholding < 5 % of it.
Those numbers need ``OMP_WAIT_POLICY=PASSIVE`` on a shared CPU: with OpenMP's default spin-waiting the same
run took 15 s and a training step 10x longer (measured), as the two threads spin against other processes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import CovidMTLError

TASKS: tuple[str, ...] = ("recon", "seg", "cls")
"""All heads: image reconstruction, lesion segmentation, 3-class classification."""

TASK_SETS: dict[str, tuple[str, ...]] = {
    "recon,seg,cls": ("recon", "seg", "cls"),  # the paper's multi-task model
    "recon,seg": ("recon", "seg"),
    "seg,cls": ("seg", "cls"),
    "seg": ("seg",),
    "cls": ("cls",),
}
"""Task subsets the experiments compare (Amyar et al. 2020, tables 2-4)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a network.

    ``arch``: ``mtl`` (the multi-task network), ``unet`` (plain U-Net baseline, segmentation only) or ``cnn``
    (the 8-layer CNN classifier baseline of experiment 3). ``features``: widths of the five encoder levels of
    ``mtl`` (paper: 64, 128, 256, 512, 1024), of the U-Net's levels for ``unet`` (MONAI ``BasicUNet`` takes
    six numbers), or of the six conv layers of ``cnn``. ``image_size``: slices are resized to
    ``image_size`` x ``image_size`` before the network. ``cls_conv``: width of the classifier's conv layer
    (None: the encoder's last width, as in the paper). ``norm``: MONAI norm name for the conv blocks.
    """

    name: str
    arch: str = "mtl"
    features: tuple[int, ...] = (64, 128, 256, 512, 1024)
    image_size: int = 256
    in_channels: int = 1
    num_classes: int = 3
    cls_conv: int | None = None
    cls_dense: tuple[int, ...] = (128, 64)
    dropout: float = 0.5
    norm: str = "batch"
    default_tasks: tuple[str, ...] = TASKS

    def to_dict(self) -> dict[str, Any]:
        """Plain python types only, so a checkpoint loads with ``torch.load(weights_only=True)``."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise CovidMTLError(f"model config: unknown fields {sorted(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    def with_image_size(self, size: int) -> "ModelConfig":
        return replace(self, image_size=int(size))


CONFIGS: dict[str, ModelConfig] = {
    # Exactly the paper: 256 x 256 input, encoder 64 -> 1024, classifier conv at full width, dense 128/64.
    "paper": ModelConfig(name="paper"),
    # Same topology, 3/16 of the widths and 1/4 of the pixels: 1/120 of the paper's inference FLOPs, so a
    # 300-slice CT runs in seconds on 2 CPU cores (table above). The classifier conv is narrowed to 64 so the
    # flattened map (64 x 8 x 8) keeps the first dense layer small.
    "lite": ModelConfig(name="lite", features=(12, 24, 48, 96, 192), image_size=128, cls_conv=64),
    # For tests only: 0.15 M parameters at 64 x 64. No dropout: with so few weights it only slowed the
    # classifier down (measured on phantoms).
    "tiny": ModelConfig(name="tiny", features=(4, 8, 16, 32, 32), image_size=64, cls_conv=32,
                        cls_dense=(32, 16), dropout=0.0),
    # Baselines (experiment 2: U-Net; experiment 3: CNN classifier).
    "unet": ModelConfig(name="unet", arch="unet", features=(32, 32, 64, 128, 256, 32), image_size=256,
                        norm="instance", default_tasks=("seg",)),
    "unet-tiny": ModelConfig(name="unet-tiny", arch="unet", features=(8, 8, 16, 32, 64, 8), image_size=64,
                             norm="instance", default_tasks=("seg",)),
    "cnn": ModelConfig(name="cnn", arch="cnn", features=(8, 16, 32, 64, 128, 256), image_size=256,
                       cls_dense=(128,), default_tasks=("cls",)),
    "cnn-tiny": ModelConfig(name="cnn-tiny", arch="cnn", features=(4, 8, 16, 32, 32, 32), image_size=64,
                            cls_dense=(32,), dropout=0.2, default_tasks=("cls",)),
}



def get_config(name: str, image_size: int | None = None) -> ModelConfig:
    """The configuration called ``name``, optionally with another input size."""
    if name not in CONFIGS:
        raise CovidMTLError(f"unknown model config {name!r}; choose one of {', '.join(CONFIGS)}")
    config = CONFIGS[name]
    return config.with_image_size(image_size) if image_size else config


def parse_tasks(text: str | tuple[str, ...] | list[str] | None, config: ModelConfig | None = None) -> tuple[str, ...]:
    """``"recon,seg,cls"`` -> ``("recon", "seg", "cls")`` in canonical order; checks the arch supports them."""
    if text is None:
        return config.default_tasks if config else TASKS
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t) for t in text]
    names = [n for n in names if n]
    bad = [n for n in names if n not in TASKS]
    if bad or not names:
        raise CovidMTLError(f"tasks {text!r}: each must be one of {', '.join(TASKS)}")
    tasks = tuple(t for t in TASKS if t in names)
    if config is not None and not set(tasks) <= set(config.default_tasks):
        raise CovidMTLError(f"config {config.name!r} ({config.arch}) supports only tasks "
                            f"{','.join(config.default_tasks)}, not {','.join(tasks)}")
    return tasks
