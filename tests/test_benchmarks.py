"""The benchmark script keeps working: every benchmark in its smoke mode (the full run is not CI).

The smoke run cuts sizes and repetitions (an 8 MiB wheel, one build a side, DeepSpeed without
ops), so its ratios say nothing about the targets: what is checked is that every row is measured
on both sides and lands in the table, and that `--write` puts the table between its markers.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from .conftest import CACHE, REPO, clean_env, run

ROWS = [
    "stamping a 8 MiB wheel of incompressible data",
    "`prepare_metadata_for_build_wheel` on DeepSpeed",
    "shim overhead: probe (smoke, nothing compiled) wheel",
    "`abistamp build` of a variant already in the wheelhouse",
    "`abistamp check` of an environment with torch",
    "DeepSpeed no ops (smoke), `uv build --wheel --no-build-isolation`",
    "DeepSpeed rebuild of the same ABI with `compiler-cache = true`, cache warm",
]


@pytest.mark.slow
def test_every_benchmark_runs_in_its_smoke_mode(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text("before\n<!-- BENCHMARK BEGIN -->\nold\n<!-- BENCHMARK END -->\nafter\n")
    # The bench keeps its torch environment and downloads beside the tests' own, so a second
    # run of the suite reuses them.
    result = run([sys.executable, REPO / "benchmarks" / "bench.py", "--smoke", "--write", page],
                 env=clean_env(BENCH_CACHE=str(CACHE / "bench")), timeout=1800)
    text = page.read_text()
    assert text.startswith("before\n<!-- BENCHMARK BEGIN -->\n| measurement |")
    assert text.endswith("<!-- BENCHMARK END -->\nafter\n") and "\nold\n" not in text
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 1 + len(ROWS), result.stdout
    for name, line in zip(ROWS, table[1:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0].startswith(name), (name, line)
        # Both sides measured: "<median> s (<min>-<max>)", and a ratio of the two.
        assert re.fullmatch(r"\d+\.\d{3} s \(\d+\.\d{3}-\d+\.\d{3}\)", cells[1]), line
        assert re.fullmatch(r"\d+\.\d{3} s \(\d+\.\d{3}-\d+\.\d{3}\)", cells[2]), line
        assert float(cells[3]) > 0, line
    assert "(smoke run" in result.stdout


def test_write_refuses_a_page_without_markers(tmp_path: Path) -> None:
    page = tmp_path / "performance.md"
    page.write_text("no markers here\n")
    result = run([sys.executable, REPO / "benchmarks" / "bench.py", "--smoke", "--only", "none",
                  "--write", page], check=False)
    assert result.returncode != 0
    assert "has no `<!-- BENCHMARK BEGIN -->` marker" in result.stderr
    assert page.read_text() == "no markers here\n"
