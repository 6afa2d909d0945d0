"""The one configuration of the covid_mtl model in this app: where models live and the ``--conf`` knobs.

``--conf`` keys (all optional):
- ``model_config``: ``lite`` (default; CPU-friendly) or ``paper`` (Amyar et al. widths) for a model trained
  from scratch; a checkpoint always carries its own configuration.
- ``device``: ``auto`` (default: CUDA when present), ``cpu`` or ``cuda``.
- ``preload``: ``true`` (default) loads the model and runs a warm-up slice when the server starts.
- ``use_pretrained``: ``true`` (default) serves the packaged demo model until a trained one is published.
- ``max_upload_mb``: refuse uploaded images or labels larger than this (default 2048).
- ``max_image_mb``: memory one image may take while it is read, checked from its header before anything is
  allocated (default 2048; ``covid_mtl.io.checks``).
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from lib.infers.covid_mtl import CovidMTLInfer
from lib.trainers.covid_mtl import CovidMTLTrain

from covid_mtl.nets.packaged import packaged_model_path
from monailabel.interfaces.config import TaskConfig
from monailabel.utils.others.generic import strtobool

PUBLISHED_NAME = "covid_mtl.pt"


def _in_task_subprocess() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", "") == "monailabel.interfaces.utils.app"


class CovidMTLConfig(TaskConfig):
    def init(self, name: str, model_dir: str, conf: dict, planner, **kwargs) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        os.makedirs(model_dir, exist_ok=True)
        self.model_config = conf.get("model_config", "lite")
        self.device = conf.get("device", "auto")
        # MONAI Label re-creates the whole app in a subprocess for training and scoring; only the server
        # process answers clicks, so only it pays for loading and warming up the model at start.
        self.preload = strtobool(conf.get("preload", "true")) and not _in_task_subprocess()
        self.use_pretrained = strtobool(conf.get("use_pretrained", "true"))
        # Published by training (atomically) and preferred by infer; the packaged model is the fallback.
        self.published_path = os.path.join(model_dir, PUBLISHED_NAME)
        self.pretrained_path = packaged_model_path() if self.use_pretrained else None
        self._infer: Optional[CovidMTLInfer] = None

    def model_paths(self) -> list[str]:
        return [p for p in (self.published_path, self.pretrained_path) if p]

    def infer(self) -> CovidMTLInfer:
        if self._infer is None:  # one predictor in memory, shared by infer and scoring
            self._infer = CovidMTLInfer(self.model_paths(), device=self.device, preload=self.preload)
        return self._infer

    def trainer(self) -> Optional[CovidMTLTrain]:
        return CovidMTLTrain(
            model_dir=self.model_dir,
            published_path=self.published_path,
            init_paths=self.model_paths(),
            model_config=self.model_config,
            device=self.device,
        )
