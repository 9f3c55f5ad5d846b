"""`abistamp matrix` and the CI examples: the cells a CI system gets from a declaration, the
errors for bad ones, the GitHub Actions workflow checked against its schema offline, and the
workflow's own step commands run on this machine for two cells, then merged."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # the `test` extra brings pyyaml

from abistamp.cli.main import build_parser
from abistamp.cli.matrix_settings import (
    ACCELERATOR_FIELDS,
    MATRIX_FIELDS,
    Accelerator,
    MatrixSettings,
    matrix_reference_markdown,
)
from abistamp.core.errors import AbistampError

from .cli_support import cli
from .conftest import EXAMPLES, REPO, clean_env, copy_project, need, run

CI = EXAMPLES / "ci"
WORKFLOW = CI / "github-actions.yml"
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"

SMALL = """\
[project]
name = "demo"
version = "1.0"

[tool.abistamp.matrix]
torch = ["2.13.0", "2.14.1"]
python = ["3.11"]
accelerators = { cpu = "https://download.pytorch.org/whl/cpu", cu130 = { torch-index = "https://download.pytorch.org/whl/cu130", runs-on = "gpu-builder", env = { TORCH_CUDA_ARCH_LIST = "9.0" } } }
exclude = [{ torch = "2.13.0", accelerator = "cu130" }]
env = { DS_BUILD_CPU_ADAM = "1" }
config-settings = { "abistamp.build-number" = "2" }
"""


def project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def matrix_json(folder: Path, *args: str) -> Any:
    result = cli("matrix", *args, cwd=folder)
    assert result.stdout.count("\n") == 1, "one line: GitHub's name=value outputs need that"
    return json.loads(result.stdout)


def cell(torch: str, acc: str, runs_on: str, index: str, env: list[str]) -> dict[str, Any]:
    """The cell a reader would write by hand for SMALL."""
    name = f"torch{torch}-{acc}-py3.11"
    args = ["build", ".", "--torch", f"torch=={torch}", "--extra-index-url", index, *env,
            "-C", "abistamp.build-number=2", "-o", "wheelhouse"]
    return {"name": name, "torch": torch, "torch_requirement": f"torch=={torch}",
            "accelerator": acc, "python": "3.11", "python_tag": "cp311", "runs_on": runs_on,
            "wheelhouse": "wheelhouse", "artifact": f"wheelhouse-{name}", "index_url": "",
            "extra_index_urls": [index], "find_links": [], "args": args,
            "args_shell": " ".join(args)}


def test_github_include_form_of_a_small_table(tmp_path: Path) -> None:
    cpu, cu = "https://download.pytorch.org/whl/cpu", "https://download.pytorch.org/whl/cu130"
    ds = ["--env", "DS_BUILD_CPU_ADAM=1"]
    expected = {"include": [
        cell("2.13.0", "cpu", "ubuntu-latest", cpu, ds),
        cell("2.14.1", "cpu", "ubuntu-latest", cpu, ds),
        cell("2.14.1", "cu130", "gpu-builder", cu, [*ds, "--env", "TORCH_CUDA_ARCH_LIST=9.0"]),
    ]}
    assert matrix_json(project(tmp_path, SMALL)) == expected
    # The plain list for other CI systems holds the same cells.
    assert matrix_json(tmp_path, "--format", "list") == expected["include"]


def test_each_cells_arguments_are_what_abistamp_build_accepts(tmp_path: Path) -> None:
    cells = matrix_json(project(tmp_path, SMALL))["include"]
    for c in cells:
        assert shlex.split(c["args_shell"]) == c["args"]
        parsed = build_parser().parse_args(c["args"])  # the real `abistamp build` parser
        assert parsed.command == "build" and parsed.torch == [c["torch_requirement"]]
        assert parsed.wheelhouse == c["wheelhouse"]
        assert parsed.config_setting == ["abistamp.build-number=2"]
    assert len({c["name"] for c in cells}) == len({c["artifact"] for c in cells}) == len(cells)


AXES = """\
[tool.abistamp.matrix]
torch = ["2.12.1", "2.13.0", "2.14.1"]
python = ["3.10", "3.11", "3.12", "3.13"]
accelerators = { cpu = "https://x/cpu", cu126 = "https://x/cu126", cu130 = "https://x/cu130" }
exclude = [{ torch = "2.12.1", accelerator = "cu130" }, { python = "3.10" }]
"""


def test_cell_count_and_excludes(tmp_path: Path) -> None:
    cells = matrix_json(project(tmp_path, AXES))["include"]
    got = [(c["torch"], c["accelerator"], c["python"]) for c in cells]
    everything = list(itertools.product(["2.12.1", "2.13.0", "2.14.1"],
                                        ["cpu", "cu126", "cu130"],
                                        ["3.10", "3.11", "3.12", "3.13"]))
    assert len(everything) == 36
    kept = [t for t in everything
            if not (t[0] == "2.12.1" and t[1] == "cu130") and t[2] != "3.10"]
    assert len(kept) == 36 - 4 - 9 + 1 == 24
    assert got == kept  # same cells, in declared order: torch, then accelerator, then python
    assert ("2.12.1", "cu130", "3.11") not in got and not any(p == "3.10" for *_, p in got)
    # A part of the matrix, for one machine or one workflow job.
    part = matrix_json(tmp_path, "--format", "list", "--only", "accelerator=cu126",
                       "--only", "python=3.12", "--only", "python=3.13")
    assert [(c["torch"], c["python"]) for c in part] == [
        ("2.12.1", "3.12"), ("2.12.1", "3.13"), ("2.13.0", "3.12"), ("2.13.0", "3.13"),
        ("2.14.1", "3.12"), ("2.14.1", "3.13")]
    mine = matrix_json(tmp_path, "--format", "list", "--python-current")
    assert {c["python"] for c in mine} == {HERE} and len(mine) == 8  # 3 torch x 3 acc, less 1


def test_table_format_and_paths_relative_to_the_project(tmp_path: Path) -> None:
    sub = tmp_path / "pkgs" / "ext"
    sub.mkdir(parents=True)
    project(sub, '[tool.abistamp.matrix]\ntorch = ["2.13.0"]\npython = ["3.11"]\n'
                 'accelerators = { cpu = { find-links = "torch-wheels" } }\n'
                 'find-links = ["https://example.org/wheels", "/abs/wheels"]\n'
                 'wheelhouse = "../../wheelhouse"\n')
    (c,) = matrix_json(tmp_path, "pkgs/ext", "--format", "list")
    assert c["args"] == ["build", "pkgs/ext", "--torch", "torch==2.13.0",
                         "--find-links", "pkgs/ext/torch-wheels",
                         "--find-links", "https://example.org/wheels",
                         "--find-links", "/abs/wheels", "-o", "wheelhouse"]
    table = cli("matrix", "pkgs/ext", "--format", "table", cwd=tmp_path).stdout
    assert table.splitlines()[1].split()[:3] == ["torch2.13.0-cpu-py3.11", "ubuntu-latest",
                                                 "abistamp"]
    assert table.endswith("1 cells\n")


def test_github_output_is_appended(tmp_path: Path) -> None:
    project(tmp_path, SMALL)
    out = tmp_path / "github-output"
    out.write_text("earlier=1\n")
    printed = cli("matrix", "--github-output", cwd=tmp_path,
                  env=clean_env(GITHUB_OUTPUT=str(out))).stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "earlier=1" and lines[1] == "matrix=" + printed.strip()
    assert len(json.loads(lines[1].split("=", 1)[1])["include"]) == 3
    missing = cli("matrix", "--github-output", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "`GITHUB_OUTPUT`" in missing.stderr


BASE = '[tool.abistamp.matrix]\ntorch = ["2.13.0"]\npython = ["3.11"]\naccelerators = { cpu = "https://x/cpu" }\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + 'pyhton = ["3.12"]\n',
         ("unknown key `tool.abistamp.matrix.pyhton` in `pyproject.toml` (fix: did you mean "
         "`python`?)")),
        (BASE.replace('["3.11"]', "[3.11]"),
         ("`tool.abistamp.matrix.python` in `pyproject.toml` must be a list of Python versions "
         "as strings, found [3.11]")),
        (BASE.replace('["2.13.0"]', '["torch==2.13.0"]'),
         "`tool.abistamp.matrix.torch` in `pyproject.toml` has `torch==2.13.0`, not a version"),
        (BASE.replace('["2.13.0"]', '"2.13.0"'),
         "`tool.abistamp.matrix.torch` in `pyproject.toml` must be a list of torch versions"),
        (BASE.replace('["2.13.0"]', '["2.13.0", "2.13.0"]'), "lists `2.13.0` twice"),
        (BASE.replace('torch = ["2.13.0"]\n', ""),
         "`tool.abistamp.matrix` in `pyproject.toml` has no `torch` (fix: declare `torch = "),
        (BASE + 'exclude = [{ accelerator = "cu13" }]\n',
         ("`tool.abistamp.matrix.exclude` entry 1 in `pyproject.toml` has accelerator `cu13`, "
         "which `tool.abistamp.matrix.accelerators` does not declare")),
        (BASE + 'exclude = [{ acelerator = "cpu" }]\n', "did you mean `accelerator`?"),
        (BASE + 'exclude = [{ python = 3.11 }]\n', 'quote it: python = "3.11"'),
        (BASE + 'exclude = [{ python = "3.11" }]\n',
         "`tool.abistamp.matrix.exclude` removes every cell"),
        (BASE.replace('"https://x/cpu"', '{ runs_on = "big" }'),
         ("unknown key `tool.abistamp.matrix.accelerators.cpu.runs_on` in `pyproject.toml` "
         "(fix: did you mean `runs-on`?)")),
        (BASE.replace('{ cpu = "https://x/cpu" }', '["cpu"]'),
         "`tool.abistamp.matrix.accelerators` in `pyproject.toml` must be a table"),
        (BASE.replace('cpu = "https://x/cpu"', '"cu 130" = "https://x"'),
         "an accelerator name must be letters"),
        (BASE + "runs-on = 3\n",
         "`tool.abistamp.matrix.runs-on` in `pyproject.toml` must be a string"),
        (BASE + 'env = { "DS BUILD" = "1" }\n', "not an environment variable name"),
        (BASE + 'config-settings = { "abistamp.lable" = "x" }\n',
         ("in `tool.abistamp.matrix`: unknown config setting `abistamp.lable` (fix: did "
         "you mean `abistamp.label`?)")),
        (BASE + 'env = { ABISTAMP_PINN = "exact" }\n', "did you mean `ABISTAMP_PIN`?"),
        ('[tool.abistamp]\nmatrix = 3\n', ("`tool.abistamp.matrix` in `pyproject.toml` is not a "
         "table")),
        ('[project]\nname = "x"\n', "has no `[tool.abistamp.matrix]` table"),
    ],
)
def test_bad_declarations(tmp_path: Path, text: str, message: str) -> None:
    result = cli("matrix", cwd=project(tmp_path, text), check=False)
    assert result.returncode == 2 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("abistamp: error: ") and "(fix: " in line
    assert message in line


def test_bad_command_line(tmp_path: Path) -> None:
    project(tmp_path, BASE)
    bad = cli("matrix", "--only", "gpu=yes", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "`--only gpu=yes` is not of the form AXIS=VALUE" in bad.stderr
    none = cli("matrix", "--only", "python=3.9", cwd=tmp_path, check=False)
    assert none.returncode == 2 and "python 3.11" in none.stderr
    missing = cli("matrix", "nowhere", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "`nowhere/pyproject.toml` does not exist" in missing.stderr


def test_settings_model_is_the_source_of_keys_and_docs() -> None:
    # Every field is a documented setting (an accelerator's name is its key, not a setting).
    assert [f.attr for f in MATRIX_FIELDS] == \
        [f.name for f in dataclasses.fields(MatrixSettings)]
    assert [f.attr for f in ACCELERATOR_FIELDS] == \
        [f.name for f in dataclasses.fields(Accelerator)][1:]  # after the name
    assert all(f.doc for f in MATRIX_FIELDS + ACCELERATOR_FIELDS)
    text = (REPO / "docs" / "configuration.md").read_text()
    assert matrix_reference_markdown() in text, (
        "docs/configuration.md is out of date: regenerate its matrix tables with "
        "`python -m abistamp.cli.matrix_settings`")
    # The defaults documented are the ones that apply.
    m = MatrixSettings.from_table({"torch": ["2.13.0"], "python": ["3.11"],
                                   "accelerators": {"cpu": "https://x"}})
    for f in MATRIX_FIELDS:
        if not f.required:
            assert getattr(m, f.attr) in (f.default, tuple(f.default)), f.key
    assert [f.key for f in MATRIX_FIELDS if f.required] == ["torch", "accelerators", "python"]
    with pytest.raises(AbistampError) as e:
        MatrixSettings.from_table([])
    assert e.value.fix


# --- the GitHub Actions workflow -------------------------------------------------------------


def check_jsonschema() -> str:
    found = shutil.which("check-jsonschema") or str(Path(sys.executable).parent /
                                                    "check-jsonschema")
    need(Path(found).exists(), "check-jsonschema is not installed (pip install -e '.[test]')")
    return found


def test_workflow_passes_the_github_workflow_schema_offline(tmp_path: Path) -> None:
    checker = check_jsonschema()
    # --builtin-schema is vendored in the package: nothing is fetched.
    ok = run([checker, "--builtin-schema", "vendor.github-workflows", WORKFLOW])
    assert "ok -- validation done" in ok.stdout
    # The check can fail: the same file with a misspelt key does.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs_on: x", 1))
    bad = run([checker, "--builtin-schema", "vendor.github-workflows", broken], check=False)
    assert bad.returncode == 1 and "'runs-on' is a required property" in bad.output


def test_workflow_uses_only_keys_that_cells_have(tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    cells = matrix_json(project(tmp_path, SMALL))["include"]
    used = set(re.findall(r"(?<![.\w])matrix\.([A-Za-z_][A-Za-z0-9_-]*)", WORKFLOW.read_text()))
    assert used and used <= set(cells[0]), used - set(cells[0])
    build = workflow["jobs"]["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert "abistamp matrix . --format github --github-output" in runs
    assert "abistamp ${{ matrix.args_shell }}" in runs
    assert any(r.startswith("abistamp index artifacts/* -o site") for r in runs)


@pytest.mark.slow
@pytest.mark.cuda
def test_run_locally_builds_two_cells_and_merges_them(
        tmp_path: Path, torch213_wheels: Path, torch214_wheels: Path) -> None:
    """The workflow's step commands, run on this machine by examples/ci/run-locally: the
    matrix job, two build cells (torch 2.13.0 on CPU, the CUDA build of torch 2.14.1, each
    from its own find-links folder), then the merge."""
    src = copy_project(EXAMPLES / "tiny-ext", tmp_path / "tiny-ext")
    other = "3.12" if HERE != "3.12" else "3.13"
    # The example's own table names download.pytorch.org; here each torch comes from a folder.
    pyproject = src / "pyproject.toml"
    kept = pyproject.read_text().split("[tool.abistamp.matrix]")[0]
    with pyproject.open("w") as f:
        f.write(kept + f"""
[tool.abistamp.matrix]
torch = ["2.13.0", "2.14.1"]
python = ["{HERE}", "{other}"]
accelerators = {{ cpu = {{ find-links = "{torch213_wheels}" }}, cu130 = {{ find-links = "{torch214_wheels}" }} }}
exclude = [{{ torch = "2.13.0", accelerator = "cu130" }}, {{ torch = "2.14.1", accelerator = "cpu" }}]
""")
    work = tmp_path / "ci"
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = run([sys.executable, CI / "run-locally", src, "--work", work], env=env,
                 timeout=1200)
    log = result.stderr
    # Four cells declared; the two for another Python are listed, not run.
    assert f"not run here: torch2.13.0-cpu-py{other}" in log
    assert "abistamp matrix . --format github --github-output" in log
    built = {}
    for name, label in (("torch2.13.0-cpu", "pt213cpu"), ("torch2.14.1-cu130", "pt214cu130")):
        artifact = work / "artifacts" / f"wheelhouse-{name}-py{HERE}"
        (wheel,) = (artifact / label).glob("tiny_ext-*.whl")
        assert f"+{label}-1{label}-" in wheel.name
        built[wheel.name] = wheel.read_bytes()
    merged = {w.name: w.read_bytes() for w in (work / "artifacts" / "site").rglob("*.whl")}
    assert merged == built


# --- the cibuildwheel recipe ------------------------------------------------------------------


def fill_cell(text: str, cell: dict[str, Any]) -> str:
    """The two GitHub expressions examples/ci/cibuildwheel.yml uses in its env."""
    text = re.sub(r"\$\{\{ join\(matrix\.(\w+), ' '\) \}\}", lambda m: " ".join(cell[m[1]]), text)
    return re.sub(r"\$\{\{ matrix\.(\w+) \}\}", lambda m: str(cell[m[1]]), text)


def test_cibuildwheel_reads_the_recipe_for_each_cell(tmp_path: Path) -> None:
    """cibuildwheel's own option parsing (offline) of examples/ci/cibuildwheel.toml plus the
    per-run environment that examples/ci/cibuildwheel.yml sets from each cell."""
    try:
        from cibuildwheel.options import CommandLineArguments, compute_options
    except ImportError:
        need(False, "cibuildwheel is not installed (pip install -e '.[test]')")
    ok = run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows",
              CI / "cibuildwheel.yml"])
    assert "ok -- validation done" in ok.stdout
    # The schema check can fail: the same recipe with a step that has no `uses` or `run` does.
    steps = (CI / "cibuildwheel.yml").read_text()
    assert "      - uses: " in steps
    broken = tmp_path / "broken-cibuildwheel.yml"
    broken.write_text(steps.replace("      - uses: ", "      - usess: ", 1))
    bad = run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows", broken],
              check=False)
    assert bad.returncode == 1 and "usess" in bad.output, bad.output
    recipe = (CI / "cibuildwheel.toml").read_text()
    project(tmp_path, recipe + '\n[project]\nname = "tiny-ext"\nversion = "0.3.0"\n\n'
            '[tool.abistamp.matrix]\ntorch = ["2.13.0", "2.14.1"]\npython = ["3.11", "3.12"]\n'
            'accelerators = { cpu = "https://download.pytorch.org/whl/cpu", '
            'cu130 = "https://download.pytorch.org/whl/cu130" }\n')
    cells = matrix_json(tmp_path)["include"]
    assert len(cells) == 8
    workflow = yaml.safe_load((CI / "cibuildwheel.yml").read_text())
    (build,) = [s for s in workflow["jobs"]["cibuildwheel"]["steps"] if s.get("name") == "Build"]
    cibw = str(Path(sys.executable).parent / "cibuildwheel")
    for c in cells:
        env = {k: fill_cell(v, c) for k, v in build["env"].items()}
        ids = run([cibw, "--print-build-identifiers", "--platform", "linux"], cwd=tmp_path,
                  env=clean_env(**env)).stdout.split()
        assert ids == [f"{c['python_tag']}-manylinux_x86_64"]
        args = dataclasses.replace(CommandLineArguments.defaults(), platform="linux",
                                   package_dir=tmp_path)
        options = compute_options("linux", args, env).build_options(ids[0])
        assert options.build_frontend is not None
        assert options.build_frontend.name == "build[uv]"
        assert options.config_settings == f"abistamp.torch=torch=={c['torch']}"
        assert options.test_requires == [f"torch=={c['torch']}"]
        assert options.repair_command == ""  # no auditwheel copy of libtorch into the wheel
        seen = options.environment.as_dictionary({"PATH": "/usr/bin"})
        assert seen["UV_EXTRA_INDEX_URL"] == f"https://download.pytorch.org/whl/{c['accelerator']}"
        assert "manylinux_2_28" in options.manylinux_images["x86_64"]
    # The check can fail: cibuildwheel refuses an option it does not know.
    project(tmp_path, recipe.replace("build-frontend", "build-fronted"))
    bad = run([cibw, "--print-build-identifiers", "--platform", "linux"], cwd=tmp_path,
              check=False)
    assert bad.returncode != 0 and "build-fronted" in bad.output
