"""Recipe 1 of docs/deepspeed.md as written, with the probe in place of DeepSpeed: abistamp's
wheel built from the checkout, one environment per torch with abistamp installed, `uv build
--wheel --no-build-isolation --out-dir wheelhouse/<label>` in each, then `abistamp uv-config`
on that folder (no manifest, no pages) and real `uv lock` / `uv sync` switching between the two
torches; `abistamp index` turning the folder into a wheelhouse; and what cannot be known from
such a folder refused with the flag that supplies it.

The only change to the recipe: torch comes from this machine's local folders (`--find-links`,
and `--torch-index` given a folder) instead of download.pytorch.org.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from .cli_support import cli
from .conftest import DATA, EXAMPLES, Result, copy_project, run, uv_bin

pytest_plugins = ["tests.abistamp_dist"]

CPU = "abistamp_probe-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl"
CUDA = "abistamp_probe-1.0.0+pt214cu130-1pt214cu130-py3-none-any.whl"
EXTRAS = ["--extra", "cpu=pt213cpu", "--extra", "cu130=pt214cu130"]
BUILT = "import json, probe._built as b, torch; print(json.dumps([b.TORCH, torch.__version__]))"


@pytest.fixture(scope="module")
def recipe(abistamp_dist: Path, torch213_wheels: Path, torch214_wheels: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder Recipe 1 fills: wheelhouse/pt213cpu and wheelhouse/pt214cu130."""
    base = tmp_path_factory.mktemp("recipe1")
    checkout = copy_project(DATA / "probe", base / "checkout", vendor_backend=False)
    shutil.copyfile(EXAMPLES / "deepspeed" / "pyproject.toml", checkout / "pyproject.toml")
    for name, torch, wheels, label in ((".venv-pt213", "torch==2.13.0", torch213_wheels,
                                        "pt213cpu"),
                                       (".venv-pt214", "torch==2.14.1", torch214_wheels,
                                        "pt214cu130")):
        venv = base / name
        run([uv_bin(), "venv", "-q", "-p", sys.executable, venv], cwd=base)
        run([uv_bin(), "pip", "install", "-q", "-p", venv, "--find-links", wheels, torch,
             "setuptools", "packaging", "ninja", "--find-links", abistamp_dist, "abistamp"],
            cwd=base)
        run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", venv, "--out-dir",
             base / "wheelhouse" / label, checkout], cwd=base)
    return base / "wheelhouse"


def app_project(folder: Path, config: str, torch214_wheels: Path) -> Path:
    """A uv project with the printed configuration; torch 2.14.1's own dependencies come from
    the local folder too, as a last, non-explicit index."""
    folder.mkdir(parents=True)
    local = (f'\n[[tool.uv.index]]\nname = "local-torch-deps"\nurl = '
             f'"{torch214_wheels.resolve().as_uri()}"\nformat = "flat"\n')
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = "==3.11.*"\n'
        f"dependencies = []\n\n{config}{local}")
    return folder


def torch_indexes(torch213_wheels: Path, torch214_wheels: Path) -> list[str | Path]:
    return ["--torch-index", f"cpu={torch213_wheels}", "--torch-index",
            f"cu130={torch214_wheels}"]


def one_error(result: Result) -> str:
    assert result.returncode == 2, result.output
    assert result.stdout == "", "nothing is printed that could be pasted"
    (line,) = result.stderr.splitlines()
    return line


@pytest.mark.slow
@pytest.mark.cuda
def test_recipe_1_then_uv_config_lock_and_sync(recipe: Path, torch213_wheels: Path,
                                              torch214_wheels: Path, tmp_path: Path) -> None:
    assert sorted(p.relative_to(recipe).as_posix() for p in recipe.glob("*/*.whl")) == [
        f"pt213cpu/{CPU}", f"pt214cu130/{CUDA}"]
    assert not (recipe / "abistamp-wheelhouse.json").exists()
    # Where torch comes from is in no wheel: refused, naming the flag, rather than printed
    # without torch's index (a configuration whose `uv lock` finds no torch==2.13.0+cpu).
    line = one_error(cli("uv-config", recipe, *EXTRAS, check=False))
    assert line.startswith("abistamp: error: where torch 2.13.0+cpu for the extra `cpu` "
                           "(`pt213cpu`) comes from is not known"), line
    assert f"`{recipe.resolve()}` has no `abistamp-wheelhouse.json`" in line
    assert "(fix: pass `--torch-index cpu=https://download.pytorch.org/whl/cpu`" in line
    assert "`--no-torch`" in line

    config = cli("uv-config", recipe, *EXTRAS,
                 *torch_indexes(torch213_wheels, torch214_wheels)).stdout
    assert 'cpu = ["torch==2.13.0+cpu", "abistamp-probe"]' in config
    assert 'cu130 = ["torch==2.14.1", "abistamp-probe"]' in config
    for label, wheels in (("pt213cpu", torch213_wheels), ("pt214cu130", torch214_wheels)):
        assert (f'name = "abistamp-{label}"\nurl = "{(recipe / label).resolve().as_uri()}/"\n'
                'format = "flat"') in config
        assert f'name = "torch-{label}"\nurl = "{wheels.resolve().as_uri()}"' in config
    app = app_project(tmp_path / "app", config, torch214_wheels)
    run([uv_bin(), "lock"], cwd=app)
    run([uv_bin(), "lock", "--check"], cwd=app)
    python = app / ".venv" / "bin" / "python"
    for extra, label, torch in (("cpu", "pt213cpu", "2.13.0+cpu"),
                                ("cu130", "pt214cu130", "2.14.1"),
                                ("cpu", "pt213cpu", "2.13.0+cpu")):
        sync = run([uv_bin(), "sync", "--extra", extra], cwd=app)
        assert "Built" not in sync.output, "prebuilt wheels only"
        assert f"+ abistamp-probe==1.0.0+{label}" in sync.stderr, sync.stderr
        built_with, runtime = json.loads(run([python, "-c", BUILT]).stdout)
        assert built_with == torch and runtime.startswith(torch), (built_with, runtime)
        check = cli("check", "--python", python)
        assert re.search(rf"abistamp-probe\s+1\.0\.0\+{label}\s.*\sok$", check.stdout,
                         re.MULTILINE), check.stdout


@pytest.mark.slow
@pytest.mark.cuda
def test_pages_a_hand_filled_folder_lacks_are_asked_for(recipe: Path, torch213_wheels: Path,
                                                        torch214_wheels: Path) -> None:
    torch = torch_indexes(torch213_wheels, torch214_wheels)
    fix = f"(fix: write the wheelhouse's pages and manifest with `abistamp index {recipe}"
    for extra, page in ((["--format", "simple"], "pt213cpu/simple/abistamp-probe/index.html"),
                        (["--base-url", "https://wheels.example.com/ds"],
                         "pt213cpu/index.html"),
                        (["--single-index"], "simple/abistamp-probe/index.html")):
        line = one_error(cli("uv-config", recipe, *EXTRAS, *torch, *extra, check=False))
        assert f"`{recipe.resolve() / page}` does not exist" in line, line
        assert fix in line, line


@pytest.mark.slow
@pytest.mark.cuda
def test_index_makes_a_wheelhouse_of_the_hand_filled_folder(
        recipe: Path, torch213_wheels: Path, torch214_wheels: Path, tmp_path: Path) -> None:
    public = tmp_path / "public"
    result = cli("index", recipe, "-o", public)
    assert f"{recipe.resolve()}: 2 wheel(s) added, 0 already there" in result.stdout
    assert "2 wheel(s) in 2 ABI folder(s) (pt213cpu, pt214cu130)" in result.stdout
    data = json.loads((public / "abistamp-wheelhouse.json").read_text())
    assert sorted(data["files"]) == [f"pt213cpu/{CPU}", f"pt214cu130/{CUDA}"]
    assert data["variants"] == {}, "no build of abistamp's made them: no variant keys"
    for page in ("pt213cpu/index.html", "pt214cu130/simple/abistamp-probe/index.html",
                 "simple/abistamp-probe/index.html", "all.html"):
        assert (public / page).is_file(), page
    # A single ABI folder, as `uv build --out-dir` left it, is an input too; so is the folder
    # itself as OUT (its pages written in place).
    single = cli("index", recipe / "pt213cpu", "-o", tmp_path / "one")
    assert "1 wheel(s) in 1 ABI folder(s) (pt213cpu)" in single.stdout
    in_place = shutil.copytree(recipe, tmp_path / "in-place")
    cli("index", in_place, "-o", in_place)
    assert (in_place / "pt214cu130" / "simple" / "abistamp-probe" / "index.html").is_file()
    # The PEP 503 layout of the result locks.
    config = cli("uv-config", public, *EXTRAS, "--format", "simple",
                 *torch_indexes(torch213_wheels, torch214_wheels)).stdout
    assert f'url = "{(public / "pt213cpu" / "simple").resolve().as_uri()}/"' in config
    app = app_project(tmp_path / "app", config, torch214_wheels)
    run([uv_bin(), "lock"], cwd=app)
    lock = (app / "uv.lock").read_text()
    for label in ("pt213cpu", "pt214cu130"):
        assert f'name = "abistamp-probe"\nversion = "1.0.0+{label}"' in lock


@pytest.mark.slow
@pytest.mark.cuda
def test_a_wheel_that_the_folder_cannot_vouch_for_is_refused(recipe: Path,
                                                            torch213_wheels: Path,
                                                            tmp_path: Path) -> None:
    torch = ["--torch-index", str(torch213_wheels)]
    moved = shutil.copytree(recipe, tmp_path / "moved")
    (moved / "pt214cu130" / CUDA).rename(moved / "pt213cpu" / CUDA)
    line = one_error(cli("uv-config", moved, "--extra", "cpu=pt213cpu", *torch, check=False))
    assert (f"`{moved.resolve() / 'pt213cpu' / CUDA}` is in the ABI folder `pt213cpu` but its "
            "ABI record says `pt214cu130`") in line, line
    assert "(fix: move it to a `pt214cu130/` folder" in line
    # `index` refuses it the same way, and writes nothing.
    line = one_error(cli("index", moved, "-o", tmp_path / "out", check=False))
    assert "is in the ABI folder `pt213cpu` but its ABI record says `pt214cu130`" in line
    assert not (tmp_path / "out").exists()
    # A wheel with no ABI record: nothing says which torch it needs.
    unstamped = shutil.copytree(recipe, tmp_path / "unstamped")
    plain = unstamped / "pt213cpu" / "plain-1.0-py3-none-any.whl"
    with zipfile.ZipFile(plain, "w") as zf:
        for name, text in (("METADATA", "Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n"),
                           ("WHEEL", ("Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")), ("RECORD", "")):
            zf.writestr(f"plain-1.0.dist-info/{name}", text)
    line = one_error(cli("uv-config", unstamped, "--extra", "cpu=pt213cpu", *torch,
                         check=False))
    assert f"`{plain.resolve()}` carries no abistamp ABI record, so the torch it needs is " \
           "unknown (fix: stamp it (`abistamp stamp plain-1.0-py3-none-any.whl --python ENV" in line
    line = one_error(cli("index", unstamped / "pt213cpu", "-o", tmp_path / "out2", check=False))
    assert f"`{plain.resolve()}` carries no abistamp ABI record" in line
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
@pytest.mark.cuda
def test_single_index_of_two_abis_of_one_torch_names_the_cause(
        recipe: Path, torch213_wheels: Path, tmp_path: Path) -> None:
    """Two ABI folders built against the same torch (here the CPU wheel re-stamped under a
    second label): their exact pins are identical, so the fix is routing, not exact pins."""
    cpu = recipe / "pt213cpu" / CPU
    cli("stamp", cpu, "--abi-from", cpu, "-C", "abistamp.label=pt{major}{minor}cpuv3", "-C",
        "abistamp.pin=exact", "-o", tmp_path / "v3")
    (other,) = (tmp_path / "v3").glob("*.whl")
    assert other.name == "abistamp_probe-1.0.0+pt213cpuv3-1pt213cpuv3-py3-none-any.whl"
    inputs = tmp_path / "wh"
    (inputs / "pt213cpu").mkdir(parents=True)
    (inputs / "pt213cpuv3").mkdir()
    shutil.copyfile(cpu, inputs / "pt213cpu" / CPU)
    shutil.copyfile(other, inputs / "pt213cpuv3" / other.name)
    cli("index", inputs, "-o", inputs)
    line = one_error(cli("uv-config", inputs, "--single-index", "--extra", "cpu=pt213cpu",
                         "--extra", "v3=pt213cpuv3", "--torch-index", str(torch213_wheels),
                         check=False))
    assert "it has `torch==2.13.0+cpu`, which torch 2.13.0+cpu satisfies too" in line, line
    assert ("(fix: `pt213cpu` and `pt213cpuv3` were built against the same torch 2.13.0+cpu, "
            "so no torch pin can tell them apart in one index: route each extra to its ABI "
            "folder (leave out `--single-index`))") in line, line
    assert "exact pins" not in line


def test_single_index_fix_matches_the_cause() -> None:
    """Each reason a pin can accept another extra's torch, and its own fix."""
    from packaging.requirements import Requirement

    from abistamp.cli.uvroutes import Route, _single_index_fix

    def route(label: str, torch: str) -> Route:
        return Route(label, label, {}, torch, None, [])

    cases = [
        (route("a", "2.13.0+cpu"), route("b", "2.14.1"), [],
         "stamp the wheels with a torch pin (`-C abistamp.pin=exact`), or route each extra"),
        (route("a", "2.5.1+cu121"), route("b", "2.5.1+cu124"), ["torch==2.5.*"],
         ("stamp the wheels with exact pins (`-C abistamp.pin=exact`: the pin then carries "
         "torch's local label), or route each extra")),
        (route("a", "2.14.1"), route("b", "2.14.1+cu130"), ["torch==2.14.1"],
         ("the pin is exact already, but torch 2.14.1 has no local label for it to carry, so it "
         "accepts torch 2.14.1+cu130 too: route each extra")),
        (route("x", "2.13.0+cpu"), route("a", "2.13.0+cpu"), ["torch==2.13.0+cpu"],
         ("`a` and `x` were built against the same torch 2.13.0+cpu, so no torch pin can tell "
         "them apart in one index: route each extra")),
    ]
    for a, b, pins, fix in cases:
        assert _single_index_fix(a, b, [Requirement(p) for p in pins]).startswith(fix), fix


def test_torch_index_arguments(tmp_path: Path) -> None:
    """Read before any wheel is: a bad `--torch-index` is the first thing said."""
    (tmp_path / "torch-wheels").mkdir()
    for args, message in (
            (["--torch-index", "cuda=https://x/cu130"],
             ("`--torch-index cuda=https://x/cu130` names the extra `cuda`, which no `--extra` "
             "declares (fix: use one of: cpu)")),
            (["--torch-index", "https://x/cpu", "--torch-index", "https://y/cpu"],
             "`--torch-index` is given twice for every extra"),
            (["--torch-index", "cpu=nowhere"],
             "`--torch-index cpu=nowhere`: `nowhere` is neither a URL nor a folder")):
        line = one_error(cli("uv-config", "wh", "--extra", "cpu=pt213cpu", *args, cwd=tmp_path,
                             check=False))
        assert message in line, line
    from abistamp.cli.uvroutes import parse_torch_indexes

    given = parse_torch_indexes([f"cpu={tmp_path / 'torch-wheels'}", "https://x/simple?a=b"],
                                [("cpu", "pt213cpu"), ("cu130", "pt214cu130")])
    assert given == {"cpu": ((tmp_path / "torch-wheels").resolve().as_uri(), "flat"),
                     None: ("https://x/simple?a=b", "simple")}


@pytest.mark.slow
@pytest.mark.cuda
def test_source_build_config_takes_the_torch_index_given(recipe: Path) -> None:
    """match-runtime needs torch from a PEP 503 index: `--torch-index URL` supplies one."""
    config = cli("uv-config", recipe, "--source-build", *EXTRAS, "--torch-index",
                 "https://download.pytorch.org/whl/cpu").stdout
    assert 'abistamp-probe = [{ requirement = "torch", match-runtime = true }]' in config
    assert ('[[tool.uv.index]]\nname = "torch"\nurl = "https://download.pytorch.org/whl/cpu"\n'
            'explicit = true') in config
    assert 'format = "flat"' not in config and "abistamp-pt213cpu" not in config
