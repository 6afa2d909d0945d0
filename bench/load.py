"""Load: concurrent clients sending classify + segment requests (the full multipart reply: JSON + mask) to a real
covid_mtl server on loopback; failures, latency percentiles and the peak memory of the server's process tree.

MONAI Label 0.8.5 runs infer inside its async endpoint, so a server answers one infer at a time: latency under N
clients is about N times the single-request time, and throughput stays that of one request.
Run: ``.venv/bin/python -m bench.load [--clients 8] [--requests 8] [--images covid_slice_001,covid_001]``
(a few minutes on 2 CPU cores; starts its own server on a copy of sample_data unless ``--url`` is given).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import requests
from requests_toolbelt.multipart.decoder import MultipartDecoder

from bench.common import PeakRSS, save, table

TIMEOUT = 600


@dataclass
class LoadResult:
    clients: int
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies_s)
        return {"clients": self.clients, "requests": n + len(self.failures), "failed": len(self.failures),
                "p50_s": self.percentile(50), "p90_s": self.percentile(90), "p99_s": self.percentile(99),
                "mean_s": statistics.fmean(self.latencies_s) if n else float("nan"),
                "requests_per_s": n / self.wall_s if self.wall_s else 0.0, "wall_s": self.wall_s,
                "rss_before_mib": self.rss_before_mib, "peak_rss_mib": self.peak_rss_mib}


def classify_and_segment(session: requests.Session, url: str, image: str) -> None:
    """One click in Slicer: raises on anything but a complete reply (JSON with a label, and a mask part)."""
    r = session.post(f"{url}/infer/covid_mtl", params={"image": image}, data={"params": "{}"}, timeout=TIMEOUT)
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    parts = {p.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]: p.content
             for p in MultipartDecoder.from_response(r).parts}
    if "image" not in parts or not parts["image"] or "label" not in json.loads(parts["params"]):
        raise RuntimeError(f"incomplete reply: parts {sorted(parts)}")


def run_load(url: str, server_pid: int, clients: int, requests_per_client: int, images: Sequence[str]) -> LoadResult:
    """``clients`` threads, each sending ``requests_per_client`` requests in turn over ``images``; all start
    together. Memory is sampled over the server's whole process tree (train/scoring subprocesses included)."""
    result, lock = LoadResult(clients), threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        with requests.Session() as session:
            barrier.wait()
            for k in range(requests_per_client):
                image = images[(index + k) % len(images)]
                start = time.perf_counter()
                try:
                    classify_and_segment(session, url, image)
                    with lock:
                        result.latencies_s.append(time.perf_counter() - start)
                except Exception as exc:  # counted, reported, and the load goes on
                    with lock:
                        result.failures.append(f"client {index} request {k} ({image}): {exc}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    with PeakRSS(server_pid) as rss:
        result.rss_before_mib = rss.mib
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        result.wall_s = time.perf_counter() - start
    result.peak_rss_mib = rss.mib
    return result


def _own_server(work: Path):
    from tests.server import copy_studies, running_server

    env = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "MONAI_LABEL_SESSION_PATH": str(work / "sessions")}
    return running_server(copy_studies(work / "studies"), work, conf={"preload": "true"}, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--images", default="covid_slice_001,covid_001", help="datastore image ids, comma-separated")
    parser.add_argument("--url", default=None, help="an already running server (with --pid for memory)")
    parser.add_argument("--pid", type=int, default=None, help="server process id when --url is given")
    args = parser.parse_args(argv)
    images = [i for i in args.images.split(",") if i]
    rows = []
    with tempfile.TemporaryDirectory(prefix="covid_mtl_load_") as tmp:
        if args.url:
            url, pid, ctx = args.url, args.pid, None
        else:
            ctx = _own_server(Path(tmp))
            server = ctx.__enter__()
            url, pid = server.url, server.process.pid
        try:
            for clients, per_client in ((1, 3), (args.clients, args.requests)):  # single-client baseline first
                result = run_load(url, pid, clients, per_client, images)
                rows.append(result.summary())
                for failure in result.failures[:5]:
                    print("FAILED:", failure)
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    print(table(f"Load: classify + segment on {', '.join(images)} (server tree RSS in MiB)", rows))
    path = save("load", {"images": images, "runs": rows})
    print(f"results: {path}")
    return 1 if any(r["failed"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
