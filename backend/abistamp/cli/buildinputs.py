"""What one variant's build is given, decided before anything runs in its environment: a
private copy of the source, the project's build requirements and the backend abistamp wraps,
the environment variables of its hooks and the config settings they receive."""

from __future__ import annotations

import os
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .sources import Source, copy_tree, unpack_sdist
from .variants import Plan, Variant

DEFAULT_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip member can have
PEP518_DEFAULT_REQUIRES = ["setuptools>=40.8.0", "wheel"]


def prepare_source(plan: Plan, source: Source, work: Path) -> Path:
    """The variant's own copy of the source (a build folder left by one torch must not feed the
    next): a tree copied without its build outputs, or the sdist unpacked."""
    assert source.path is not None
    if source.kind == "tree":
        dest = work / "src"
        copy_tree(source.path, dest, [plan.wheelhouse.root, plan.work_root])
        return dest
    return unpack_sdist(source.path, work / "src")


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


def hook_environ(plan: Plan, variant: Variant, work: Path, backend_env: dict[str, str],
                 max_jobs: str) -> dict[str, str]:
    """The hooks' environment: the shell's, `--env`, the build environment first on PATH, and
    defaults for MAX_JOBS (the run's CPUs shared among its jobs) and SOURCE_DATE_EPOCH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(plan.environ)
    bindir = variant.python.parent if variant.existing else work / "venv" / "bin"
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    if (bindir.parent / "pyvenv.cfg").is_file() or not variant.existing:
        env["VIRTUAL_ENV"] = str(bindir.parent)
    if not variant.existing:
        # The environment is ours and short-lived: let the first hook's imports (torch:
        # seconds) leave bytecode for the second, whatever the user's shell says.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("MAX_JOBS", max_jobs)
    # Same source, same ABI, same work folder: same bytes. A rebuild then keeps its
    # filename instead of taking the next build number for a mere timestamp.
    env.setdefault("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH)
    for k, v in backend_env.items():
        env.setdefault(k, v)
    return env


def effective_config(plan: Plan, variant: Variant, project: Path) -> dict[str, str | list[str]]:
    """The config settings the hooks receive: `-C`, the variant's torch, and a local version
    label unless someone chose otherwise."""
    from abistamp.core.settings import FIELDS_BY_KEY, read_tool_table

    config = dict(plan.config)
    if variant.torch and "abistamp.torch" not in config:
        config["abistamp.torch"] = variant.torch  # the backend checks the torch it finds
    # Wheelhouse wheels are installed prebuilt, where a local label breaks no frontend's
    # contract and keeps each ABI's version apart: add it unless someone chose otherwise.
    table, _ = read_tool_table(project)
    if ("abistamp.local-version" not in config and "local-version" not in table
            and FIELDS_BY_KEY["local-version"].env not in os.environ):
        config["abistamp.local-version"] = "always"
    return config
