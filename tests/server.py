"""Start a real MONAI Label server with the covid_mtl app on a free loopback port (one per test module).

The app folder is copied so that models and logs a test produces never land in the repository.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import requests

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "covid_mtl"
START_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    app_dir: Path
    studies: Path | str  # a folder, or a DICOMweb URL (tests/pacs_site.py)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def app_module(name: str):
    """The app's module ``name`` (e.g. ``lib.trainers.covid_mtl``), imported from the app's own import root as
    MONAI Label imports it, without leaving that root on ``sys.path``."""
    import importlib

    sys.path.insert(0, str(APP))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(APP))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_app(dest: Path) -> Path:
    shutil.copytree(APP, dest, ignore=shutil.ignore_patterns("model", "logs", "__pycache__", "bin"))
    return dest


def start(studies: Path | str, work: Path, conf: dict | None = None, env: dict | None = None,
          app_dir: Path | None = None, headers: dict | None = None) -> Server:
    """``app_dir``: reuse an app folder (and its published model) from an earlier server instead of a fresh copy.
    ``headers``: sent with the readiness check (e.g. a bearer token when MONAI Label's auth is on)."""
    app_dir = Path(app_dir) if app_dir else copy_app(work / "app")
    port = free_port()
    log_path = work / "server.log"
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port)]
    for key, value in (conf or {}).items():
        cmd += ["--conf", key, str(value)]
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    full_env.update(env or {})
    log = open(log_path, "w")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, log_path, app_dir, studies)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if requests.get(f"{server.url}/info/", headers=headers, timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(server)
    raise RuntimeError(f"server did not answer /info/ in {START_TIMEOUT_S} s:\n{server.log()[-4000:]}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


@contextlib.contextmanager
def running_server(studies: Path | str, work: Path, conf: dict | None = None, env: dict | None = None,
                   app_dir: Path | None = None, headers: dict | None = None) -> Iterator[Server]:
    """``studies`` is served as is (pass a copy); ``work`` holds the app copy and the server log."""
    server = start(studies, work, conf, env, app_dir=app_dir, headers=headers)
    try:
        yield server
    finally:
        stop(server)


def copy_studies(dest: Path) -> Path:
    """A private copy of sample_data/ for a server to write into."""
    shutil.copytree(ROOT / "sample_data", dest)
    return dest


def quiet_env(work: Path, **extra: str) -> dict[str, str]:
    """Server environment for tests: no scoring run at start-up (tests that do not test scoring should not wait for
    it or race with it), sessions kept under ``work``, then ``extra``."""
    return {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "MONAI_LABEL_SESSION_PATH": str(work / "sessions"), **extra}


def module_server(tmp_path_factory, name: str) -> Iterator[Server]:
    """Body of a module-scoped fixture: one preloaded, quiet server on a copy of the sample studies."""
    work = tmp_path_factory.mktemp(name)
    with running_server(copy_studies(work / "studies"), work, conf={"preload": "true"}, env=quiet_env(work)) as srv:
        yield srv


class Site:
    """The folders that outlive one server (studies, app, sessions), and the server currently running on them:
    for tests that restart or kill the server and check what survived."""

    def __init__(self, work: Path, env: dict | None = None) -> None:
        self.work, self.studies, self.app_dir = work, copy_studies(work / "studies"), copy_app(work / "app")
        self.env = quiet_env(work, **(env or {}))
        self.server: Server | None = None
        self.runs = 0

    def start(self) -> Server:
        self.runs += 1
        run_dir = self.work / f"run{self.runs}"
        run_dir.mkdir()
        self.server = start(self.studies, run_dir, conf={"preload": "true"}, env=self.env, app_dir=self.app_dir)
        return self.server

    def restart(self) -> Server:
        stop(self.server)
        return self.start()

    def kill(self) -> None:
        """kill -9 the whole process group (server and any training subprocess): no cleanup code runs."""
        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=30)


def box_label(studies: Path, image: str, box: tuple[slice, slice, slice]) -> bytes:
    """A gzipped 0/1 NIfTI label on ``image``'s grid with ones in ``box`` (x, y, z index ranges)."""
    import gzip

    import nibabel as nib
    import numpy as np

    ref = nib.load(studies / f"{image}.nii.gz")
    data = np.zeros(ref.shape, np.uint8)
    data[box] = 1
    return gzip.compress(nib.Nifti1Image(data, ref.affine).to_bytes(), compresslevel=1, mtime=0)
