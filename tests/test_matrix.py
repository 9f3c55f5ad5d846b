"""The frontend matrix: sources x installers x torch switches, with the caches the installers
really keep (docs/frontends.md has one row per test here).

Each cell installs the probe (it imports torch at build time and records it, as DeepSpeed does)
into the torch 2.13.0+cpu environment, then into the torch 2.14.1 one, sharing one installer
cache, and checks: the installed build names the installed torch; a second identical command
builds and reinstalls nothing; the switch got a new build. Where an installer cannot tell the
builds apart by itself, the test shows the documented configuration that makes it right.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import OLDEST_PIP, Env, clean_env, private_envs, read_record, run, uv_bin

pytestmark = [pytest.mark.slow, pytest.mark.cuda]

# The probe is installed into these and removed again: this module's own (conftest.py).
env213, env214 = private_envs("matrix")

INSTALLED = ("import importlib.metadata as m, json, probe; d = m.distribution('abistamp-probe'); "
             "r = d.read_text('abistamp.json'); "
             "print(json.dumps([m.version('torch'), probe.TORCH, r and json.loads(r)['torch']]))")


@pytest.fixture(autouse=True)
def no_probe_installed(env213: Env, env214: Env) -> None:
    """The torch environments are shared by the session: start every cell without the probe."""
    for env in (env213, env214):
        run([uv_bin(), "pip", "uninstall", "-p", env.python, "abistamp-probe"], check=False)


def installed(env: Env) -> tuple[str, str, str | None]:
    torch, built_with, record = json.loads(env.py(INSTALLED).stdout)
    return torch, built_with, record


@pytest.fixture(scope="module")
def probe_sdist(tmp_path_factory: pytest.TempPathFactory, env213: Env) -> Path:
    """The probe's sdist, built through abistamp (backend folder included)."""
    from .conftest import DATA, copy_project

    src = copy_project(DATA / "probe", tmp_path_factory.mktemp("src") / "probe")
    out = tmp_path_factory.mktemp("sdist")
    run([uv_bin(), "build", "--sdist", "-p", env213.python, "--no-build-isolation",
         "--out-dir", out, src])
    (sdist,) = out.glob("*.tar.gz")
    return sdist


@pytest.fixture(scope="module")
def probe_index(tmp_path_factory: pytest.TempPathFactory, probe_sdist: Path) -> str:
    """A PEP 503 folder index serving the probe's sdist."""
    root = tmp_path_factory.mktemp("index") / "simple"
    (root / "abistamp-probe").mkdir(parents=True)
    target = root / "abistamp-probe" / probe_sdist.name
    shutil.copy2(probe_sdist, target)
    (root / "abistamp-probe" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{probe_sdist.name}">{probe_sdist.name}</a>'
        "</body></html>\n")
    return root.as_uri()


@pytest.fixture(scope="module")
def probe_git(tmp_path_factory: pytest.TempPathFactory) -> str:
    from .conftest import DATA, copy_project

    repo = copy_project(DATA / "probe", tmp_path_factory.mktemp("git") / "probe")
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "probe"], cwd=repo, check=True)
    return f"abistamp-probe @ git+{repo.as_uri()}"


def uv_install(env: Env, source: str, cache: Path, *extra: str, uv: str | None = None) -> str:
    result = run([uv or uv_bin(), "pip", "install", "-p", env.python, "--no-deps",
                  "--no-build-isolation", "--cache-dir", cache, *extra, source], env=env.env())
    return result.stderr


# --- uv pip install ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "uv_version"), [
    ("sdist", "newest"), ("index", "newest"), ("git", "newest"), ("sdist", "oldest"),
])
def test_uv_pip_install_switch_with_torch_setting(kind: str, uv_version: str,
                                                  request: pytest.FixtureRequest,
                                                  uv_versions: dict[str, str], env213: Env,
                                                  env214: Env, tmp_path: Path) -> None:
    """uv caches a source's build by source and config settings, not by the environment:
    `-C abistamp.torch=torch==<version>` gives each torch its own cache entry, and the backend
    checks the torch it finds against it."""
    if kind == "sdist":
        source, extra = str(request.getfixturevalue("probe_sdist")), []
    elif kind == "index":
        source, extra = "abistamp-probe", ["--index-url", request.getfixturevalue("probe_index")]
    else:
        source, extra = request.getfixturevalue("probe_git"), []
    cache = tmp_path / "uv-cache"
    for env in (env213, env214, env213):
        setting = ["-C", f"abistamp.torch=torch=={env.torch}"]
        first = uv_install(env, source, cache, *extra, *setting, "--reinstall-package",
                           "abistamp-probe", uv=uv_versions[uv_version])
        torch, built_with, record = installed(env)
        assert torch == built_with == record, (kind, env.torch, first)
        again = uv_install(env, source, cache, *extra, *setting, uv=uv_versions[uv_version])
        assert "Built" not in again and "Installed" not in again, again


def test_uv_pip_install_without_a_setting_reuses_the_wrong_build(
        probe_sdist: Path, env213: Env, env214: Env, tmp_path: Path) -> None:
    """The bug this project exists for, reproduced: caught by the record, not by the name."""
    cache = tmp_path / "uv-cache"
    uv_install(env213, str(probe_sdist), cache)
    uv_install(env214, str(probe_sdist), cache)
    torch, built_with, record = installed(env214)
    assert torch == "2.14.1" and built_with == record == "2.13.0+cpu"
    assert_check_catches(env214)


def machine_python() -> str:
    """The interpreter the test venv was made from: its pip is the machine's own (the oldest
    supported), not the test venv's upgraded one."""
    return getattr(sys, "_base_executable", None) or sys.executable


def assert_check_catches(env: Env) -> None:
    """`abistamp check` reports the wrong build (exit 1) and names the package."""
    exe = shutil.which("abistamp") or str(Path(sys.executable).parent / "abistamp")
    result = run([exe, "check", "--python", env.python], check=False)
    assert result.returncode == 1, result.output
    assert "abistamp-probe" in result.output or "abistamp_probe" in result.output, result.output


# --- pip ---------------------------------------------------------------------------------------

def pip_install(env: Env, args: list[str], cache: Path, pip: str = "newest") -> str:
    if pip == "newest":
        cmd = [str(env.python), "-m", "pip"]
    else:  # this machine's pip, run against the environment (`pip --python`, pip >= 22.3)
        cmd = [machine_python(), "-m", "pip", "--python", str(env.python)]
    return run([*cmd, "install", "--no-deps", "--no-build-isolation", "--cache-dir", cache,
                *args], env=env.env()).stdout


@pytest.mark.parametrize("pip", ["newest", "oldest"])
def test_pip_install_from_index_reuses_its_wheel_cache_across_torches(
        pip: str, probe_index: str, env213: Env, env214: Env, tmp_path: Path) -> None:
    """pip keys built wheels on the link and the interpreter only: with another torch and
    --no-build-isolation it installs the old build. --no-cache-dir (or prebuilt per-ABI
    wheels) is the fix."""
    if pip == "oldest":
        version = run([machine_python(), "-m", "pip", "--version"]).stdout.split()[1]
        assert version == OLDEST_PIP, f"this machine's pip is {version}"
    cache = tmp_path / "pip-cache"
    args = ["--index-url", probe_index, "abistamp-probe"]
    pip_install(env213, args, cache, pip)
    assert len(set(installed(env213))) == 1
    pip_install(env214, args, cache, pip)
    torch, built_with, record = installed(env214)
    assert torch == "2.14.1" and built_with == record == "2.13.0+cpu", "pip reused the build"
    assert_check_catches(env214)
    # The documented fix.
    pip_install(env214, ["--no-cache-dir", "--force-reinstall", *args], cache, pip)
    assert installed(env214) == ("2.14.1", "2.14.1", "2.14.1")
    # A second identical run changes nothing.
    out = pip_install(env214, args, cache, pip)
    assert "Requirement already satisfied" in out


def test_pip_install_sdist_file_builds_every_time(probe_sdist: Path, env213: Env, env214: Env,
                                                  tmp_path: Path) -> None:
    """pip does not reuse builds of a local file (it may change under the same path), so each
    install builds again, against whatever torch is there: always right, never reused."""
    cache = tmp_path / "pip-cache"
    for env in (env213, env214):
        out = pip_install(env, ["--force-reinstall", str(probe_sdist)], cache)
        assert "Building wheel for abistamp-probe" in out
        assert len(set(installed(env))) == 1, installed(env)


# --- wheelhouse --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, probe_sdist: Path, env213: Env,
               env214: Env) -> Path:
    """A per-ABI wheelhouse of the probe: WH/<label>/<wheel>."""
    root = tmp_path_factory.mktemp("wheelhouse")
    for env in (env213, env214):
        work = tmp_path_factory.mktemp("w")
        with tarfile.open(probe_sdist) as tar:
            tar.extractall(work, filter="data")
        (tree,) = work.iterdir()
        out = work / "out"
        run([uv_bin(), "build", "--wheel", "-p", env.python, "--no-build-isolation",
             "--out-dir", out, tree])
        (wheel,) = out.glob("*.whl")
        folder = root / read_record(wheel)["label"]
        folder.mkdir()
        shutil.copy2(wheel, folder)
    return root


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_wheelhouse_per_abi(installer: str, wheelhouse: Path, env213: Env, env214: Env,
                            tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for env, label in ((env213, "pt213cpu"), (env214, "pt214cu130"), (env213, "pt213cpu")):
        links = ["--no-index", "--find-links", str(wheelhouse / label)]
        if installer == "uv":
            run([uv_bin(), "pip", "install", "-p", env.python, "--cache-dir", cache, *links,
                 "--reinstall-package", "abistamp-probe", "abistamp-probe"], env=env.env())
            again = run([uv_bin(), "pip", "install", "-p", env.python, "--cache-dir", cache,
                         *links, "abistamp-probe"], env=env.env()).stderr
            assert "Installed" not in again, again
        else:
            pip = [env.python, "-m", "pip", "install", "--cache-dir", cache, *links]
            run([*pip, "--force-reinstall", "--no-deps", "abistamp-probe"], env=env.env())
            assert "already satisfied" in run([*pip, "abistamp-probe"], env=env.env()).stdout
        assert len(set(installed(env))) == 1, installed(env)


# --- uv sync -----------------------------------------------------------------------------------

@pytest.mark.parametrize("uv_version", ["newest", "oldest"])
def test_uv_sync_directory_dependency_switches_with_match_runtime(
        uv_version: str, uv_versions: dict[str, str], probe: Path, torch213_wheels: Path,
        torch214_wheels: Path, tmp_path: Path) -> None:
    from .conftest import simple_index

    # match-runtime needs the dependency's metadata without a build: a static [project] table
    # (uv: "does not declare static metadata, making runtime-matching impossible").
    pyproject = probe / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + (
        '\n[project]\nname = "abistamp-probe"\nversion = "1.0.0"\ndependencies = []\n'
        '\n[tool.setuptools]\npackages = ["probe"]\n'))
    app = tmp_path / "app"
    app.mkdir()
    cpu, cu130 = simple_index(torch213_wheels).as_uri(), simple_index(torch214_wheels).as_uri()
    (app / "pyproject.toml").write_text(f"""\
[project]
name = "app"
version = "0.1.0"
requires-python = "==3.11.*"
dependencies = ["abistamp-probe"]

[project.optional-dependencies]
cpu = ["torch==2.13.0"]
cu130 = ["torch==2.14.1"]

[tool.uv]
conflicts = [[{{ extra = "cpu" }}, {{ extra = "cu130" }}]]
environments = ["sys_platform == 'linux' and platform_machine == 'x86_64'"]

[tool.uv.extra-build-dependencies]
abistamp-probe = [{{ requirement = "torch", match-runtime = true }}]

[tool.uv.sources]
abistamp-probe = {{ path = "{probe}" }}
torch = [{{ index = "cpu", extra = "cpu" }}, {{ index = "cu130", extra = "cu130" }}]

[[tool.uv.index]]
name = "cpu"
url = "{cpu}"
explicit = true

[[tool.uv.index]]
name = "cu130"
url = "{cu130}"

[[tool.uv.index]]
name = "mirror"
url = "{cu130}"
""")
    env = clean_env(UV_PROJECT_ENVIRONMENT=str(app / ".venv"))
    uv = uv_versions[uv_version]
    run([uv, "lock", "-p", "3.11"], cwd=app, env=env, timeout=900)
    venv = Env(app / ".venv", "")
    builds = []
    for extra, torch in (("cpu", "2.13.0+cpu"), ("cu130", "2.14.1"), ("cpu", "2.13.0+cpu")):
        result = run([uv, "sync", "-v", "--extra", extra], cwd=app, env=env, timeout=900)
        builds.append("Built abistamp-probe" in result.stderr
                      or "Building abistamp-probe" in result.stderr)
        assert installed(venv) == (torch, torch, torch)
        run([uv, "lock", "--check"], cwd=app, env=env)
        again = run([uv, "sync", "--extra", extra], cwd=app, env=env).stderr
        assert "Installed" not in again and "Uninstalled" not in again, again
    assert builds == [True, True, False]
