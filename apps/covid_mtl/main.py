"""MONAI Label app for covid-mtl: classify + segment in one infer task, multi-task training, active learning.

Start it with ``monailabel start_server --app apps/covid_mtl --studies DIR [--conf key value ...]``.
Configuration keys (``--conf``): see ``lib/configs/covid_mtl.py``.
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Dict

from lib.activelearning.uncertainty import UncertaintyStrategy
from lib.configs.covid_mtl import CovidMTLConfig
from fastapi import HTTPException
from lib.datastore import ValidatingDatastore, check_id
from lib.scoring.uncertainty import UncertaintyScoring

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.config import settings
from monailabel.tasks.activelearning.random import Random

logger = logging.getLogger(__name__)


def _ensure_pythonpath(app_dir: str) -> None:
    """MONAI Label's training subprocess reads os.environ["PYTHONPATH"]; unset, it dies and the task stays
    SUBMITTED forever. Make sure it is set and that it lets the subprocess import this app and covid_mtl."""
    import covid_mtl

    core_root = os.path.dirname(os.path.dirname(os.path.abspath(covid_mtl.__file__)))
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for needed in (app_dir, core_root):
        if needed not in parts:
            parts.append(needed)
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


class CovidMTLApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        _ensure_pythonpath(app_dir)
        self.model_dir = os.path.join(app_dir, "model")
        self.task_config = CovidMTLConfig()
        self.task_config.init("covid_mtl", self.model_dir, conf, None)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="covid-mtl",
            description="COVID-19 / normal / other-infection classification and COVID lesion segmentation "
            "from chest CT (multi-task network after Amyar et al. 2020)",
            version=monailabel.__version__,
            labels=["covid_lesion"],
        )

    def infer(self, request, datastore=None):
        """Refuse unknown ids and client-chosen server paths before MONAI Label resolves them."""
        image = request.get("image")
        if isinstance(image, str) and not request.get("session"):
            if os.path.isabs(image) or os.sep in image:
                real = os.path.realpath(image)
                # The infer endpoint itself passes uploads as files in the temp folder; any other path came
                # from the client and would let it read arbitrary server files.
                if not real.startswith(os.path.realpath(tempfile.gettempdir()) + os.sep) or not os.path.isfile(real):
                    raise HTTPException(status_code=400, detail=f"image {image!r}: not a datastore image id")
            else:
                check_id(image)
                if image not in (datastore or self.datastore()).list_images():
                    raise HTTPException(status_code=404, detail=f"image {image!r} not found in the datastore")
        return super().infer(request, datastore)

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return ValidatingDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return {"covid_mtl": self.task_config.infer()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainer = self.task_config.trainer()
        return {"covid_mtl": trainer} if trainer else {}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"uncertainty": UncertaintyStrategy(self.task_config.infer()), "random": Random()}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        return {"covid_mtl_uncertainty": UncertaintyScoring(self.task_config.infer())}
