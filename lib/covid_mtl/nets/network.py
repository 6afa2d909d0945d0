"""The multi-task network of Amyar et al. 2020 (reconstruction + segmentation + classification of CT slices).

One shared encoder feeds three heads:

* encoder: five levels of two 3x3 convolutions (conv -> norm -> ReLU) with ``features`` widths
  (paper: 64, 128, 256, 512, 1024). Levels 1-3 start with a *stride-2* 3x3 convolution instead of pooling;
  level 4 widens 512 -> 1024 at the same resolution. So three downsamplings: a 256 x 256 slice gives a
  32 x 32 x 1024 encoder output, as in the paper.
* reconstruction decoder and segmentation decoder (same layout, separate weights), U-Net style: each level
  upsamples by 2 (none for the level that mirrors level 4), a 3x3 conv halves the features, the result is
  concatenated with the encoder skip of that resolution, and two 3x3 convs follow. A 1x1 conv gives one
  channel: linear for the reconstruction, logits for the segmentation (sigmoid -> lesion probability).
* classifier on the encoder output: 3x3 conv (ELU), 2x2 max-pool, flatten, dense 128 and 64 (ELU, dropout 0.5),
  dense 3 -> logits; sigmoid gives P(covid), P(normal), P(other) in ``covid_mtl.image.CLASSES`` order.

``forward(x, heads=...)`` returns a dict of named outputs (``recon``, ``seg_logits``, ``cls_logits``), never a
tuple; ``heads`` restricts the work to what is needed (the predictor asks for ``("seg", "cls")`` so the
reconstruction decoder never runs at inference). Heads for tasks that are off are not built at all.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from .config import TASKS, ModelConfig, parse_tasks
from ..errors import CovidMTLError

OUTPUT_KEYS: dict[str, str] = {"recon": "recon", "seg": "seg_logits", "cls": "cls_logits"}
"""Task name -> key of its output in the forward dict."""

DOWNSAMPLE = (False, True, True, True, False)
"""Which encoder levels start with a stride-2 conv: three halvings, 256 -> 32."""
SEG_PRIOR_LOGIT = -3.0


def conv3x3(in_channels: int, out_channels: int, norm: str, strides: int = 1) -> Convolution:
    """3x3 conv -> norm -> ReLU (MONAI's Convolution block, 'NA' ordering)."""
    return Convolution(2, in_channels, out_channels, strides=strides, kernel_size=3, act="relu", norm=norm,
                       adn_ordering="NA")


class Encoder(nn.Module):
    """Five levels; returns every level's output (the decoders' skips; the last is the bottleneck)."""

    def __init__(self, in_channels: int, features: Sequence[int], norm: str):
        super().__init__()
        levels = []
        previous = in_channels
        for width, down in zip(features, DOWNSAMPLE):
            levels.append(nn.Sequential(conv3x3(previous, width, norm, strides=2 if down else 1),
                                        conv3x3(width, width, norm)))
            previous = width
        self.levels = nn.ModuleList(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs


class UpLevel(nn.Module):
    """Upsample (optional), conv halving the features, concat with the skip, two convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: bool, norm: str):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.halve = conv3x3(in_channels, in_channels // 2, norm)
        self.convs = nn.Sequential(conv3x3(in_channels // 2 + skip_channels, out_channels, norm),
                                   conv3x3(out_channels, out_channels, norm))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.halve(self.up(x)), skip], dim=1))


class Decoder(nn.Module):
    """Mirrors the encoder from the bottleneck back to full resolution; 1x1 conv to ``out_channels``."""

    def __init__(self, features: Sequence[int], out_channels: int, norm: str):
        super().__init__()
        f = list(features)
        # level i takes level i+1's output up to level i's resolution; it upsamples when level i+1 downsampled
        self.ups = nn.ModuleList(
            UpLevel(f[i + 1], f[i], f[i], upsample=DOWNSAMPLE[i + 1], norm=norm) for i in reversed(range(len(f) - 1))
        )
        self.head = nn.Conv2d(f[0], out_channels, kernel_size=1)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(x, skip)
        return self.head(x)


class Classifier(nn.Module):
    """Conv, max-pool, flatten, dense layers with ELU and dropout, dense ``num_classes`` logits."""

    def __init__(self, in_channels: int, conv_channels: int, map_size: int, dense: Sequence[int],
                 num_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, conv_channels, 3, padding=1), nn.ELU(),
                                   nn.MaxPool2d(2), nn.Flatten()]
        previous = conv_channels * (map_size // 2) ** 2
        for width in dense:
            layers += [nn.Linear(previous, width), nn.ELU(), nn.Dropout(dropout)]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MultiTaskNet(nn.Module):
    """Shared encoder + the heads named in ``tasks`` (subset of ``recon``, ``seg``, ``cls``)."""

    def __init__(self, config: ModelConfig, tasks: Sequence[str] | None = None):
        super().__init__()
        if len(config.features) != len(DOWNSAMPLE):
            raise CovidMTLError(f"config {config.name!r}: the multi-task net needs {len(DOWNSAMPLE)} widths")
        if config.image_size % 16:
            raise CovidMTLError(f"config {config.name!r}: image size {config.image_size} is not a multiple of 16")
        self.config = config
        self.tasks = parse_tasks(tasks, config)
        f = config.features
        self.encoder = Encoder(config.in_channels, f, config.norm)
        self.recon_decoder = Decoder(f, config.in_channels, config.norm) if "recon" in self.tasks else None
        self.seg_decoder = None
        if "seg" in self.tasks:
            self.seg_decoder = Decoder(f, 1, config.norm)
            # lesions cover a few % of a slice: start at that prior (sigmoid(-3) = 0.05) instead of 0.5
            # everywhere, which gives the soft Dice a useful gradient from the first step
            nn.init.constant_(self.seg_decoder.head.bias, SEG_PRIOR_LOGIT)
        self.classifier = None
        if "cls" in self.tasks:
            map_size = config.image_size // 2 ** sum(DOWNSAMPLE)
            self.classifier = Classifier(f[-1], config.cls_conv or f[-1], map_size, config.cls_dense,
                                         config.num_classes, config.dropout)

    def forward(self, x: torch.Tensor, heads: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        heads = check_heads(self, heads)
        skips = self.encoder(x)
        out: dict[str, torch.Tensor] = {}
        if "recon" in heads:
            out["recon"] = self.recon_decoder(skips)
        if "seg" in heads:
            out["seg_logits"] = self.seg_decoder(skips)
        if "cls" in heads:
            if x.shape[-2:] != (self.config.image_size,) * 2:
                raise CovidMTLError(f"classifier expects {self.config.image_size}^2 slices, got {tuple(x.shape)}")
            out["cls_logits"] = self.classifier(skips[-1])
        return out


def check_heads(model: nn.Module, heads: Sequence[str] | None) -> tuple[str, ...]:
    """``heads`` (None: all the model has) checked against the heads the model built."""
    if heads is None:
        return tuple(model.tasks)
    missing = [h for h in heads if h not in model.tasks]
    if missing:
        raise CovidMTLError(f"model has no {', '.join(missing)} head (tasks: {', '.join(model.tasks)})")
    return tuple(h for h in TASKS if h in heads)


def probabilities(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sigmoid of the logits: ``seg`` (lesion probability map) and ``cls`` (P per class), where present."""
    probs = {}
    if "seg_logits" in outputs:
        probs["seg"] = torch.sigmoid(outputs["seg_logits"])
    if "cls_logits" in outputs:
        probs["cls"] = torch.sigmoid(outputs["cls_logits"])
    return probs
