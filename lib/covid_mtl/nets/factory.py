"""The one way to build a network by configuration: ``build_model(config, tasks)``.

Kept apart from ``network.py`` so the baselines can reuse the multi-task network's helpers without an import
cycle: factory -> network, baselines; baselines -> network.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import CovidMTLError
from .baselines import CNNClassifier, UNetBaseline
from .config import ModelConfig, parse_tasks
from .network import MultiTaskNet


def build_model(config: ModelConfig, tasks: Sequence[str] | str | None = None) -> nn.Module:
    """The network for ``config.arch`` with the heads for ``tasks`` (None: the config's default tasks)."""
    builders = {"mtl": MultiTaskNet, "unet": UNetBaseline, "cnn": CNNClassifier}
    if config.arch not in builders:
        raise CovidMTLError(f"config {config.name!r}: unknown arch {config.arch!r}")
    return builders[config.arch](config, parse_tasks(tasks, config))
