"""Archive analysis on a real local Ray cluster (issue 23): 2 workers, bound to loopback, started by the command.
The Ray run gives the single-process run's summary and masks, survives a worker killed mid-case (Ray restarts it
and retries the case; nothing half-written stays), and a rerun redoes no finished case."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is the optional part covid-mtl[ray]; make test installs it")

VARYING = {"seconds"}  # the only column allowed to differ between runs


def _private_network() -> list[str]:
    """A command prefix that runs in a network namespace of its own with only loopback up, where this machine
    allows it (root): Ray's servers listen on every interface, and there the only interface is loopback."""
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else []


PRIVATE_NETWORK = _private_network()


def _analyze(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "covid_mtl.cli", "analyze", *args, "--no-progress"]
    return subprocess.run([*PRIVATE_NETWORK, *command] if "--ray" in args else command, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _rows(out: Path) -> list[dict]:
    with open(out / "summary.csv") as f:
        return [{k: v for k, v in row.items() if k not in VARYING} for row in csv.DictReader(f)]


def _mask(out: Path, case: str) -> np.ndarray:
    return np.asarray(nib.load(out / case / "mask.nii.gz").dataobj)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, sample_data) -> Path:
    folder = tmp_path_factory.mktemp("archive") / "cases"
    shutil.copytree(sample_data, folder, ignore=shutil.ignore_patterns("labels", "*.md", "*.csv", "*_lesion.nii.gz"))
    shutil.copytree(sample_data / "dicom" / "covid_dicom_001", folder / "covid_dicom_001")
    shutil.rmtree(folder / "dicom")
    return folder


@pytest.fixture(scope="module")
def single(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    done = _analyze(str(archive), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_killed_worker_loses_no_case_and_the_summary_is_the_single_process_one(archive, single, tmp_path):
    out = tmp_path / "ray"
    killed: list[tuple[str, int]] = []

    def kill_a_worker_mid_case() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            staging = out / ".partial"
            for entry in (staging.iterdir() if staging.is_dir() else []):
                case, pid = entry.name.split(".")[0], int(entry.name.split(".")[1])
                if pid != os.getpid():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue  # that case finished between the listing and the kill
                    killed.append((case, pid))
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_mid_case, daemon=True)
    killer.start()
    done = _analyze(str(archive), "--out", str(out), "--ray", "--workers", "2")
    killer.join(timeout=5)
    assert done.returncode == 0, done.stderr[-3000:]
    assert killed, "no worker was caught mid-case"
    rows = _rows(out)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert rows == _rows(single)  # same cases, calls, probabilities and measures, in the same order
    for row in rows:
        if "mask" in row["outputs"].split(";"):
            assert np.array_equal(_mask(out, row["case"]), _mask(single, row["case"])), row["case"]
    assert not (out / ".partial").exists()  # the killed worker's half-written case is gone
    assert (out / killed[0][0] / "report.json").is_file()  # and its case was done again, completely

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    again = _analyze(str(archive), "--out", str(out), "--ray", "--workers", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "10 of 10 cases already complete" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")} == stamps  # nothing redone
    assert _rows(out) == rows


def test_a_rerun_does_only_the_cases_left(archive, single, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(single, out)
    shutil.rmtree(out / "normal_002")
    (out / ".partial" / "other_001.123.x").mkdir(parents=True)  # what a killed run leaves
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    done = _analyze(str(archive), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 of 10 cases already complete" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/report.json") if p in stamps} == stamps
    assert (out / "normal_002" / "report.json").is_file() and not (out / ".partial").exists()
    assert _rows(out) == _rows(single)


def test_an_unreachable_cluster_is_a_clear_error(archive, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    done = _analyze(str(archive), "--out", str(tmp_path / "x"), "--ray", f"127.0.0.1:{port}", timeout=60)
    assert done.returncode == 2
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - start < 30 and not list((tmp_path / "x").glob("*/report.json"))
