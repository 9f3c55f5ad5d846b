"""How `abistamp build` runs things: every child process of every variant in its own process
group (so that an interrupt ends them all, compilers included), and the program that calls the
PEP 517 hooks inside a build environment."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from abistamp.core.errors import AbistampError

from .variants import Cancelled


class Processes:
    """Child processes of all variants, so that an interrupt can end every one of them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen[bytes]] = set()
        self.cancelled = threading.Event()

    def run(self, cmd: list[str], *, log: IO[str], cwd: Path | None = None,
            env: dict[str, str] | None = None) -> int:
        if self.cancelled.is_set():
            raise Cancelled
        shown = [("'<abistamp hook runner>'" if arg == RUNNER else arg) for arg in cmd]
        log.write("$ " + " ".join(shown) + "\n")
        log.flush()
        # A session of its own: the compiler and its children go when we end the group.
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        with self.lock:
            self.running.add(proc)
        try:
            rc = proc.wait()
        finally:
            with self.lock:
                self.running.discard(proc)
        if self.cancelled.is_set():
            raise Cancelled
        return rc

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            procs = list(self.running)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 5
            while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
                time.sleep(0.05)


# The hooks, run by the build environment's python with the source copy as cwd. It dies with
# abistamp (PR_SET_PDEATHSIG) so that a killed run leaves no build behind.
RUNNER = r"""
import json, os, sys
spec = json.loads(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)
    if os.getppid() != spec["parent"]:
        sys.exit(1)
except Exception:
    pass
sys.path[:0] = [spec["abistamp"], *spec["backend_path"]]

def done(value):
    with open(spec["result"], "w") as f:
        json.dump(value, f)

for module in ("setuptools", "packaging"):
    try:
        __import__(module)
    except ImportError:
        done({"error": f"the build environment `{sys.prefix}` lacks `{module}` (fix: install "
                       "setuptools>=64 and packaging>=22 into it)"})
        sys.exit(1)
import abistamp.backend as backend
from abistamp.core.errors import AbistampError

def unmet(requirements):
    from importlib import metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    missing = []
    for text in requirements:
        req = Requirement(text)
        if canonicalize_name(req.name) in ("torch", "abistamp"):
            continue  # torch is the variant's own; abistamp is on sys.path
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            if req.specifier.contains(metadata.version(req.name), prereleases=True):
                continue
        except metadata.PackageNotFoundError:
            pass
        missing.append(text)
    return missing

try:
    if spec["hook"] == "build_wheel":
        done({"result": backend.build_wheel(spec["out"], spec["config"])})
    else:
        requires = backend.get_requires_for_build_wheel(spec["config"])
        done({"result": requires, "missing": unmet(requires)})
except AbistampError as e:
    print(f"abistamp: error: {e}", file=sys.stderr)
    done({"error": e.one_line()})
    sys.exit(1)
"""


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found:
        return found
    raise AbistampError("`uv` was not found (abistamp build makes its environments with it)",
                        "pip install 'abistamp[cli]', or put uv on PATH")
