"""What the `abistamp` command-line tests share: running the CLI, projects, environments.

The session fixtures (built wheelhouses) are in cli_fixtures.py, loaded as a plugin.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from .conftest import DATA, Env, Result, clean_env, copy_project, run, uv_bin

ABISTAMP = [sys.executable, "-m", "abistamp"]


def cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: int = 900) -> Result:
    return run([*ABISTAMP, *args], cwd=cwd, env=env or clean_env(), check=check,
               timeout=timeout)


def manifest(wheelhouse: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((wheelhouse / "abistamp-wheelhouse.json").read_text())
    return data


def summary_rows(output: str) -> dict[str, list[str]]:
    """The summary table of `abistamp build`: variant -> [status, abi, wheel-or-note, time]."""
    rows = {}
    lines = output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("VARIANT"))
    for line in lines[start + 1:]:
        if line.startswith("wheelhouse:"):
            break
        parts = re.split(r"\s{2,}", line.strip())
        rows[parts[0]] = parts[1:]
    return rows


def plain_probe(dest: Path) -> Path:
    """The probe project (imports torch at build time) declaring plain setuptools, not abistamp:
    the shape of DeepSpeed and other setup.py projects."""
    project = copy_project(DATA / "probe", dest, vendor_backend=False)
    text = (project / "pyproject.toml").read_text()
    text = text.replace('build-backend = "abistamp.backend"',
                        'build-backend = "setuptools.build_meta"')
    text = text.replace('backend-path = ["backend"]\n', "")
    (project / "pyproject.toml").write_text(text)
    return project


def fresh_env(dest: Path, find_links: Path, *requirements: str | Path) -> Env:
    """A new venv with these requirements (seconds: uv links torch from its cache)."""
    run([uv_bin(), "venv", "-q", "-p", sys.executable, dest])
    python = dest / "bin" / "python"
    run([uv_bin(), "pip", "install", "-q", "-p", python, "--find-links", find_links,
         *requirements])
    version = run([python, "-c", "import importlib.metadata as m; print(m.version('torch'))"]
                  ).stdout.strip()
    return Env(dest, version)


def copy_wheelhouse(wheelhouse: Path, dest: Path) -> Path:
    shutil.copytree(wheelhouse, dest)
    return dest


# Runs the command line in this interpreter under an audit hook (PEP 578) that records every
# process it starts and every network connection or name lookup it makes, then writes what it
# saw and whether torch was imported: "nothing to do" paths are held to starting no compiler,
# no interpreter and no uv, to never importing torch, and to never touching the network.
_TRACER = """
import json, runpy, sys
spawned = []
network = []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.sendto"):
        network.append([event, repr(args[1] if event != "socket.getaddrinfo" else args[0])])
    elif event == "subprocess.Popen":
        spawned.append([str(a) for a in args[1]] if isinstance(args[1], (list, tuple))
                       else [str(args[1])])
    elif event in ("os.posix_spawn", "os.exec", "os.spawn", "os.system"):
        spawned.append([str(a) for a in args[1]] if event != "os.system" else [str(args[0])])
sys.addaudithook(hook)
out = sys.argv.pop(1)
sys.argv[0] = "abistamp"
try:
    runpy.run_module("abistamp", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as f:
        json.dump({"spawned": spawned, "torch_imported": "torch" in sys.modules,
                   "network": network}, f)
"""


def traced_cli(trace: Path, *args: str | Path, check: bool = True,
               env: dict[str, str] | None = None) -> tuple[Result, list[list[str]], bool]:
    """`cli`, plus the commands it started and whether it imported torch."""
    result = run([sys.executable, "-c", _TRACER, trace, *args], env=env or clean_env(),
                 check=check)
    seen = json.loads(trace.read_text())
    return result, seen["spawned"], seen["torch_imported"]


def network_used(trace: Path) -> list[list[str]]:
    """The connections and name lookups of the last `traced_cli` run that wrote trace."""
    used: list[list[str]] = json.loads(trace.read_text())["network"]
    return used
