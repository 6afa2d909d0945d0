"""Decoding the pixel data of a DICOM series, in parallel when it is compressed.

A lossless JPEG 2000 CT slice takes about 30 ms to decode on one core here (pylibjpeg-openjpeg, and GDCM through
SimpleITK is no faster), and the decoder holds the GIL, so threads do not help: a 261-slice chest series took
7.7 s. Series of at least ``PARALLEL_MIN_SLICES`` compressed slices are therefore decoded by worker processes
(one per core, at most ``MAX_WORKERS``) forked for the series and gone after it, as torch's DataLoader forks its
workers: a fork costs milliseconds and needs no re-import, while ``spawn``/``forkserver`` workers re-run the
caller's ``__main__`` (a server's start script). The workers only read files and decode. A fork is only safe
while this process runs one Python thread (a lock another thread holds at the fork stays locked in the child), so
a multi-threaded process (the MONAI Label server) decodes in its own thread. Uncompressed series are read in this
process: their slices cost under a millisecond each.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

import numpy as np

PARALLEL_MIN_SLICES = 24
MAX_WORKERS = 4
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}


def is_compressed(header) -> bool:
    syntax = str(getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", "") or "")
    return bool(syntax) and syntax not in UNCOMPRESSED


def _workers() -> int:
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def decode_all(paths: Sequence[str], read_one: Callable[[str], np.ndarray], compressed: bool) -> list[np.ndarray]:
    """``read_one(path)`` for every path, in order; in worker processes when the series is compressed and long.
    ``read_one`` must be a module-level function (it travels to the workers by name)."""
    if not compressed or len(paths) < PARALLEL_MIN_SLICES or _workers() < 2 or threading.active_count() > 1:
        return [read_one(p) for p in paths]
    return decode_in_workers(paths, read_one)


def decode_in_workers(paths: Sequence[str], read_one: Callable[[str], np.ndarray]) -> list[np.ndarray]:
    """``read_one`` over ``paths`` in forked worker processes, results in order."""
    workers = _workers()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(read_one, paths, chunksize=max(1, len(paths) // (4 * workers))))
