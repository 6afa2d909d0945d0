"""Training in several processes: ``covid-mtl train`` under ``torchrun``, and the MONAI Label train task's multi-GPU
path, on torch's own machinery (``torch.distributed``, ``DistributedDataParallel``).

``torchrun --nproc_per_node=N`` starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :meth:`Ranks.from_env` reads them once, when the
command starts. :func:`process_group` joins the group (gloo on CPU, NCCL on CUDA) with a timeout, so a process whose
peers died or never came fails instead of waiting forever, and leaves it at the end. Each process trains its share of
every epoch's draws (``train.samples.ShareOfDraws``, picked in ``train.engine.data_loaders``); DDP averages the
gradients, so ``--batch-size`` is per process and N processes with batch B take the steps of one process with
batch N x B. Besides the gradients, two things cross processes: the epoch's training numbers, gathered from
every share (:func:`gather_stats`), and when to stop, which is rank 0's call (:func:`stop_with_rank0`).
"""
from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from ..device import resolve_device
from ..errors import CovidMTLError

DEFAULT_TIMEOUT = timedelta(minutes=30)
"""How long a process waits for its peers at any one exchange (joining, a step's gradients, rank 0's validation)."""


@dataclass(frozen=True)
class Ranks:
    """Who this process is among those training together (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    address: str = ""  # MASTER_ADDR:MASTER_PORT, for messages

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone validates, writes files and prints."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Ranks":
        """torchrun's variables; a single process without them (or ``WORLD_SIZE`` 1)."""
        try:
            world_size = int(environ.get("WORLD_SIZE", "1"))
            if world_size <= 1:
                return cls()
            rank = int(environ["RANK"])
            local_rank = int(environ.get("LOCAL_RANK", rank))
            local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
        except (KeyError, ValueError) as exc:
            raise CovidMTLError(f"WORLD_SIZE is set but torchrun's RANK/LOCAL_RANK are missing or bad: {exc}") from None
        address = f"{environ.get('MASTER_ADDR', '?')}:{environ.get('MASTER_PORT', '?')}"
        return cls(rank, world_size, local_rank, local_world_size, address)


def process_device(device: str, ranks: Ranks) -> str:
    """The device this process trains on: under torchrun each process takes the GPU of its ``LOCAL_RANK``
    (``auto`` or ``cuda``); a GPU index would put every process on one GPU, so it is refused."""
    if not ranks.distributed:
        return device
    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return str(resolved)
    if ":" in str(device):
        raise CovidMTLError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass cuda or auto")
    if ranks.local_rank >= torch.cuda.device_count():
        raise CovidMTLError(f"LOCAL_RANK {ranks.local_rank} but only {torch.cuda.device_count()} GPU(s) visible")
    return f"cuda:{ranks.local_rank}"


@contextmanager
def process_group(ranks: Ranks, device: str, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Join torchrun's process group for the duration (nothing for a single process)."""
    if not ranks.distributed:
        yield
        return
    if not dist.is_available():
        raise CovidMTLError("torch.distributed is not available in this torch build")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(device))  # NCCL's collectives run on the current device
    # env:// takes MASTER_ADDR/PORT, RANK and WORLD_SIZE from torchrun; the timeout bounds every later exchange too
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout, rank=ranks.rank,
                                world_size=ranks.world_size)
    except RuntimeError as exc:  # torch's DistError/DistStoreError: peers missing or unreachable
        raise CovidMTLError(f"rank {ranks.rank} could not join {ranks.world_size} processes at {ranks.address} "
                            f"within {timeout}: {str(exc).splitlines()[0]}") from None
    try:
        # ignite learns the group with collectives on its first look (any ignite logger asks for the rank): let
        # every process look now, or rank 0's first EarlyStopping would wait for peers that never join in
        idist.sync()
        yield
        # Leave together, after the group's last users are gone: DDP's reducer holds the group and lives on in the
        # trainer's reference cycles; left to the interpreter's exit, gloo's threads outlive it and the process
        # aborts ("terminate called without an active exception": 2 runs in 10 on 2 busy cores, measured).
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def world_size() -> int:
    """Processes training together right now (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_stats(stats: Any) -> None:
    """Make ``stats`` (a ``train.step.EpochStats``) the whole epoch's, over every process's share: a collective,
    so every process calls it at the same point (the trainer's epoch end)."""
    if world_size() <= 1:
        return
    shares: list[Any] = [None] * world_size()
    dist.all_gather_object(shares, stats)
    stats.reset()
    for share in shares:  # rank order, the same merged numbers in every process
        stats.merge(share)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (which first copies rank 0's weights to every process)."""
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


def stop_with_rank0(trainer: Engine) -> None:
    """After every epoch, every process takes rank 0's stop decision (early stopping or a finished run), so none
    stops while the others wait for its gradients. Attach it after the handlers that validate and may stop: ignite
    checks ``should_terminate`` only once all of an epoch's handlers have run."""

    @trainer.on(Events.EPOCH_COMPLETED)
    def _agree(engine: Engine) -> None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1 if engine.should_terminate else 0], device=device)
        dist.broadcast(flag, src=0)
        engine.should_terminate = bool(flag.item())
