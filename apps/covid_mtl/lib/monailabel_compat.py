"""Every place this app reaches into MONAI Label's internals, in one room.

The rest of the app uses MONAI Label's public hooks (``init_*``, ``pre_process``, ``partition_datalist``, the
engine hooks of ``BasicTrainTask``, the ``Datastore`` interface) and the names this module gives. What is internal,
and so may change in any MONAI Label release:

- endpoint functions (``monailabel.endpoints.*.run_inference``, ``add_image``, ...) replaced by wrappers that check
  a request before MONAI Label touches it (``replace_endpoint_functions``);
- the FastAPI app's middleware stack, rebuilt with the guard and exception handlers after MONAI Label built it, and
  its CORS middleware narrowed (``install_http_layer``);
- the ``jwt`` module inside MONAI Label's auth, pinned to the server's algorithms (``pin_jwt_algorithms``);
- MONAI Label's error texts and exception types, turned into this app's typed errors (``translate``), the refused
  password its ``/auth/token`` lets escape included;
- the address ``start_server`` binds (``served_host``, from its command line) and whether its auth is on;
- the DICOMweb proxy's forwarding function and the bundled OHIF's file lookup, replaced through
  ``replace_endpoint_functions`` (``lib.endpoint_hooks``);
- ``LocalDatastore``'s private state and hooks (``LocalDatastoreBase``) and its pydantic datastore model;
- ``BasicTrainTask``'s private engine factories and checkpoint loader (``EngineTrainTask``);
- the app's task tables and the task subprocess's entry point (``task_names``, ``in_task_subprocess``).

:func:`check_version` runs when the app starts and refuses a MONAI Label version these were not checked against.
"""
from __future__ import annotations

import logging
import os
import sys
from http import HTTPStatus
from typing import Any, Callable, Iterable, Optional, Tuple

from lib.errors import AppError, BadRequest, LoginRefused, NoImageGiven, NotFound

import monailabel
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel
from monailabel.tasks.train.basic_train import BasicTrainTask, Context

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_VERSIONS", "check_version", "UnsupportedMONAILabel", "server_fastapi_app", "app_instance",
           "in_task_subprocess", "MONAILabelAppCompat", "replace_endpoint_functions", "install_http_layer",
           "pin_jwt_algorithms", "translate", "served_host", "auth_enabled",
           "exception_types", "LocalDatastoreBase", "DataModel", "ImageLabelModel",
           "LocalDatastoreModel", "EngineTrainTask", "Context"]

SUPPORTED_VERSIONS: Tuple[str, ...] = ("0.8.5",)
"""MONAI Label releases this module was written and tested against."""

WHAT_BREAKS = (
    "request checks on infer/upload/label endpoints (the 'final' tag refusal, size limits, named errors)",
    "the upload size limit, cross-site and DNS-rebinding guards and JSON error statuses",
    "the datastore's single writer (labels could be lost when a task process writes back a stale copy)",
    "training on the core's engines and the atomic model publish",
)


class UnsupportedMONAILabel(RuntimeError):
    pass


def check_version(version: Optional[str] = None, allow: bool = False) -> None:
    """Refuse to start on a MONAI Label version not in :data:`SUPPORTED_VERSIONS` (``allow``: warn instead)."""
    version = version or monailabel.__version__
    if version.split("+")[0] in SUPPORTED_VERSIONS:
        return
    message = (f"covid-mtl supports MONAI Label {', '.join(SUPPORTED_VERSIONS)}, not {version}: this app reaches into "
               f"MONAI Label internals (apps/covid_mtl/lib/monailabel_compat.py) and on another version these may "
               f"silently stop working: " + "; ".join(WHAT_BREAKS) + ". Install a supported version "
               f"(pip install 'monailabel=={SUPPORTED_VERSIONS[-1]}'), or start with --conf "
               f"allow_unsupported_monailabel true to run anyway at your own risk.")
    if not allow:
        raise UnsupportedMONAILabel(message)
    logger.warning(message)


# ----- the app and its tasks ------------------------------------------------------------------------------------------
def server_fastapi_app():
    """MONAI Label's FastAPI app when this process is the HTTP server; None in a task subprocess."""
    module = sys.modules.get("monailabel.app")
    return getattr(module, "app", None)


def ohif_folder() -> str:
    """Where MONAI Label keeps the OHIF build it serves at ``/ohif/``."""
    import monailabel.endpoints.ohif as ohif

    return os.path.join(os.path.dirname(os.path.realpath(ohif.__file__)), "static", "ohif")


def app_instance():
    from monailabel.interfaces.utils.app import app_instance as instance

    return instance()


def in_task_subprocess() -> bool:
    """MONAI Label re-creates the app in a subprocess (``python -m monailabel.interfaces.utils.app``) for
    training, scoring and batch infer."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") == "monailabel.interfaces.utils.app"


class MONAILabelAppCompat:
    """Mixed in before ``MONAILabelApp`` (MONAI Label finds an app by a class whose direct bases name
    ``MONAILabelApp``): its task tables readable (``task_names``), its private session loader routed to
    ``load_sessions``."""

    def task_names(self, kind: str) -> list[str]:
        """Names of the app's ``infers``, ``trainers`` or ``strategies``."""
        return sorted(getattr(self, {"infers": "_infers", "trainers": "_trainers", "strategies": "_strategies"}[kind]))

    def load_sessions(self, load: bool = False):
        return super()._load_sessions(load)

    def _load_sessions(self, load=False):
        return self.load_sessions(load)


# ----- the HTTP layer -------------------------------------------------------------------------------------------------
def replace_endpoint_functions(hooks: Iterable[Tuple[str, str, Callable[[Callable], Callable]]]) -> None:
    """``(module, function, hook)``: each ``monailabel.endpoints.<module>.<function>`` becomes ``hook(original)``.

    MONAI Label's routes call these module-level functions by name at call time, so replacing the module attribute
    puts the wrapper on the route. Idempotent: the app may be created more than once in one process."""
    import importlib

    for module_name, name, hook in hooks:
        module = importlib.import_module(f"monailabel.endpoints.{module_name}")
        current = getattr(module, name)
        if not getattr(current, "_covid_mtl_hook", False):
            wrapped = hook(current)
            wrapped._covid_mtl_hook = True
            setattr(module, name, wrapped)


def install_http_layer(fastapi_app, middleware, handlers: dict, allowed_origins: list[str],
                       **middleware_kwargs) -> bool:
    """Add ``middleware`` and exception ``handlers`` ({exception type: handler}) to MONAI Label's running FastAPI
    app and allow only ``allowed_origins`` cross-site; False when already done.

    MONAI Label builds our app inside its lifespan, after Starlette has built the middleware stack (it does so on
    the first ASGI call, which is the lifespan) and refuses changes to a built stack; dropping the built stack
    makes the next request rebuild it with ours."""
    if getattr(fastapi_app.state, "covid_mtl_guard", False):
        return False
    fastapi_app.middleware_stack = None
    fastapi_app.add_middleware(middleware, **middleware_kwargs)
    for kind, handler in handlers.items():
        fastapi_app.add_exception_handler(kind, handler)
    _restrict_cors(fastapi_app, allowed_origins)
    fastapi_app.state.covid_mtl_guard = True
    return True


def configured_origins() -> list[str]:
    from monailabel.config import settings

    return [str(o) for o in settings.MONAI_LABEL_CORS_ORIGINS or []]


def _restrict_cors(fastapi_app, origins: list[str]) -> None:
    """MONAI Label allows every origin when none is configured; allow only the configured ones."""
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    for i, middleware in enumerate(fastapi_app.user_middleware):
        allows_all = "*" in middleware.kwargs.get("allow_origins", [])
        if middleware.cls is CORSMiddleware and allows_all and "*" not in origins:
            fastapi_app.user_middleware[i] = Middleware(
                CORSMiddleware, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"]
            )


class _JWTWithAlgorithms:
    """Stands in for the ``jwt`` module inside monailabel's auth: same decode, with the algorithms pinned by the
    server (never taken from the token, so ``alg: none`` or HS256-with-the-public-key tokens are refused)."""

    def __init__(self, jwt_module, algorithms: list[str]) -> None:
        self._jwt, self.algorithms = jwt_module, algorithms

    def decode(self, token: str, key: Any, options: Optional[dict] = None, **kwargs):
        kwargs.setdefault("algorithms", self.algorithms)
        return self._jwt.decode(token, key, options=options, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._jwt, name)


def pin_jwt_algorithms(algorithms: list[str]) -> None:
    """MONAI Label calls ``jwt.decode`` without ``algorithms``, which PyJWT 2 refuses: with auth on, every token,
    valid or not, was answered 401."""
    from monailabel.endpoints.user import auth

    if not isinstance(auth.jwt, _JWTWithAlgorithms):
        auth.jwt = _JWTWithAlgorithms(auth.jwt, algorithms)


# Client mistakes that MONAI Label's endpoints themselves raise as HTTP 500, by their text.
_CLIENT_ERRORS_SENT_AS_500 = {"Neither Image nor File not Session ID input is provided": NoImageGiven}


def exception_types() -> tuple:
    """MONAI Label's own exception base, for the server's exception handlers."""
    from monailabel.interfaces.exception import MONAILabelException

    return (MONAILabelException,)


def translate(exc: BaseException) -> Optional[AppError]:
    """``exc`` raised inside MONAI Label as this app's typed error, or None when it is not a client error."""
    from fastapi import HTTPException
    from monailabel.interfaces.exception import (ImageNotFoundException, LabelNotFoundException, MONAILabelError,
                                                 MONAILabelException)

    if _is_refused_login(exc):
        return LoginRefused()
    if isinstance(exc, HTTPException) and exc.detail in _CLIENT_ERRORS_SENT_AS_500:
        return _CLIENT_ERRORS_SENT_AS_500[exc.detail]()
    if isinstance(exc, (ImageNotFoundException, LabelNotFoundException)):
        return NotFound(getattr(exc, "msg", str(exc)))
    if isinstance(exc, MONAILabelException) and getattr(exc, "error", None) == MONAILabelError.INVALID_INPUT:
        return BadRequest(getattr(exc, "msg", str(exc)))
    return None


def _is_refused_login(exc: BaseException) -> bool:
    """MONAI Label's ``POST /auth/token`` lets the identity provider's refusal of a password escape as
    ``requests.HTTPError`` (500)."""
    import requests

    response = getattr(exc, "response", None)
    refused = (HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED)  # OAuth2's invalid_grant answers, as Keycloak sends
    if not isinstance(exc, requests.HTTPError) or response is None or response.status_code not in refused:
        return False
    from monailabel.endpoints.user.auth import token_uri

    try:
        return response.url.split("?")[0] == token_uri()
    except Exception:  # the realm's configuration unreadable: not a login refusal we can name
        return False


def served_host(argv: Optional[list[str]] = None) -> str:
    """The address the server listens on: ``start_server --host`` (``-i``), MONAI Label's default ``0.0.0.0``."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-i", "--host", default="0.0.0.0")
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.host


def auth_enabled() -> bool:
    from monailabel.config import settings

    return bool(settings.MONAI_LABEL_AUTH_ENABLE)


def has_role(authorization: Optional[str], role: str) -> bool:
    """Whether the bearer token in ``authorization`` carries MONAI Label's ``role`` (``admin``, ``reviewer``,
    ``annotator``, ``user``: the role names as configured, ``MONAI_LABEL_AUTH_ROLE_*``); always True with
    authentication off, as MONAI Label's ``RBAC``. For a route whose MONAI Label dependency checks a weaker role
    than what the request does (the DICOMweb proxy checks ``user``; a SEG it stores is a correction)."""
    from monailabel.config import settings
    from monailabel.endpoints.user.auth import from_token

    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    try:
        user = from_token(token.strip())
    except Exception:  # an invalid or expired token holds no role
        return False
    wanted = getattr(settings, f"MONAI_LABEL_AUTH_ROLE_{role.upper()}", role)
    return wanted in (user.roles or [])


# ----- the local datastore --------------------------------------------------------------------------------------------
class LocalDatastoreBase(LocalDatastore):
    """``LocalDatastore`` with its private state under public names, and its private hooks routed to methods a
    subclass overrides: ``write_back`` (MONAI Label writes its in-memory copy), ``reconcile_files`` (files added or
    removed by hand), ``refresh`` (re-read the file) and ``split_name`` (file name -> id, suffix)."""

    @staticmethod
    def files(root: str, config_name: Optional[str] = None) -> Tuple[str, str]:
        """(lock file, datastore JSON) LocalDatastore uses in ``root``, known before it is created."""
        return os.path.join(root, ".lock"), os.path.join(root, config_name or "datastore_v2.json")

    @property
    def root(self) -> str:
        return self._datastore_path

    @property
    def config_path(self) -> str:
        return self._datastore_config_path

    @property
    def lock_path(self) -> str:
        return self._lock_file

    @property
    def extensions(self) -> list[str]:
        return list(self._extensions)

    @property
    def model(self) -> LocalDatastoreModel:
        return self._datastore

    def adopt(self, model: LocalDatastoreModel, config_mtime: Optional[float]) -> None:
        """``model`` becomes the in-memory copy; ``config_mtime`` keeps MONAI Label's file watcher from reloading
        what we just wrote."""
        self._datastore = model
        if config_mtime is not None:
            self._config_ts = config_mtime

    def file_name(self, image_id: str, ext: str) -> str:
        return self._filename(image_id, ext)

    def write_back(self) -> None:
        super()._update_datastore_file()

    def reconcile_files(self) -> None:
        super()._reconcile_datastore()

    def refresh(self, throw_exception: bool = False) -> None:
        super()._init_from_datastore_file(throw_exception)

    def split_name(self, file: str) -> Tuple[str, str]:
        return super()._to_id(file)

    # MONAI Label's private hooks -> the names above
    def _update_datastore_file(self, lock: bool = True) -> None:
        self.write_back()

    def _reconcile_datastore(self) -> None:
        self.reconcile_files()

    def _init_from_datastore_file(self, throw_exception: bool = False) -> None:
        self.refresh(throw_exception)

    def _to_id(self, file: str) -> Tuple[str, str]:
        return self.split_name(file)


def datastore_root(datastore) -> str:
    """The studies folder of a local datastore ("" for others)."""
    return getattr(datastore, "root", None) or getattr(datastore, "_datastore_path", "") or ""


# ----- training -------------------------------------------------------------------------------------------------------
class EngineTrainTask(BasicTrainTask):
    """``BasicTrainTask`` whose engines come from ``create_trainer`` / ``create_evaluator`` (the core's one engine
    builder) and whose weights come from ``network()``, not from MONAI Label's checkpoint loader."""

    @property
    def amp_enabled(self) -> bool:
        return bool(self._amp)

    @property
    def validation_interval(self) -> int:
        return int(self._val_interval)

    def create_trainer(self, context: Context):
        raise NotImplementedError

    def create_evaluator(self, context: Context):
        raise NotImplementedError

    def _create_trainer(self, context: Context):
        return self.create_trainer(context)

    def _create_evaluator(self, context: Context):
        return self.create_evaluator(context)

    def _load_checkpoint(self, context: Context, train_handlers) -> None:
        pass

    # abstract in BasicTrainTask, used only by its own engine factories (replaced above)
    def train_pre_transforms(self, context: Context):
        return None

    def train_post_transforms(self, context: Context):
        return None

    def val_inferer(self, context: Context):
        return None

