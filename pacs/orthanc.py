"""A real Orthanc PACS on loopback, for ``make pacs`` and for the tests: the repository's ``pacs/orthanc.json``
with the port, storage folder and user filled in, started as a child process, loaded over its REST API.

The password is made once per storage folder (``credentials.json``, readable by its owner only) rather than kept
in the repository; ``monailabel.env`` next to it holds the variables MONAI Label reads it from.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import requests

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "orthanc.json"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERNAME = "covid-mtl"
START_TIMEOUT_S = 60


def orthanc_binary() -> Optional[str]:
    """The Orthanc executable (Debian installs it in /usr/sbin), or None."""
    found = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)
    return found if found and DICOMWEB_PLUGIN.exists() else None


def credentials(folder: Path) -> tuple[str, str]:
    """(user, password) of the PACS kept in ``folder``, made on first use."""
    path = folder / "credentials.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": USERNAME, "password": secrets.token_urlsafe(18)}, f)
    stored = json.loads(path.read_text())
    return stored["username"], stored["password"]


def write_config(folder: Path, port: int, user: str, password: str) -> Path:
    config = json.loads(CONFIG.read_text())
    storage = str((folder / "db").resolve())
    config.update({"HttpPort": int(port), "StorageDirectory": storage, "IndexDirectory": storage,
                   "RegisteredUsers": {user: password}, "Plugins": [str(DICOMWEB_PLUGIN)]})
    path = folder / "orthanc-effective.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the password
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    return path


@dataclass
class Orthanc:
    url: str  # REST root, e.g. http://127.0.0.1:8042
    auth: tuple[str, str]
    process: subprocess.Popen
    log_path: Path

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def get(self, path: str, **kwargs) -> requests.Response:
        response = requests.get(self.url + path, auth=self.auth, timeout=60, **kwargs)
        response.raise_for_status()
        return response

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def upload(self, files: Iterable[Path]) -> int:
        """Store DICOM files through ``POST /instances``; the number Orthanc accepted (new or already stored)."""
        stored = 0
        with requests.Session() as session:
            session.auth = self.auth
            for path in files:
                response = session.post(self.url + "/instances", data=Path(path).read_bytes(), timeout=120)
                if response.status_code == 200:
                    stored += 1
        return stored

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start(folder: Path, port: int) -> Orthanc:
    """Start Orthanc with its storage in ``folder``; returns once its REST API answers."""
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError("Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install orthanc "
                           "orthanc-dicomweb; `make pacs` does it)")
    folder = Path(folder).resolve()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", int(port))) == 0:
            raise RuntimeError(f"port {port} is in use (a system Orthanc? `systemctl stop orthanc`); choose another "
                               f"with PACS_PORT=... (make) or --port")
    user, password = credentials(folder)
    config = write_config(folder, port, user, password)
    log_path = folder / "orthanc.log"
    log = open(log_path, "w")
    process = subprocess.Popen([binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=str(folder),
                               start_new_session=True)
    orthanc = Orthanc(f"http://127.0.0.1:{port}", (user, password), process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}:\n{orthanc.log()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(orthanc.url + "/system", auth=orthanc.auth, timeout=2).status_code == 200:
                return orthanc
        time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not answer in {START_TIMEOUT_S} s:\n{orthanc.log()[-3000:]}")


@contextlib.contextmanager
def running(folder: Path, port: int) -> Iterator[Orthanc]:
    orthanc = start(folder, port)
    try:
        yield orthanc
    finally:
        orthanc.stop()


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def monailabel_env(orthanc: Orthanc, folder: Path) -> Path:
    """``monailabel.env``: what ``make serve STUDIES=<dicomweb URL>`` exports for MONAI Label."""
    path = folder / "monailabel.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"MONAI_LABEL_DICOMWEB_USERNAME={orthanc.auth[0]}\nMONAI_LABEL_DICOMWEB_PASSWORD={orthanc.auth[1]}\n")
    return path
