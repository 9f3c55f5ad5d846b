"""abistamp as a build requirement before it is on a registry: each way that
examples/deepspeed/pyproject.toml documents, with real frontends, the probe (which imports torch
at build time, as DeepSpeed's setup.py does) standing in for DeepSpeed.

The example file is used as it is, or changed exactly as its comments say.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from .conftest import DATA, EXAMPLES, Env, copy_project, read_record, run, uv_bin
from .dist_support import abistamp_wheel, checkout_copy

pytest_plugins = ["tests.abistamp_dist"]

EXAMPLE = EXAMPLES / "deepspeed" / "pyproject.toml"
REQUIRES = 'requires = ["abistamp", "setuptools>=64", "packaging>=22"]'
IN_TREE = 'requires = ["setuptools>=64", "packaging>=22"]'
TORCH = ["-C", "abistamp.torch=torch==2.13.0"]


def example_project(dest: Path, *, in_tree: bool = False, requires: str | None = None) -> Path:
    """The probe, with the DeepSpeed example as its pyproject.toml."""
    project = copy_project(DATA / "probe", dest, vendor_backend=in_tree)
    text = EXAMPLE.read_text()
    assert REQUIRES in text
    if in_tree:
        # As the comment says: "set `requires = [...]` and add `backend-path = ["backend"]`".
        assert f"`{IN_TREE}` and add `backend-path = [\"backend\"]`" in text
        text = text.replace(REQUIRES, f'{IN_TREE}\nbackend-path = ["backend"]')
    if requires:
        text = text.replace(REQUIRES, requires)
    (project / "pyproject.toml").write_text(text)
    return project


def assert_stamped(out: Path, *, local: bool) -> Path:
    (wheel,) = out.glob("*.whl")
    version = "1.0.0+pt213cpu" if local else "1.0.0"
    assert wheel.name == f"abistamp_probe-{version}-1pt213cpu-py3-none-any.whl"
    record = read_record(wheel)
    assert (record["torch"], record["label"], record["pin"]) == (
        "2.13.0+cpu", "pt213cpu", "torch==2.13.0+cpu")
    with zipfile.ZipFile(wheel) as zf:
        assert "TORCH = '2.13.0+cpu'" in zf.read("probe/_built.py").decode()
    return wheel


def uv_build(project: Path, out: Path, *args: str | Path) -> str:
    return run([uv_bin(), "build", "--wheel", "--out-dir", out, *args, *TORCH, project]).stderr


@pytest.mark.slow
def test_uv_build_and_python_m_build_make_abistamp_s_wheel(abistamp_dist: Path,
                                                           tmp_path: Path) -> None:
    """`uv build` (the session fixture: sdist, then the wheel from it) and `python -m build
    --wheel` of a checkout make one wheel, with the backend, the command line and the runtime
    requirements."""
    by_uv = abistamp_wheel(abistamp_dist)
    source = checkout_copy(tmp_path / "abistamp")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", source])
    by_build = abistamp_wheel(tmp_path / "dist")
    assert by_build.name == by_uv.name
    members = []
    for wheel in (by_uv, by_build):
        with zipfile.ZipFile(wheel) as zf:
            names = sorted(zf.namelist())
            metadata = HeaderParser().parsestr(zf.read(next(
                n for n in names if n.endswith(".dist-info/METADATA"))).decode())
            entry_points = zf.read(next(n for n in names
                                        if n.endswith(".dist-info/entry_points.txt"))).decode()
        assert {"abistamp/backend.py", "abistamp/core/stamp.py", "abistamp/cli/main.py"} <= set(
            names)
        assert {"setuptools>=64", "packaging>=22"} <= set(metadata.get_all("Requires-Dist"))
        assert "abistamp = abistamp.cli:main" in entry_points
        members.append(names)
    assert members[0] == members[1]


@pytest.mark.slow
def test_find_links_to_abistamp_s_wheel(abistamp_dist: Path, torch213_wheels: Path,
                                        tmp_path: Path) -> None:
    """The example as it is; abistamp from `--find-links` (pip: test_build_requirement_pip.py,
    a module of its own so that the two spread over the suite's workers)."""
    project = example_project(tmp_path / "probe")
    uv_build(project, tmp_path / "uv", "--find-links", abistamp_dist, "--find-links",
             torch213_wheels)
    assert_stamped(tmp_path / "uv", local=True)


@pytest.mark.slow
def test_direct_reference_to_abistamp_s_wheel(abistamp_dist: Path, torch213_wheels: Path,
                                              tmp_path: Path) -> None:
    """`abistamp @ file:///...whl` in `requires`: no `--find-links` for abistamp at all."""
    url = abistamp_wheel(abistamp_dist).resolve().as_uri()
    project = example_project(
        tmp_path / "probe",
        requires=f'requires = ["abistamp @ {url}", "setuptools>=64", "packaging>=22"]')
    uv_build(project, tmp_path / "uv", "--find-links", torch213_wheels)
    assert_stamped(tmp_path / "uv", local=True)


@pytest.mark.slow
def test_in_tree_copy_with_backend_path(env213: Env, tmp_path: Path) -> None:
    """The copy in `backend/` is what builds: the environment has no abistamp installed.
    (Isolation is not what this way is about: torch's environment, with setuptools and
    packaging, is what Recipe 1 builds in.)"""
    assert env213.py("import importlib.util as u; print(u.find_spec('abistamp'))"
                     ).stdout.strip() == "None"
    project = example_project(tmp_path / "probe", in_tree=True)
    log = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
               "--out-dir", tmp_path / "uv", project]).stderr
    assert "abistamp: wrote abistamp_probe-1.0.0+pt213cpu" in log
    assert_stamped(tmp_path / "uv", local=True)


def test_the_example_declares_the_name_and_says_how_to_build_without_a_registry() -> None:
    """The example declares plain `abistamp` (what a release on a registry will satisfy), and
    its comments carry each way the tests above take."""
    import tomllib

    text = EXAMPLE.read_text()
    system = tomllib.loads(text)["build-system"]
    assert system == {"requires": ["abistamp", "setuptools>=64", "packaging>=22"],
                      "build-backend": "abistamp.backend"}
    for way in ("uv build --wheel --find-links", "pip wheel --no-deps --find-links",
                '"abistamp @ file:///', 'backend-path = ["backend"]', "python -m build"):
        assert way in text, way
