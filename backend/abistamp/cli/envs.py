"""Another Python environment, seen from outside: its interpreter, site-packages and torch.

The command line works on environments it does not run in (`abistamp check --python`, `abistamp
stamp --python`, `abistamp build --python`). Reading files is enough for most questions and
costs milliseconds; only the C++ ABI flag needs torch imported, and then the environment's own
interpreter does it, with a private copy of this package on its path (never this process's
site-packages, which would put our packages, or our torch, in front of theirs).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from abistamp.core.abi import TorchABI
from abistamp.core.errors import AbistampError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the abistamp package, both runtimes


def resolve_python(given: str | Path) -> Path:
    """An interpreter from `--python`: a python executable, or a virtual environment folder."""
    path = Path(given).expanduser()
    if path.is_dir():
        for candidate in (path / "bin" / "python", path / "Scripts" / "python.exe"):
            if candidate.exists():
                return candidate.absolute()
        raise AbistampError(f"`{given}` is a folder without `bin/python`",
                            "pass a virtual environment's folder or its python executable")
    if not path.exists():
        found = shutil.which(str(given))
        if found:
            return Path(found)
        raise AbistampError(f"the interpreter `{given}` does not exist",
                            "pass the path of a python executable or a virtual environment")
    # Keep venv symlinks unresolved: bin/python of a venv resolves to the base interpreter.
    return path.absolute()


def default_python() -> Path:
    """The environment a user means without saying: the active venv, `.venv` above cwd, or us."""
    active = os.environ.get("VIRTUAL_ENV")
    if active and (Path(active) / "bin" / "python").exists():
        return Path(active) / "bin" / "python"
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / ".venv" / "bin" / "python"
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def site_dirs(python: Path) -> list[Path]:
    """The site-packages folders of an interpreter's environment.

    A virtual environment's are found beside it without starting it (a few milliseconds,
    where starting an interpreter costs tens); anything else is asked once.
    """
    root = python.parent.parent
    cfg = root / "pyvenv.cfg"
    if cfg.is_file() and python.parent.name == "bin":
        text = cfg.read_text(encoding="utf-8", errors="replace").lower().replace(" ", "")
        if "include-system-site-packages=true" not in text:
            found = sorted(root.glob("lib/python3*/site-packages"))
            if len(found) == 1:
                return found
    code = ("import json, site, sys; "
            "print(json.dumps([p for p in sys.path if p.endswith(('site-packages', "
            "'dist-packages'))]))")
    out = _run(python, ["-c", code])
    return [Path(p) for p in json.loads(out) if Path(p).is_dir()]


def python_version(python: Path) -> str:
    """`3.11` for an interpreter, without starting it when it is this one."""
    if python.resolve() == Path(sys.executable).resolve():
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    return _run(python, ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).strip()


def installed_torch(python: Path) -> TorchABI | None:
    """The torch of an environment, read from its files (no C++ ABI flag)."""
    from abistamp.core.abi import read_installed

    return read_installed(site_dirs(python))


_DETECT = """
import dataclasses, json, sys
sys.path.insert(0, sys.argv[1])
from abistamp.core.abi import detect
from abistamp.core.errors import AbistampError
try:
    print(json.dumps({"abi": dataclasses.asdict(detect())}))
except AbistampError as e:
    print(json.dumps({"error": e.problem, "fix": e.fix}))
"""


def detect_in(python: Path) -> TorchABI:
    """The full ABI of an environment's torch, as a build there would see it (imports torch)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = _run(python, ["-c", _DETECT, str(private_copy())], env=env)
    answer = json.loads(out.strip().splitlines()[-1])
    if "error" in answer:
        raise AbistampError(f"in `{python}`: {answer['error']}", answer.get("fix"))
    return TorchABI(**answer["abi"])


@functools.lru_cache(maxsize=1)
def private_copy() -> Path:
    """A folder holding a copy of this package and nothing else, for other interpreters' paths.

    Removed when this process exits.
    """
    folder = Path(tempfile.mkdtemp(prefix="abistamp-pkg-"))
    atexit.register(shutil.rmtree, folder, True)
    shutil.copytree(PACKAGE_DIR, folder / "abistamp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return folder


def _run(python: Path, args: list[str], env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run([str(python), *args], capture_output=True, text=True, timeout=120,
                              check=False, env=env)
    except OSError as e:
        raise AbistampError(f"cannot run `{python}`: {e}",
                            "pass the path of a working python executable") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AbistampError(f"`{python}` failed ({proc.returncode}): {last}",
                            "pass the path of a working python executable")
    return proc.stdout
