"""`abistamp build`: one source, several torch variants, each built in its own environment.

For every variant (a torch requirement, or an existing environment given with `--python`):

1. its key: a digest of the source's content, the torch requirement and where torch comes
   from, the Python version, the config settings and the build environment variables that
   change a build. A key already in the wheelhouse manifest is skipped: a file digest and a
   JSON read, no environment, no compiler.
2. a fresh virtual environment made by uv, with that torch, the project's build requirements,
   setuptools and packaging (abistamp itself is not installed: a private copy of this package
   goes on the build's `sys.path`, as an in-tree `backend-path` would);
3. a private copy of the source (a build folder left by one torch must not feed the next);
4. the PEP 517 hooks `get_requires_for_build_wheel` and `build_wheel` of `abistamp.backend`,
   run by the environment's python in the copy. abistamp is the backend whatever the project
   declares: a project's own backend is wrapped through `ABISTAMP_BACKEND`;
5. the wheel published into the wheelhouse (see wheelhouse.py).

Each variant's work folder is keyed and locked, so two runs that want the same variant build it
once; subprocesses run in their own process group and die with the run on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO, Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from abistamp import __version__
from abistamp.core.errors import AbistampError

from .wheelhouse import Wheelhouse, sha256_file

#: Environment variables that change what a build produces: recorded, and part of the key.
BUILD_ENV_PREFIXES = ("ABISTAMP_", "DS_BUILD_", "DS_ACCELERATOR", "DS_ENABLE_NINJA")
BUILD_ENV_NAMES = frozenset({
    "TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "CUDA_PATH", "ROCM_HOME", "CC", "CXX", "CFLAGS",
    "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "NVCC_APPEND_FLAGS", "NVCC_PREPEND_FLAGS",
    "SOURCE_DATE_EPOCH", "DS_BUILD_STRING",
})
# Not part of a source tree's content: version control, build outputs, caches, environments.
_SKIP_TOP = frozenset({"build", "dist", ".eggs"})
_SKIP_ANY = frozenset({".git", ".hg", ".svn", "__pycache__", ".tox", ".nox", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", "node_modules"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".o", ".obj", ".so", ".pyd", ".dylib", ".dll")
SDIST_SUFFIXES = (".tar.gz", ".tgz", ".zip")
DEFAULT_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip member can have
PEP518_DEFAULT_REQUIRES = ["setuptools>=40.8.0", "wheel"]
BACKEND_REQUIRES = ["setuptools>=64", "packaging>=22"]


class BuildFailed(Exception):
    """One variant failed; the message is one line."""


class Cancelled(Exception):
    pass


# --- sources ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "tree", "sdist" or "requirement"
    spec: str  # the absolute path, or the requirement as given
    path: Path | None  # the tree or sdist file; for a requirement, the sdist once fetched
    digest: str  # "sha256:..." of the content; "" for a requirement not fetched yet

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "spec": self.spec, "digest": self.digest}

    def key_part(self) -> dict[str, str]:
        # A requirement pins a release, whose sdist an index never changes: the key can be
        # known without fetching it, which keeps the skip check off the network.
        if self.kind == "requirement":
            return {"kind": self.kind, "spec": self.spec}
        return {"kind": self.kind, "digest": self.digest}


def resolve_source(text: str, skip: list[Path]) -> Source:
    path = Path(text).expanduser()
    if path.is_dir():
        if not ((path / "setup.py").is_file() or (path / "pyproject.toml").is_file()):
            raise AbistampError(f"SOURCE `{text}` is a folder with neither setup.py nor "
                                "pyproject.toml", "pass the root of a Python project")
        return Source("tree", str(path.resolve()), path.resolve(), tree_digest(path, skip))
    if path.is_file():
        if path.name.endswith(".whl"):
            raise AbistampError(f"SOURCE `{text}` is a wheel, which is already built",
                                "stamp it with `abistamp stamp`, or pass its sdist or tree")
        if not path.name.endswith(SDIST_SUFFIXES):
            raise AbistampError(f"SOURCE `{text}` is a file but not an sdist "
                                f"({', '.join(SDIST_SUFFIXES)})",
                                "pass a source tree, an sdist or `name==version`")
        return Source("sdist", str(path.resolve()), path.resolve(),
                      "sha256:" + sha256_file(path))
    try:
        req = Requirement(text)
    except InvalidRequirement:
        req = None
    specs = list(req.specifier) if req else []
    if (req is None or req.url or len(specs) != 1 or specs[0].operator not in ("==", "===")
            or specs[0].version.endswith(".*")):
        raise AbistampError(f"SOURCE `{text}` is neither a folder, an sdist file nor an exact "
                            "`name==version` requirement",
                            "pass a source tree, an sdist, or a pinned release such as "
                            "`deepspeed==0.19.8`")
    return Source("requirement", str(req), None, "")


def tree_digest(root: Path, skip: list[Path]) -> str:
    """A digest of a source tree's files (names and bytes), without build outputs.

    In a git checkout the commit goes in too: versions like DeepSpeed's `+<hash>` come from it.
    """
    h = hashlib.sha256()
    for rel, path in sorted(_tree_files(root, skip)):
        h.update(rel.encode() + b"\0")
        if path.is_symlink():
            h.update(b"L" + os.readlink(path).encode())
        else:
            h.update(hashlib.sha256(path.read_bytes()).digest())
    head = git_head(root)
    if head:
        h.update(b"git:" + head.encode())
    return "sha256:" + h.hexdigest()


def _tree_files(root: Path, skip: list[Path]) -> Iterator[tuple[str, Path]]:
    skip_set = {p.resolve() for p in skip}
    root = root.resolve()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            full = here / d
            if (_skip_dir(d, here == root) or full in skip_set
                    or (full / "pyvenv.cfg").is_file()):
                continue
            keep.append(d)
        dirs[:] = keep
        for f in files:
            if f.endswith(_SKIP_SUFFIXES) or (here == root and f == "pyvenv.cfg"):
                continue
            full = here / f
            yield full.relative_to(root).as_posix(), full


def _skip_dir(name: str, top: bool) -> bool:
    return name in _SKIP_ANY or name.endswith(".egg-info") or (top and name in _SKIP_TOP)


def git_head(root: Path) -> str | None:
    """The commit of a git checkout, read from .git without running git."""
    git = root / ".git"
    if git.is_file():  # a worktree or submodule: `gitdir: PATH`
        text = git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.split(":", 1)[1].strip()).resolve()
    head_file = git / "HEAD"
    if not head_file.is_file():
        return None
    head = head_file.read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    for base in (git, _common_dir(git)):
        ref_file = base / ref
        if ref_file.is_file():
            return ref_file.read_text(encoding="utf-8").strip()
        packed = base / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
    return head


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    if common.is_file():
        return (git / common.read_text(encoding="utf-8").strip()).resolve()
    return git


def copy_tree(src: Path, dest: Path, skip: list[Path]) -> None:
    """Copy a source tree without its build outputs; `.git` becomes a link to the original."""
    for rel, path in _tree_files(src, skip):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        else:
            shutil.copy2(path, target)
    if (src / ".git").exists():
        # Versions read from git (`+<hash>`) must come out as in the checkout.
        os.symlink((src / ".git").resolve(), dest / ".git")


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack an sdist into dest and return its project folder (the one top-level folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                for name in zf.namelist():
                    from abistamp.core.stamp import check_member_name

                    check_member_name(name, sdist)
                zf.extractall(dest)
        else:
            with tarfile.open(sdist) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(dest, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(dest)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
        raise BuildFailed(f"`{sdist.name}` cannot be unpacked: {e}") from None
    tops = [p for p in dest.iterdir()]
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return dest


def fetch_sdist(req: str, dest: Path, uv: str | None, work_root: Path) -> Path:
    """Download a release's sdist with pip, which reads the user's index configuration.

    pip is not always beside abistamp (`uv tool install` makes environments without it): then
    a small environment with pip is made by uv once, under the work folder.
    """
    import importlib.util

    python = Path(sys.executable)
    if importlib.util.find_spec("pip") is None:
        python = work_root / "pip-env" / "bin" / "python"
        if not python.exists():
            if uv is None:
                raise AbistampError(f"SOURCE `{req}` must be downloaded, and neither pip nor uv "
                                    "is installed here",
                                    "pip install 'abistamp[cli]', or download the sdist yourself "
                                    "(`pip download --no-deps --no-binary :all: NAME==VERSION`) "
                                    "and pass the file")
            made = subprocess.run([uv, "venv", "-q", "--seed", str(python.parent.parent)],
                                  capture_output=True, text=True, check=False)
            if made.returncode != 0:
                raise AbistampError(f"could not make an environment with pip to download `{req}`"
                                    f": {made.stderr.strip()[-300:]}",
                                    "download the sdist yourself and pass the file")
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), req]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = [p for p in dest.iterdir() if p.name.endswith(SDIST_SUFFIXES)]
    if proc.returncode != 0 or len(found) != 1:
        last = (proc.stderr.strip().splitlines() or ["no sdist was downloaded"])[-1]
        raise AbistampError(f"could not download the sdist of `{req}`: {last}",
                            "check the name and version, and pip's index configuration "
                            "(`pip config list`)")
    return found[0]


# --- the plan -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    torch: str | None  # a torch requirement, or None to use the environment's own torch
    python: Path  # the interpreter new environments are made from, or the existing one

    @property
    def existing(self) -> bool:
        return self.torch is None

    @property
    def name(self) -> str:
        return self.torch or f"--python {self.python}"


@dataclasses.dataclass
class Plan:
    source: Source
    wheelhouse: Wheelhouse
    variants: list[Variant]
    index_url: str | None = None
    extra_index_urls: list[str] = dataclasses.field(default_factory=list)
    find_links: list[str] = dataclasses.field(default_factory=list)
    config: dict[str, str | list[str]] = dataclasses.field(default_factory=dict)
    environ: dict[str, str] = dataclasses.field(default_factory=dict)  # --env and recorded
    rebuild: bool = False
    jobs: int = 1
    repair: str | None = None  # an auditwheel policy (or "auto") to repair each new wheel to
    work_root: Path = dataclasses.field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"abistamp-{os.getuid()}")

    def torch_from(self) -> dict[str, Any]:
        return {"index_url": self.index_url, "extra_index_urls": list(self.extra_index_urls),
                "find_links": list(self.find_links)}

    def index_args(self) -> list[str]:
        args = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def recorded_environ(explicit: dict[str, str]) -> dict[str, str]:
    """The build environment variables that go into the key: ours by name, and --env."""
    found = {k: v for k, v in os.environ.items()
             if k.startswith(BUILD_ENV_PREFIXES) or k in BUILD_ENV_NAMES}
    return dict(sorted({**found, **explicit}.items()))


def variant_key(plan: Plan, variant: Variant) -> tuple[str, dict[str, Any]]:
    from .envs import installed_torch, python_version

    fields: dict[str, Any] = {
        "source": plan.source.key_part(),
        "config": plan.config,
        "environ": plan.environ,
        "python": python_version(variant.python),
    }
    if plan.repair is not None:
        # A repaired wheel is another file than the plain one: not a skip of the other.
        fields["repair"] = plan.repair
    if variant.existing:
        torch = installed_torch(variant.python)
        if torch is None:
            raise AbistampError(f"`--python {variant.python}` has no torch installed",
                                "install torch there, or build with `--torch SPEC` instead")
        fields["torch"] = {"installed": torch.torch_version, "accelerator": torch.accelerator,
                           "environment": str(variant.python)}
    else:
        fields["torch"] = {"requirement": variant.torch, **plan.torch_from()}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), fields


@dataclasses.dataclass
class Outcome:
    variant: Variant
    status: str  # "built", "skipped", "failed" or "cancelled"
    note: str = ""
    entry: dict[str, Any] | None = None
    seconds: float = 0.0
    log: Path | None = None


Say = Callable[["Variant | None", str], None]


# --- running ------------------------------------------------------------------------------------


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

# setuptools first: from 71 on it puts its own copy of packaging on sys.path when none is
# installed, and that copy is enough (docs/cli.md, `--python`).
for module in ("setuptools", "packaging"):
    try:
        __import__(module)
    except ImportError:
        done({"error": f"the build environment `{sys.prefix}` lacks `{module}` (fix: install "
                       "setuptools>=64 and packaging>=22 into it, or setuptools>=71 alone, "
                       "which carries a copy of packaging)"})
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


class Matrix:
    def __init__(self, plan: Plan, say: Say) -> None:
        self.plan = plan
        self.say = say
        self.procs = Processes()
        self.keys: dict[Variant, tuple[str, dict[str, Any]]] = {}
        self._fetch_lock = threading.Lock()
        self._uv: str | None = None
        self.interrupted = False
        self.max_jobs = "1"

    def run(self) -> list[Outcome]:
        plan = self.plan
        outcomes: dict[Variant, Outcome] = {}
        todo: list[Variant] = []
        manifest = plan.wheelhouse.load()
        for variant in plan.variants:
            self.keys[variant] = variant_key(plan, variant)
            hit = None if plan.rebuild else plan.wheelhouse.lookup(self.keys[variant][0],
                                                                   manifest)
            if hit is not None:
                outcomes[variant] = Outcome(variant, "skipped", "already in the wheelhouse", hit)
                self.say(variant, f"skipped: already in the wheelhouse ({hit['wheel']})")
            else:
                todo.append(variant)
        if todo:
            self._uv = find_uv()
            outcomes.update(self._build_all(todo))
        return [outcomes[v] for v in plan.variants]

    def _build_all(self, todo: list[Variant]) -> dict[Variant, Outcome]:
        results: dict[Variant, Outcome] = {}
        jobs = max(1, min(self.plan.jobs, len(todo)))
        self.max_jobs = str(max(1, _cpu_count() // jobs))
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="abistamp-build")
        futures = {pool.submit(self._build_one, v): v for v in todo}
        restore = _sigterm_as_interrupt()
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
        except KeyboardInterrupt:
            self.interrupted = True
            self.say(None, "interrupted: stopping every build")
            for future in futures:
                future.cancel()
            self.procs.cancel()
            for future, variant in futures.items():
                try:
                    results[variant] = future.result()
                except BaseException:  # noqa: BLE001 - cancelled or failed on the way out
                    results[variant] = Outcome(variant, "cancelled", "interrupted")
        finally:
            restore()
            pool.shutdown(wait=True, cancel_futures=True)
        return results

    # --- one variant ------------------------------------------------------------------------

    def _build_one(self, variant: Variant) -> Outcome:
        plan = self.plan
        key, _ = self.keys[variant]
        short = key[:16]
        start = time.monotonic()
        plan.work_root.mkdir(parents=True, exist_ok=True)
        logs = plan.work_root / "logs"
        logs.mkdir(exist_ok=True)
        log_path = logs / f"{short}.log"
        work = plan.work_root / short
        try:
            with _key_lock(plan.work_root / f"{short}.lock",
                           lambda: self.say(variant, "waiting: another run is building this "
                                                     "variant")):
                hit = None if plan.rebuild else plan.wheelhouse.lookup(key)
                if hit is not None:
                    self.say(variant, f"skipped: another run built it ({hit['wheel']})")
                    return Outcome(variant, "skipped", "built by another run meanwhile", hit,
                                   time.monotonic() - start)
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                try:
                    with open(log_path, "w", encoding="utf-8") as log:
                        entry, note = self._build_in(variant, key, work, log, start)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        except Cancelled:
            return Outcome(variant, "cancelled", "interrupted", None,
                           time.monotonic() - start, log_path)
        except (BuildFailed, AbistampError) as e:
            text = e.one_line() if isinstance(e, AbistampError) else str(e)
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        except Exception as e:  # noqa: BLE001 - one variant's bug must not lose the others
            text = f"{type(e).__name__}: {e}"
            self.say(variant, f"FAILED: {text} (log: {log_path})")
            return Outcome(variant, "failed", text, None, time.monotonic() - start, log_path)
        seconds = time.monotonic() - start
        self.say(variant, f"built {entry['wheel']} in {seconds:.1f} s"
                 + ("" if note == "added" else f" ({note})"))
        return Outcome(variant, "built", note, entry, seconds, log_path)

    def _build_in(self, variant: Variant, key: str, work: Path, log: IO[str],
                  start: float) -> tuple[dict[str, Any], str]:
        plan = self.plan
        source = self._fetched_source(variant)
        project = self._prepare_source(source, work)
        requires, backend_env, backend_path = project_backend(project)
        env = self._environ(variant, work, backend_env)
        if variant.existing:
            python = variant.python
        else:
            python = self._make_env(variant, work, requires, log)
        config = self._effective_config(variant, project)
        out = work / "out"
        # Each hook in a fresh process, as PEP 517 asks: setup.py and what it imports keep
        # state in modules (DeepSpeed caches its accelerator), which must not leak from the
        # requirements query into the build.
        self.say(variant, "asking the backend for build requirements")
        answer = self._hook(python, project, "get_requires_for_build_wheel", config, env, work,
                            backend_path, log, out=out)
        if answer["missing"] and not variant.existing:
            more = answer["missing"]
            self.say(variant, f"installing what the backend asked for: {' '.join(more)}")
            self._uv_install(python, more, log)
        elif answer["missing"]:
            log.write(f"abistamp: not installed in the given environment: {answer['missing']}\n")
        self.say(variant, f"building the wheel (log: {log.name})")
        answer = self._hook(python, project, "build_wheel", config, env, work, backend_path, log,
                            out=out)
        name = answer["result"]
        wheel = out / str(name)
        record = _abi_record(wheel)
        entry: dict[str, Any] = {
            "key": key,
            "source": source.describe(),
            "torch": {
                "requirement": variant.torch,
                "environment": str(variant.python) if variant.existing else None,
                "version": record.get("torch"),
                "accelerator": record.get("accelerator"),
                "cuda": record.get("cuda"),
                **(plan.torch_from() if not variant.existing else {}),
            },
            "python": self.keys[variant][1]["python"],
            "config_settings": config,
            "environment": plan.environ,
            "built_at": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - start, 1),
            "abistamp": __version__,
        }
        if plan.repair is not None:
            wheel = self._repair(variant, wheel, python, env, work)
            entry["repair"] = _abi_record(wheel).get("repair")
        self.say(variant, "publishing into the wheelhouse")
        return plan.wheelhouse.publish(wheel, entry, replace=plan.rebuild,
                                       scratch=work / "restamp")

    def _repair(self, variant: Variant, wheel: Path, python: Path, env: dict[str, str],
                work: Path) -> Path:
        """auditwheel repair, before the wheel enters the wheelhouse (see repair.py); the build
        environment tells torch's libraries apart."""
        from .repair import repair_wheel, torch_libraries

        assert self.plan.repair is not None
        self.say(variant, f"repairing the wheel (auditwheel, {self.plan.repair})")
        libs = torch_libraries(python, _abi_record(wheel), explicit=True)
        notes: list[str] = []
        repaired = repair_wheel(wheel, work / "repaired", self.plan.repair, libs, notes.append,
                                source_date_epoch=env.get("SOURCE_DATE_EPOCH"))
        self.say(variant, f"repaired: {repaired.policy}; left to torch: "
                 f"{', '.join(sorted(repaired.left_to_torch)) or 'none'}; grafted: "
                 f"{', '.join(repaired.grafted) or 'none'}")
        return repaired.path

    def _fetched_source(self, variant: Variant) -> Source:
        plan = self.plan
        if plan.source.kind != "requirement" or plan.source.path is not None:
            return plan.source
        with self._fetch_lock:
            if plan.source.path is None:
                self.say(variant, f"downloading the sdist of {plan.source.spec}")
                folder = plan.work_root / "sdists" / hashlib.sha256(
                    plan.source.spec.encode()).hexdigest()[:16]
                shutil.rmtree(folder, ignore_errors=True)
                sdist = fetch_sdist(plan.source.spec, folder, self._uv, plan.work_root)
                plan.source = dataclasses.replace(plan.source, path=sdist,
                                                  digest="sha256:" + sha256_file(sdist))
        return plan.source

    def _prepare_source(self, source: Source, work: Path) -> Path:
        assert source.path is not None
        if source.kind == "tree":
            dest = work / "src"
            copy_tree(source.path, dest, [self.plan.wheelhouse.root, self.plan.work_root])
            return dest
        return unpack_sdist(source.path, work / "src")

    def _environ(self, variant: Variant, work: Path, backend_env: dict[str, str]
                 ) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        env.update(self.plan.environ)
        bindir = variant.python.parent if variant.existing else work / "venv" / "bin"
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
        if (bindir.parent / "pyvenv.cfg").is_file() or not variant.existing:
            env["VIRTUAL_ENV"] = str(bindir.parent)
        if not variant.existing:
            # The environment is ours and short-lived: let the first hook's imports (torch:
            # seconds) leave bytecode for the second, whatever the user's shell says.
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("MAX_JOBS", self.max_jobs)
        # Same source, same ABI, same work folder: same bytes. A rebuild then keeps its
        # filename instead of taking the next build number for a mere timestamp.
        env.setdefault("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH)
        for k, v in backend_env.items():
            env.setdefault(k, v)
        return env

    def _effective_config(self, variant: Variant, project: Path) -> dict[str, str | list[str]]:
        from abistamp.core.settings import FIELDS_BY_KEY, read_tool_table

        config = dict(self.plan.config)
        if variant.torch and "abistamp.torch" not in config:
            config["abistamp.torch"] = variant.torch  # the backend checks the torch it finds
        # Wheelhouse wheels are installed prebuilt, where a local label breaks no frontend's
        # contract and keeps each ABI's version apart: add it unless someone chose otherwise.
        table, _ = read_tool_table(project)
        if ("abistamp.local-version" not in config and "local-version" not in table
                and FIELDS_BY_KEY["local-version"].env not in os.environ):
            config["abistamp.local-version"] = "always"
        return config

    def _make_env(self, variant: Variant, work: Path, requires: list[str], log: IO[str]
                  ) -> Path:
        assert self._uv is not None and variant.torch is not None
        venv = work / "venv"
        self.say(variant, "creating the build environment")
        env = _uv_environ()
        if self.procs.run([self._uv, "venv", "-q", "-p", str(variant.python), str(venv)],
                          log=log, env=env) != 0:
            raise BuildFailed(f"`uv venv` failed; {_last_line(log)}")
        python = venv / "bin" / "python"
        reqs = [variant.torch, *requires, *[r for r in BACKEND_REQUIRES if r not in requires]]
        self.say(variant, f"installing {' '.join(reqs)}")
        self._uv_install(python, reqs, log)
        return python

    def _uv_install(self, python: Path, reqs: list[str], log: IO[str]) -> None:
        assert self._uv is not None
        cmd = [self._uv, "pip", "install", "-p", str(python), *self.plan.index_args(), *reqs]
        if self.procs.run(cmd, log=log, env=_uv_environ()) != 0:
            raise BuildFailed(f"`uv pip install` failed: {_last_line(log)}")

    def _hook(self, python: Path, project: Path, hook: str, config: dict[str, Any],
              env: dict[str, str], work: Path, backend_path: list[str], log: IO[str],
              out: Path) -> dict[str, Any]:
        from .envs import private_copy

        result_file = work / f"{hook}.json"
        spec = {"abistamp": str(private_copy()), "backend_path": backend_path, "hook": hook,
                "config": config, "out": str(out), "result": str(result_file),
                "parent": os.getpid()}
        rc = self.procs.run([str(python), "-c", RUNNER, json.dumps(spec)], log=log,
                            cwd=project, env=env)
        try:
            answer: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            answer = {}
        if "error" in answer:
            raise BuildFailed(str(answer["error"]))
        if rc != 0 or not answer:
            raise BuildFailed(f"the build failed: {_last_line(log)}")
        return answer


def project_backend(project: Path) -> tuple[list[str], dict[str, str], list[str]]:
    """A project's build requirements (less abistamp), the backend to wrap, its backend-path."""
    from abistamp.core.settings import read_pyproject

    pyproject = project / "pyproject.toml"
    data = read_pyproject(pyproject) if pyproject.is_file() else {}
    system = data.get("build-system")
    if not isinstance(system, dict):
        return list(PEP518_DEFAULT_REQUIRES), {}, []
    requires = [r for r in system.get("requires", PEP518_DEFAULT_REQUIRES)
                if _req_name(r) != "abistamp"]
    backend = system.get("build-backend")
    env = {}
    if isinstance(backend, str) and backend.split(":")[0].split(".")[0] != "abistamp":
        env["ABISTAMP_BACKEND"] = backend
    paths = [str((project / p).resolve()) for p in system.get("backend-path", [])]
    return requires, env, paths


def _req_name(text: str) -> str:
    try:
        return str(canonicalize_name(Requirement(text).name))
    except InvalidRequirement:
        return text


def _abi_record(wheel: Path) -> dict[str, Any]:
    from abistamp.core.stamp import read_wheel

    record = read_wheel(wheel).abi_record
    if not record:
        raise BuildFailed(f"`{wheel.name}` has no abistamp record")
    return record


def _uv_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}


def _last_line(log: IO[str]) -> str:
    """The most telling line of a log, for a one-line summary: the first compiler error, else
    the last `error:` line with its `cause:`/`hint:` continuation (uv), else the last line."""
    log.flush()
    try:
        with open(log.name, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f.read()[-20000:].splitlines() if ln.strip()]
    except OSError:
        return "see the log"
    for line in lines:
        if _COMPILER_ERROR.search(line):
            return line.strip()[:400]
    for i in range(len(lines) - 1, -1, -1):
        text = lines[i].strip()
        if text.lower().startswith(("error", "abistamp: error")):
            more = [ln.strip() for ln in lines[i + 1:i + 4] if ln.startswith((" ", "\t"))]
            return " ".join([text, *more])[:400]
    return lines[-1].strip()[:400] if lines else "no output"


_COMPILER_ERROR = re.compile(r":\d+:(\d+:)? (fatal )?error:")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _key_lock(path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Let SIGTERM stop the builds the way Ctrl-C does (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, old)

    return restore
