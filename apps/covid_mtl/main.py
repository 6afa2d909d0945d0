"""MONAI Label app for covid-mtl: classify + segment in one infer task, multi-task training, active learning.

Start it with ``monailabel start_server --app apps/covid_mtl --studies DIR [--conf key value ...]``.
Configuration keys (``--conf``): see ``lib/configs/covid_mtl.py``.
"""
from __future__ import annotations

import logging
import os
from typing import Dict

from lib import datastore_pacs, dicomweb_proxy, endpoint_hooks, http_guard, monailabel_compat
from lib.activelearning.random_order import RandomOrder
from lib.activelearning.uncertainty import UncertaintyStrategy
from lib.configs.covid_mtl import CovidMTLConfig
from lib.datastore import ValidatingDatastore
from lib.errors import UnknownTask
from lib.infer_request import check_infer_image
from lib.infers.covid_mtl import LESION_LABEL
from lib.params import refuse_final_tag
from lib.scoring.uncertainty import UncertaintyScoring
from lib.sessions import ValidatingSessions
from lib.settings import AppSettings

from covid_mtl.io.checks import set_max_image_mb
import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.config import settings

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


class CovidMTLApp(monailabel_compat.MONAILabelAppCompat, MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        _ensure_pythonpath(app_dir)
        # Read once, here, and handed to what uses them (task subprocesses get the same conf and environment).
        self.settings = AppSettings.read(conf)
        monailabel_compat.check_version(allow=self.settings.allow_unsupported_monailabel)
        set_max_image_mb(self.settings.max_image_mb)
        fastapi_app = monailabel_compat.server_fastapi_app()
        if fastapi_app is not None:  # the server process; task subprocesses have no HTTP app
            http_guard.install(fastapi_app, self.settings)
            endpoint_hooks.install()
            exposed = dicomweb_proxy.exposure_warning(studies, monailabel_compat.auth_enabled(),
                                                      monailabel_compat.served_host())
            if exposed:
                logger.warning(f"covid-mtl: {exposed}")
        self.model_dir = os.path.join(app_dir, "model")
        self.task_config = CovidMTLConfig()
        self.task_config.init("covid_mtl", self.model_dir, conf, None)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="covid-mtl",
            description="COVID-19 classification (the classes its model was trained on) and COVID lesion "
            "segmentation from chest CT (multi-task network after Amyar et al. 2020)",
            version=monailabel.__version__,
            labels=[LESION_LABEL],
        )
        self._connect_result_store()

    def _connect_result_store(self) -> None:
        """``--conf store_results true``: each infer on a PACS series stores its SEG and SR there."""
        if not self.settings.store_results:
            return
        datastore = self.datastore()
        if not isinstance(datastore, datastore_pacs.PacsDatastore):
            logger.warning("covid-mtl: --conf store_results needs a PACS (--studies http://.../dicom-web); ignored")
            return
        self.task_config.infer().store_results = datastore.store_results  # the one infer task (config caches it)

    def infer(self, request, datastore=None):
        """Refuse unknown models and ids, client-chosen server paths and the ``final`` tag before MONAI Label
        resolves them. Batch infer (in its task subprocess) calls this for every image too."""
        model = request.get("model")
        infers = self.task_names("infers")
        if model not in infers:
            raise UnknownTask("model", model, infers)
        refuse_final_tag(request)  # MONAI Label saves the prediction under request["label_tag"]
        image_id = check_infer_image(request, datastore or self.datastore(), self.sessions())
        if image_id is not None:
            request = {**request, "image_id": image_id}  # MONAI Label replaces "image" by the file's path
        return super().infer(request, datastore)

    def load_sessions(self, load: bool = False):
        if not load:
            return None
        return ValidatingSessions(settings.MONAI_LABEL_SESSION_PATH, settings.MONAI_LABEL_SESSION_EXPIRY)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        strategies = self.task_names("strategies")
        if strategy not in strategies:
            raise UnknownTask("strategy", strategy, strategies)
        return super().next_sample(request)

    def bundle_path(self, model):
        """MONAI Label asks this (in the server process) before starting a train/batch-infer task: the one place
        an unknown model name can be refused (not found) instead of a background task that fails later."""
        trainers = self.task_names("trainers")
        if model is not None and model not in trainers and model not in self.task_names("infers"):
            raise UnknownTask("model", model, trainers)
        return super().bundle_path(model)

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            # not MONAI Label's DICOMweb datastore: it downloads dcmqi from the internet at start-up
            return datastore_pacs.from_monailabel_settings(self.studies, settings, self.settings)
        return ValidatingDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            settings=self.settings,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return {"covid_mtl": self.task_config.infer()}

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainer = self.task_config.trainer()
        return {"covid_mtl": trainer} if trainer else {}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"uncertainty": UncertaintyStrategy(self.task_config.infer()), "random": RandomOrder()}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        return {"covid_mtl_uncertainty": UncertaintyScoring(self.task_config.infer())}
