"""The command line's "nothing to do costs nothing" targets, for bench.py.

- `abistamp build` of a variant already in the wheelhouse: under 1 s, no compiler started;
- `abistamp check` on an environment with torch and DeepSpeed: under 1 s, torch not imported.

Both are compared with the interpreter's own start-up (`python -c pass`) measured alternately
in the same run, so the ratio says how much of the time is abistamp's.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import CACHE, REPO, SMOKE_PROJECT, Row, deepspeed_sdist, sh, timed, torch_env, uv


def abistamp() -> str:
    return shutil.which("abistamp") or str(Path(sys.executable).parent / "abistamp")


def under_a_second(row: Row) -> bool:
    return statistics.median(row.ours) < 1.0


def bench_cli(smoke: bool) -> list[Row]:
    env = torch_env()
    py = env / "bin" / "python"
    reps = 3 if smoke else 7
    rows = []
    wheels = CACHE / "wheels"
    with tempfile.TemporaryDirectory() as tmp:
        wh = Path(tmp) / "wheelhouse"
        project = SMOKE_PROJECT if smoke else REPO / "examples" / "tiny-ext"
        build = [abistamp(), "build", str(project), "--torch",
                 "torch==2.13.0", "--find-links", str(wheels), "-o", str(wh)]
        first = timed(lambda: sh(build))
        skip = Row("`abistamp build` of a variant already in the wheelhouse", "< 1 s",
                   ours_label="abistamp build (skip)", base_label="python -c pass",
                   check_fn=under_a_second,
                   note=f"the first build of that variant took {first:.1f} s")
        for _ in range(reps):
            skip.base.append(timed(lambda: sh([sys.executable, "-c", "pass"])))
            start = time.perf_counter()
            result = sh(build)
            skip.ours.append(time.perf_counter() - start)
            text = result.stdout + result.stderr
            assert "skip" in text.lower(), text
        rows.append(skip)

        # An environment with torch and DeepSpeed (ops not prebuilt: its torch_info is what
        # `check` reads) and the stamped tiny-ext.
        if not smoke:
            sh([uv(), "pip", "install", "-p", py, "--no-build-isolation", "--no-deps",
                deepspeed_sdist()], env={**os.environ, "DS_BUILD_OPS": "0"})
        (wheel,) = wh.glob("*/*.whl")
        sh([uv(), "pip", "install", "-p", py, "--no-deps", "--reinstall", wheel])
        check = Row("`abistamp check` of an environment with torch"
                    + ("" if smoke else " and DeepSpeed"), "< 1 s",
                    ours_label="abistamp check", base_label="python -c pass",
                    check_fn=under_a_second)
        for _ in range(reps):
            check.base.append(timed(lambda: sh([sys.executable, "-c", "pass"])))
            result = subprocess.run([abistamp(), "check", "--python", str(py)],
                                    capture_output=True, text=True, check=False)
            assert result.returncode in (0, 1), result.stderr
            check.ours.append(timed(lambda: subprocess.run(
                [abistamp(), "check", "--python", str(py)], capture_output=True, check=False)))
        rows.append(check)
    return rows
