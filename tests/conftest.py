"""Shared fixtures: real torch environments, real frontends, copies of real projects.

Environments are made once and kept under `.cache/tests` (or $TEST_ENV_CACHE), so a second run
of the suite reuses them. Nothing here fakes torch: env213 holds torch 2.13.0+cpu and env214
the CUDA 13.0 build of torch 2.14.1, both from this machine's pip configuration.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BACKEND = REPO / "backend"
EXAMPLES = REPO / "examples"
DATA = Path(__file__).resolve().parent / "data"
CACHE = Path(os.environ.get("TEST_ENV_CACHE") or REPO / ".cache" / "tests")
IN_CI = bool(os.environ.get("CI"))

# Build requirements of every project in the tests, so uv and pip find them offline-first.
BUILD_REQS = ["setuptools>=64", "packaging>=22", "wheel", "pip", "build", "ninja"]


def need(condition: bool, why: str) -> None:
    """Skip loudly where something is missing; in CI a missing part is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for this test in CI: {why}")
    print(f"\n*** SKIPPED: {why} ***", file=sys.stderr)
    pytest.skip(why)


# Ctrl-C as a terminal delivers it. A shell starts background jobs (`cmd &`, as a CI runner may
# start this suite) with SIGINT ignored; children inherit that through exec, and Python then
# installs no KeyboardInterrupt handler, so the interruption tests would send SIGINT into the
# void. A handled signal is reset to the default on exec, an ignored one is not.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# What makes a test slow: a torch environment or its wheels (uv links them from its cache in
# seconds, but `import torch` alone takes seconds), a compile, a built wheelhouse, DeepSpeed.
# The fixture closure counts (item.fixturenames), so a module fixture that builds on env213
# makes its tests slow too. The CUDA torch (5 GB) also needs `cuda`.
CUDA_FIXTURES = frozenset({"env214", "torch214_wheels", "tiny_wheelhouse_214"})
SLOW_FIXTURES = CUDA_FIXTURES | {"env213", "torch213_wheels", "tiny", "tiny_wheelhouse",
                                 "ds_sdist", "ds_wheels", "ds_wh"}


def missing_markers(item: pytest.Item) -> list[str]:
    """The markers (`slow`, `cuda`) that a test's fixtures ask for and it does not carry."""
    names = set(getattr(item, "fixturenames", ()))
    needed = (["slow"] if names & SLOW_FIXTURES else []) + (["cuda"] if names & CUDA_FIXTURES
                                                              else [])
    return [m for m in needed if item.get_closest_marker(m) is None]


# The modules that take longest, longest first (minutes of wall time in a fresh-clone run on two
# cores). pytest-xdist hands whole modules (`--dist loadfile`) to whichever worker is free, in
# collection order (scripts/test passes `--no-loadscope-reorder`: its own order puts modules with
# many tests first, which left the corpus, two tests, to start last and run alone). Starting the
# long ones first lets the short ones fill in beside them, so both workers end together.
LONGEST_FIRST = ("test_corpus.py", "test_cli_deepspeed.py", "test_deepspeed_flags.py",
                 "test_deepspeed.py", "test_cuda_builds.py", "test_matrix.py",
                 "test_ci_matrix.py", "test_tiny_ext.py")


def longest_first(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`-m "not slow"` must be a fast subset: a test that uses a torch environment, a compile
    or the CUDA torch without saying so fails at set-up, before any of it is made. Then the
    longest modules go first (LONGEST_FIRST); the order within a module stays."""
    items.sort(key=longest_first)
    for item in items:
        missing = missing_markers(item)
        if missing:
            why = (f"{item.nodeid} uses "
                   f"{', '.join(sorted(set(item.fixturenames) & SLOW_FIXTURES))} but is not "
                   f"marked {' and '.join(missing)}: add @pytest.mark.{missing[0]}"
                   + (f" and @pytest.mark.{missing[1]}" if len(missing) > 1 else "")
                   + " (or pytestmark in the module)")

            def refuse(why: str = why) -> None:
                pytest.fail(why, pytrace=False)

            item.setup = refuse  # type: ignore[method-assign]


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder of this run that every worker (pytest-xdist) sees: each worker's basetemp is
    inside the session's."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"shared-{name}"


@contextlib.contextmanager
def made_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path | None]:
    """For what a session fixture makes once per run, whichever worker asks first: yields the
    empty shared folder to fill, or None when another worker has filled it already."""
    folder = shared_folder(tmp_path_factory, name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if (folder / ".done").exists():
            yield None
            return
        shutil.rmtree(folder, ignore_errors=True)  # a worker that failed at it left this
        folder.mkdir()
        yield folder
        (folder / ".done").write_text("")


def uv_bin() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    need(Path(found).exists(), "uv is not installed (pip install -e '.[test]')")
    return found


OLDEST_UV = "0.13.8"  # the uv FACTS.md was measured with; the test extra brings the newest
OLDEST_PIP = "23.2.1"  # the pip of this machine's Python


@pytest.fixture(scope="session")
def uv_versions() -> dict[str, str]:
    """The uv binaries to run the key cells with: the newest (test extra) and the oldest."""
    folder = CACHE / f"uv-{OLDEST_UV}"
    binary = folder / "bin" / "uv"
    if not binary.exists():
        wheels = _download(CACHE / f"uv-{OLDEST_UV}-wheel", f"uv=={OLDEST_UV}", deps=False)
        (wheel,) = wheels.glob("uv-*.whl")
        import zipfile as _zip

        with _zip.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith("/scripts/uv"))
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_bytes(zf.read(member))
        binary.chmod(0o755)
    version = run([binary, "--version"]).stdout.split()[1]
    assert version == OLDEST_UV
    return {"newest": uv_bin(), "oldest": str(binary)}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a frontend subprocess: no stray ABISTAMP_ or VIRTUAL_ENV."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ABISTAMP_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.setdefault("UV_CACHE_DIR", str(CACHE / "uv-cache"))
    # uv installs no bytecode, and where PYTHONDONTWRITEBYTECODE is set none is written either:
    # every `import torch` then compiles torch's Python files again (6 s instead of 3 s here,
    # hundreds of times a run). Bytecode goes to one folder of the cache instead, never into a
    # source tree or an environment.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    env["UV_NO_PROGRESS"] = "1"
    # torch wraps its compilers in ccache whenever one is on PATH (the test extra brings one):
    # tests compile for real unless they ask for the compiler cache.
    env["TORCH_NO_COMPILER_WRAPPER"] = "1"
    env.update(extra)
    return env


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(cmd: list[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: int = 900) -> Result:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n"
                             f"{proc.stderr[-6000:]}")
    return result


@dataclass
class Env:
    """A virtual environment with one torch in it."""

    root: Path
    torch: str  # the distribution version

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment that puts this venv first on PATH, as an activated venv would."""
        return clean_env(**{"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                            "VIRTUAL_ENV": str(self.root), **extra})

    def py(self, code: str, **kw: Any) -> Result:
        return run([self.python, "-c", code], **kw)


def read_record(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/abistamp.json"))
        return json.loads(zf.read(name))


def read_dist_file(wheel: Path, rel: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(f".dist-info/{rel}"))
        return zf.read(name).decode()


def copy_project(src: Path, dest: Path, vendor_backend: bool = True) -> Path:
    """Copy a project as a user would have it, with abistamp's backend/ vendored in-tree."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info",
                                                             "__pycache__"))
    if vendor_backend:
        shutil.copytree(BACKEND, dest / "backend",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """One maker at a time per cache entry, across processes sharing $TEST_ENV_CACHE."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _download(folder: Path, spec: str, deps: bool) -> Path:
    with cache_lock(folder.name):
        return _download_locked(folder, spec, deps)


def _download_locked(folder: Path, spec: str, deps: bool) -> Path:
    stamp = folder / ".done"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), spec]
    if not deps:
        cmd.insert(4, "--no-deps")
    result = run(cmd, check=False, env=dict(os.environ))
    need(result.returncode == 0, f"pip could not download {spec}: {result.stderr[-500:]}")
    stamp.write_text(spec)
    return folder


@pytest.fixture(scope="session")
def torch213_wheels() -> Path:
    """A find-links folder with torch 2.13.0+cpu (uv ignores pip's configuration)."""
    return _download(CACHE / "wheels-2.13.0", "torch==2.13.0", deps=False)


@pytest.fixture(scope="session")
def torch214_wheels() -> Path:
    """torch 2.14.1 (CUDA 13.0) and its nvidia-* wheels."""
    return _download(CACHE / "wheels-2.14.1", "torch==2.14.1", deps=True)


def _make_env(name: str, torch_spec: str, find_links: Path, extra: list[str]) -> Env:
    key = hashlib.sha256(json.dumps([torch_spec, BUILD_REQS, extra]).encode()).hexdigest()[:12]
    root = CACHE / f"env-{name}-{key}"
    with cache_lock(root.name):
        _fill_env(root, torch_spec, find_links, extra)
    version = run([root / "bin" / "python", "-c",
                   "import importlib.metadata as m; print(m.version('torch'))"]).stdout.strip()
    return Env(root, version)


def _fill_env(root: Path, torch_spec: str, find_links: Path, extra: list[str]) -> None:
    done = root / ".abistamp-test-env"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        uv = uv_bin()
        run([uv, "venv", "-q", "-p", sys.executable, "--seed", root])
        run([uv, "pip", "install", "-q", "-p", root / "bin" / "python", "--find-links",
             find_links, torch_spec, *BUILD_REQS, *extra], env=clean_env())
        done.write_text(torch_spec)


def simple_index(folder: Path) -> Path:
    """A PEP 503 index (folder/simple) over the wheels of folder, for uv's `match-runtime`."""

    root = folder / "simple"
    with cache_lock(f"{folder.name}-simple"):
        if not (root / ".done").exists():
            _write_simple(root, folder)
    return root


def _write_simple(root: Path, folder: Path) -> None:
    from packaging.utils import parse_wheel_filename

    projects: dict[str, list[Path]] = {}
    for wheel in sorted(folder.glob("*.whl")):
        projects.setdefault(str(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
    for name, files in projects.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="{f.resolve().as_uri()}">{f.name}</a><br>\n' for f in files)
        (root / name / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}"
                                                "</body></html>\n")
    (root / ".done").write_text("")
    return root


@pytest.fixture(scope="session")
def env213(torch213_wheels: Path) -> Env:
    return _make_env("213", "torch==2.13.0", torch213_wheels, [])


@pytest.fixture(scope="session")
def env214(torch214_wheels: Path) -> Env:
    return _make_env("214", "torch==2.14.1", torch214_wheels, [])


def private_envs(module: str) -> tuple[Any, Any]:
    """env213 and env214 fixtures of a module's own, for a module whose tests install and
    remove packages in them: on another worker, another module may be doing the same with the
    shared ones. uv links torch from its cache, so each costs seconds, once (kept in CACHE)."""

    @pytest.fixture(scope="module", name="env213")
    def own213(torch213_wheels: Path) -> Env:
        return _make_env(f"213-{module}", "torch==2.13.0", torch213_wheels, [])

    @pytest.fixture(scope="module", name="env214")
    def own214(torch214_wheels: Path) -> Env:
        return _make_env(f"214-{module}", "torch==2.14.1", torch214_wheels, [])

    return own213, own214


@pytest.fixture()
def probe(tmp_path: Path) -> Path:
    """The probe project (imports torch at build time, compiles nothing), vendoring abistamp."""
    return copy_project(DATA / "probe", tmp_path / "probe")


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """examples/tiny-ext, vendoring abistamp, as a user's checkout would be."""
    return copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")


@pytest.fixture()
def chdir(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)
