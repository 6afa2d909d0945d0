"""Cases spread over a Ray cluster: a local one started for the run, or an existing one by address.

Each worker is a Ray actor holding one :class:`~covid_mtl.archive.worker.CaseWorker` (the model loaded once) and
analyses one case at a time; the driver hands the next case to whichever worker is free and shows one progress
bar. A worker process that dies mid-case (killed, out of memory, node lost) is restarted by Ray and its case is
retried (``RETRIES``); the half-written case never reaches ``OUT/<case>`` (``case_output``). On a real cluster the
checkpoint, the inputs and ``--out`` must be on a filesystem every node sees (the workers read and write them).
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable

from ..errors import CovidMTLError
from .cases import Case
from .summary import summary_row
from .worker import CaseWorker

RETRIES = 3
"""How often Ray restarts a dead worker and retries its case before the case is reported as failed."""

CONNECT_TIMEOUT_S = 5.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CovidMTLError("--ray needs Ray, an optional part: pip install 'covid-mtl[ray]' "
                            "(in a checkout: pip install -e '.[ray]')") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, instead of waiting on Ray's own connection retries."""
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise CovidMTLError(f"--ray {address!r}: give the cluster's head as HOST:PORT (e.g. 10.0.0.5:6379), "
                            f"ray://HOST:PORT, or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise CovidMTLError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect(address: str | None, workers: int | None) -> int:
    """Join the cluster at ``address`` (None: start a local one bound to 127.0.0.1); returns the worker count."""
    ray = _import_ray()
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
            raise CovidMTLError(f"cannot join the Ray cluster at {address}: {exc}") from exc
        return workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    workers = workers or os.cpu_count() or 1
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return workers


def run_on_ray(cases: list[Case], checkpoint: str, device: str, out_dir: str, dicom_seg: bool,
               address: str | None, workers: int | None, on_row: Callable[[dict[str, Any]], None]) -> list[dict]:
    """Rows of ``cases`` (in their order); ``on_row`` is called as each case finishes (progress)."""
    ray = _import_ray()
    n = connect(address, workers)
    try:
        actor = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(CaseWorker)

        def start():
            return actor.remote(checkpoint, device, out_dir, dicom_seg, 1)  # one core each: workers share nothing

        pool = [start() for _ in range(min(n, len(cases)))]
        rows: dict[int, dict[str, Any]] = {}
        todo = list(enumerate(cases))[::-1]
        running: dict[Any, tuple[int, Any]] = {}
        for worker in pool:
            _give(worker, todo, running)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            index, worker = running.pop(done[0])
            try:
                rows[index] = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the worker died more often than Ray retries
                rows[index] = summary_row(cases[index], None, f"worker failed: {type(exc).__name__}: {exc}", 0.0)
                worker = start()
            on_row(rows[index])
            _give(worker, todo, running)
        return [rows[i] for i in range(len(cases))]
    finally:
        ray.shutdown()


def _give(worker, todo: list, running: dict) -> None:
    if todo:
        index, case = todo.pop()
        running[worker.analyze.remote(case)] = (index, worker)

