"""The benchmark script keeps working: its smoke mode, on small sizes (the full run is not CI)."""

from __future__ import annotations

import sys

from .conftest import REPO, run


def test_benchmark_smoke(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run([sys.executable, REPO / "benchmarks" / "bench.py", "--smoke", "--only",
                  "stamp"], env={"BENCH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert "stamping a 8 MiB wheel" in result.stdout
    assert "(smoke run" in result.stdout
