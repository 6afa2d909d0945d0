"""The one configuration of the covid_mtl model in this app: where models live and the ``--conf`` knobs.

``--conf`` keys (all optional):
- ``model_config``: ``lite`` (default; CPU-friendly) or ``paper`` (Amyar et al. widths) for a model trained
  from scratch; a checkpoint always carries its own configuration.
- ``device``: ``auto`` (default: CUDA when present), ``cpu`` or ``cuda``.
- ``preload``: ``true`` (default) loads the model and runs a warm-up slice when the server starts.
- ``use_pretrained``: ``true`` (default) serves the packaged demo model until a trained one is published.
- ``replay_manifest``: a manifest (``covid-mtl prepare-data``) of the set the served model learnt from; each
  round of training replays a seeded draw of its training rows beside the corrections, so the model does not
  forget it (README, "The annotation loop"). Checked when the server starts.
- ``max_upload_mb``, ``max_image_mb``, ``allow_unsupported_monailabel``: the server's settings (``lib/settings.py``).
"""
from __future__ import annotations

import os
from typing import Optional

from lib.infers.covid_mtl import CovidMTLInfer
from lib.monailabel_compat import in_task_subprocess
from lib.trainers.covid_mtl import CovidMTLTrain

from covid_mtl.errors import CovidMTLError
from covid_mtl.nets.packaged import packaged_model_path
from covid_mtl.train.engine import TrainConfig, replay_records
from monailabel.interfaces.config import TaskConfig
from monailabel.utils.others.generic import strtobool

PUBLISHED_NAME = "covid_mtl.pt"


def replay_manifest(path: Optional[str]) -> Optional[str]:
    """The admin's replay set, refused at start-up (not at the first round) when it cannot be trained on."""
    if not path:
        return None
    try:
        replay_records(TrainConfig(replay=path))
    except CovidMTLError as exc:
        raise CovidMTLError(f"--conf replay_manifest: {exc}") from exc
    return os.path.abspath(path)


class CovidMTLConfig(TaskConfig):
    def init(self, name: str, model_dir: str, conf: dict, planner, **kwargs) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        os.makedirs(model_dir, exist_ok=True)
        self.model_config = conf.get("model_config", "lite")
        self.device = conf.get("device", "auto")
        # MONAI Label re-creates the whole app in a subprocess for training and scoring; only the server
        # process answers clicks, so only it pays for loading and warming up the model at start.
        self.preload = strtobool(conf.get("preload", "true")) and not in_task_subprocess()
        self.use_pretrained = strtobool(conf.get("use_pretrained", "true"))
        # Published by training (atomically) and preferred by infer; the packaged model is the fallback.
        self.published_path = os.path.join(model_dir, PUBLISHED_NAME)
        self.pretrained_path = packaged_model_path() if self.use_pretrained else None
        self.replay = replay_manifest(conf.get("replay_manifest"))
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
            replay=self.replay,
        )
