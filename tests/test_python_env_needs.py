"""What an existing environment given to `abistamp build --python` must hold (docs/cli.md).

torch 2.13 requires setuptools>=77.0.3, and setuptools from 71 on puts its own copy of
packaging on `sys.path` when none is installed: an environment with torch and nothing else
builds. setuptools 70 has no such fallback, and the build says what to install.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .cli_support import cli, summary_rows
from .conftest import DATA, copy_project, read_record, run, uv_bin


def torch_env(dest: Path, torch213_wheels: Path, *setuptools: str) -> Path:
    """A venv with torch 2.13.0+cpu, the setuptools asked for (default: torch's own) and no
    packaging. The old setuptools goes in with --no-deps, past torch's own requirement."""
    run([uv_bin(), "venv", "-q", "-p", sys.executable, dest])
    python = dest / "bin" / "python"
    run([uv_bin(), "pip", "install", "-q", "-p", python, "--find-links", torch213_wheels,
         "torch==2.13.0"])
    if setuptools:
        run([uv_bin(), "pip", "install", "-q", "-p", python, "--no-deps", *setuptools])
    run([uv_bin(), "pip", "uninstall", "-q", "-p", python, "packaging"], check=False)
    return python


WHERE = ("import importlib.util as u, importlib.metadata as m, setuptools; "
         "print(m.version('setuptools'), u.find_spec('packaging').origin)")


@pytest.mark.slow
def test_torch_and_its_setuptools_are_enough(torch213_wheels: Path, tmp_path: Path) -> None:
    python = torch_env(tmp_path / "env", torch213_wheels)
    no_packaging = run([python, "-c", "import packaging"], check=False)
    assert no_packaging.returncode == 1 and "No module named 'packaging'" in no_packaging.stderr
    version, origin = run([python, "-c", WHERE]).stdout.split()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (77, 0)
    assert "/setuptools/_vendor/packaging/" in origin, origin
    probe = copy_project(DATA / "probe", tmp_path / "probe", vendor_backend=False)
    result = cli("build", probe, "--python", python, "-o", tmp_path / "wh", "--work-dir",
                 tmp_path / "work")
    (row,) = summary_rows(result.stdout).values()
    assert row[:2] == ["built", "pt213cpu"], result.output
    (wheel,) = (tmp_path / "wh" / "pt213cpu").glob("*.whl")
    record = read_record(wheel)
    assert (record["torch"], record["pin"]) == ("2.13.0+cpu", "torch==2.13.0+cpu")


@pytest.mark.slow
def test_setuptools_without_its_own_packaging_says_what_to_install(
        torch213_wheels: Path, tmp_path: Path) -> None:
    python = torch_env(tmp_path / "env", torch213_wheels, "setuptools==70.3.0")
    assert run([python, "-c", "import setuptools; print(setuptools.__version__)"]
               ).stdout.strip() == "70.3.0"
    probe = copy_project(DATA / "probe", tmp_path / "probe", vendor_backend=False)
    result = cli("build", probe, "--python", python, "-o", tmp_path / "wh", "--work-dir",
                 tmp_path / "work", check=False)
    assert result.returncode == 1, result.output
    log = next((tmp_path / "work" / "logs").glob("*.log")).read_text()
    assert (f"the build environment `{tmp_path / 'env'}` lacks `packaging` (fix: install "
            "setuptools>=64 and packaging>=22 into it, or setuptools>=71 alone, which carries "
            "a copy of packaging)") in result.output + log
    assert not list(tmp_path.glob("wh/*/*.whl"))
