"""The benchmarks are run by hand (BENCHMARKS.md); here only: each module imports and
its pure helpers work."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("name", ["common", "loadgen", "bare", "ingest", "e2e", "scale"])
def test_bench_module_imports(name):
    module = importlib.import_module(f"bench.{name}")
    if name in ("ingest", "e2e", "scale"):
        assert callable(module.main) and module.__doc__


def test_percentile_and_signed_request_shape():
    from bench.common import percentile
    from bench.loadgen import build_request

    assert percentile([1, 2, 3, 4, 5], 50) == 3
    request = build_request("h", "/webhooks/stripe", "evt_1", 1001)
    assert request.startswith(b"POST /webhooks/stripe HTTP/1.1\r\n")
    assert b"Stripe-Signature: t=" in request and b'"perfex_customer":"1001"' in request


def test_scale_sandwiches_the_smaller_sizes_around_the_largest():
    from bench.scale import median_round, sandwich

    assert sandwich([1000, 10000, 100000], 2) == [1000, 10000, 100000, 10000, 1000]
    assert sandwich([1000, 10000, 100000], 1) == [1000, 10000, 100000]
    assert sandwich([1000, 10000, 100000], 3) == [1000, 10000, 1000, 10000, 100000, 10000, 1000]
    runs = [
        {"ms_per_task": t, "middle_ms_per_task": t, "rate": 1000 / t, "seconds": t}
        for t in (1.0, 3.0, 2.0)
    ]
    merged = median_round(runs)
    assert merged["ms_per_task"] == 2.0 and merged["rounds"] == runs


def test_ingest_charges_each_part_its_cpu_per_request():
    from bench.ingest import cpu_medians, measured

    class Procs:  # the CPU seconds a benchmark's processes have used, read twice
        readings = iter([{"bare": 1.0, "redis": 0.5}, {"bare": 1.4, "redis": 0.6}])

        host = iter([{"total": 1000, "steal": 10}, {"total": 1400, "steal": 50}])

        def cpu_seconds(self):
            return next(self.readings)

        def host_jiffies(self):
            return next(self.host)

    run = measured(Procs(), "bare", lambda: {"count": 2000, "loadgen_cpu_seconds": 0.2})
    assert run["cpu_us_per_request"] == {"loadgen": 100.0, "web": 200.0, "redis": 50.0}
    assert run["steal_pct"] == 10.0  # 40 of 400 ticks
    rounds = [{"cpu_us_per_request": {"web": w, "redis": 1.0}} for w in (300.0, 100.0, 200.0)]
    assert cpu_medians(rounds) == {"web": 200.0, "redis": 1.0}


def test_host_jiffies_reads_this_machine():
    from bench.common import Procs

    first = Procs.host_jiffies()
    assert first["total"] > 0 and 0 <= first["steal"] <= first["total"]
