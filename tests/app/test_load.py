"""Short load run (the long one is ``python -m bench.load``): 8 concurrent clients, classify + segment on the PNG
slice; no request may fail and the server's memory must stay bounded."""
from __future__ import annotations

from typing import Iterator

import pytest
import requests

from bench.load import run_load
from tests.server import Server, module_server

# The server process idles at ~1.1 GiB (torch, MONAI, the model); eight queued requests must not multiply it.
MAX_GROWTH_MIB = 1024
MAX_PEAK_MIB = 3072


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from module_server(tmp_path_factory, "load")


def test_eight_concurrent_clients(server: Server) -> None:
    result = run_load(server.url, server.process.pid, clients=8, requests_per_client=2, images=["covid_slice_001"])
    summary = result.summary()
    print(f"\nload: {summary}")
    assert not result.failures, result.failures
    assert summary["requests"] == 16 and len(result.latencies_s) == 16
    assert summary["peak_rss_mib"] - summary["rss_before_mib"] < MAX_GROWTH_MIB, summary
    assert summary["peak_rss_mib"] < MAX_PEAK_MIB, summary
    assert requests.get(f"{server.url}/info/", timeout=30).status_code == 200
