"""Saving and loading trained models.

A checkpoint is a plain dict that ``torch.load(weights_only=True)`` accepts (tensors and plain python types only,
no pickled classes): ``format`` version, ``config`` (the full ``ModelConfig`` as a dict, so the network is rebuilt
exactly), ``tasks``, ``classes`` (output order), ``state_dict``, ``versions`` (covid-mtl, torch, monai) and
``meta`` (training details the caller adds: epoch, metrics, settings; ``preprocessing``, the record of
``covid_mtl.nets.preprocessing``, is always written: the model's own, or the defaults for a new one). Writes are atomic: a temporary file in the
same folder is written, flushed, fsynced and renamed over the target, so a crash never leaves half a model.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig, parse_tasks
from .factory import build_model
from .preprocessing import Preprocessing, of_model
from ..atomic import atomic_write
from ..errors import CovidMTLError, ModelFileError
from ..image import CLASSES

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: ModelConfig
    tasks: tuple[str, ...]
    classes: tuple[str, ...]
    state_dict: dict[str, torch.Tensor]
    versions: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Versions of what produced a checkpoint (for provenance; loading does not depend on them)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"format": str(FORMAT_VERSION), "torch": str(torch.__version__)}  # TorchVersion would need an unsafe global
    for package in ("covid-mtl", "monai"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` would not read back (class instances, numpy arrays)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise CovidMTLError(f"checkpoint {where}: key {key!r} is not a str/int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or type(value) in (str, int, float, bool) or isinstance(value, torch.Tensor)):
        raise CovidMTLError(f"checkpoint {where}: {type(value).__name__} is not a plain python type or tensor")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``model`` (which carries ``config`` and ``tasks``) and ``meta`` (plain python types:
    dict/list/str/int/float/bool/None, tensors) to ``path``."""
    _check_plain(meta or {}, "meta")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # clone to CPU so the file loads anywhere and the live weights are not aliased
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "tasks": list(model.tasks),
        "classes": list(CLASSES),
        "state_dict": state,
        "versions": versions(),
        "meta": {"saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "preprocessing": of_model(model).as_meta(), **(meta or {})},
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))
    return path


def checkpoint_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a checkpoint file, read in blocks: what model versions and round bases are named by."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refuses anything but tensors and plain types
        raise ModelFileError(f"{path}: not a readable covid-mtl checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise ModelFileError(f"{path}: not a covid-mtl checkpoint (no config/state_dict)")
    if payload.get("format", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: checkpoint format {payload['format']} is newer than this covid-mtl "
                            f"({FORMAT_VERSION})")
    config = ModelConfig.from_dict(payload["config"])
    classes = tuple(payload.get("classes", CLASSES))
    if classes != CLASSES:
        raise ModelFileError(f"{path}: checkpoint classes {classes} differ from {CLASSES}")
    return Checkpoint(config=config, tasks=parse_tasks(payload["tasks"], config), classes=classes,
                      state_dict=payload["state_dict"], versions=dict(payload.get("versions", {})),
                      meta=dict(payload.get("meta", {})))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Rebuild the network a checkpoint describes, load its weights, move it to ``device``, eval mode."""

    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint.config, checkpoint.tasks)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit config {checkpoint.config.name!r} ({exc})") from exc
    # the preprocessing travels with the network, so fine-tuning and saving again keep the record
    model.preprocessing = Preprocessing.from_meta(checkpoint.meta, checkpoint.config.image_size)
    return model.to(device).eval(), checkpoint
