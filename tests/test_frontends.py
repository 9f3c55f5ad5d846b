"""Every frontend flow of the backend issue, with real uv, pip and `python -m build`.

The probe project imports torch at build time and records it (as DeepSpeed's setup.py does)
but compiles nothing, so these run in seconds; test_tiny_ext.py compiles for real.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from .conftest import Env, private_envs, read_dist_file, read_record, run, uv_bin

# The probe is installed into these and removed again: this module's own (conftest.py).
env213, env214 = private_envs("frontends")

pytestmark = pytest.mark.slow

PROBE = "abistamp_probe"


def wheels(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.whl"))


def only_wheel(folder: Path) -> Path:
    found = wheels(folder)
    assert len(found) == 1, found
    return found[0]


def assert_stamped(wheel: Path, env: Env, label: str, *, local: bool, pin: str | None) -> None:
    """The record, build tag, version and pin all name the torch of `env`."""
    record = read_record(wheel)
    assert record["torch"] == env.torch
    assert record["label"] == label
    assert record["build_tag"] == f"1{label}"
    assert record["local_version"]["applied"] is local
    version = f"1.0.0+{label}" if local else "1.0.0"
    assert wheel.name == f"{PROBE}-{version}-1{label}-py3-none-any.whl"
    metadata = read_dist_file(wheel, "METADATA")
    assert f"\nVersion: {version}\n" in metadata
    if pin:
        assert f"Requires-Dist: {pin}" in metadata
    else:
        assert "Requires-Dist: torch" not in metadata
    with zipfile.ZipFile(wheel) as zf:
        built = zf.read("probe/_built.py").decode()
    assert f"TORCH = {env.torch!r}" in built, "setup.py saw the same torch as the stamp"


def test_uv_build_wheel_from_tree_is_fully_stamped(probe: Path, env213: Env, tmp_path: Path
                                                   ) -> None:
    out = tmp_path / "out"
    result = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
                  "--out-dir", out, probe])
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=True, pin="torch==2.13.0+cpu")
    assert "local version label added" in result.stderr


def test_uv_build_sdist_then_wheel(probe: Path, env213: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([uv_bin(), "build", "--no-build-isolation", "-p", env213.python, "--out-dir", out,
         probe])
    # The wheel comes from the unpacked sdist: its version must match the sdist's, and its
    # Requires-Dist too (PKG-INFO 2.4 without `Dynamic: Requires-Dist`, PEP 643).
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=False, pin=None)
    sdist = next(out.glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        pkg_info = tar.extractfile(f"{PROBE}-1.0.0/PKG-INFO").read().decode()  # type: ignore
    assert f"{PROBE}-1.0.0/backend/abistamp/backend.py" in names, "backend-path is in the sdist"
    assert not any(".egg-info" in n and "/backend/" in n for n in names)
    assert "Dynamic:" not in pkg_info, "static metadata, as uv's match-runtime needs"


def test_python_m_build(probe: Path, env213: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([env213.python, "-m", "build", "--no-isolation", "-o", out, probe])
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=False, pin=None)


def test_python_m_build_wheel(probe: Path, env213: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([env213.python, "-m", "build", "--wheel", "--no-isolation", "-o", out, probe])
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=True, pin="torch==2.13.0+cpu")


def test_pip_wheel_uses_prepared_metadata(probe: Path, env213: Env, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([env213.python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out,
         probe], env=env213.env())
    # pip asked prepare_metadata_for_build_wheel first: the version stays as promised.
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=False, pin="torch==2.13.0+cpu")


@pytest.mark.parametrize("frontend", ["pip", "uv"])
@pytest.mark.cuda
def test_install_from_directory(frontend: str, probe: Path, env213: Env, env214: Env,
                                tmp_path: Path) -> None:
    """Install the same source tree under both torches: each gets its own build."""
    for env, label in ((env213, "pt213cpu"), (env214, "pt214cu130")):
        if frontend == "pip":
            cmd = [env.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                   "--force-reinstall", probe]
        else:
            cmd = [uv_bin(), "pip", "install", "-p", env.python, "--no-deps",
                   "--no-build-isolation", "--reinstall", probe]
        run(cmd, env=env.env())
        code = ("import json, importlib.metadata as m, probe; "
                "d = m.distribution('abistamp-probe'); "
                "print(json.dumps([probe.TORCH, d.version, "
                "json.loads(d.read_text('abistamp.json'))]))")
        import json

        torch_seen, version, record = json.loads(env.py(code).stdout)
        assert torch_seen == env.torch == record["torch"]
        assert record["label"] == label
        assert version == "1.0.0", "installers were promised 1.0.0 by prepare_metadata"


@pytest.mark.cuda
def test_two_torches_give_two_different_wheels(probe: Path, env213: Env, env214: Env,
                                               tmp_path: Path) -> None:
    names = {}
    for env in (env213, env214):
        out = tmp_path / env.torch
        run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env.python,
             "--out-dir", out, probe])
        wheel = only_wheel(out)
        names[env.torch] = wheel.name
        record = read_record(wheel)
        assert record["torch"] == env.torch
    assert names == {
        "2.13.0+cpu": f"{PROBE}-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl",
        "2.14.1": f"{PROBE}-1.0.0+pt214cu130-1pt214cu130-py3-none-any.whl",
    }
    cuda = read_record(tmp_path / "2.14.1" / names["2.14.1"])
    assert (cuda["accelerator"], cuda["cuda"], cuda["pin"]) == ("cu130", "13.0", "torch==2.14.*")


def test_isolated_uv_build_installs_the_declared_torch(probe: Path, torch213_wheels: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    run([uv_bin(), "build", "--wheel", "--find-links", torch213_wheels,
         "-C", "abistamp.torch=torch==2.13.0", "--out-dir", out, probe])
    wheel = only_wheel(out)
    assert read_record(wheel)["torch"] == "2.13.0+cpu"


def test_isolated_build_without_torch_says_how_to_fix(probe: Path, tmp_path: Path) -> None:
    result = run([uv_bin(), "build", "--wheel", "--out-dir", tmp_path / "out", probe],
                 check=False)
    assert result.returncode != 0
    # setup.py imports torch too; the message must come from abistamp, before setup.py runs.
    assert "torch is not importable in the build environment" in result.output
    for fix in ("[tool.abistamp] torch", "match-runtime", "--no-build-isolation"):
        assert fix in result.output
    assert not wheels(tmp_path / "out")


def test_static_project_metadata_is_left_alone(probe: Path, env213: Env, tmp_path: Path) -> None:
    """A static [project] table: no local label (uv reads the version), no added pin."""
    pyproject = probe / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + (
        '\n[project]\nname = "abistamp-probe"\nversion = "1.0.0"\ndependencies = []\n'
        '\n[tool.setuptools]\npackages = ["probe"]\n'))
    out = tmp_path / "out"
    result = run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
                  "--out-dir", out, probe])
    assert_stamped(only_wheel(out), env213, "pt213cpu", local=False, pin=None)
    assert "`[project] version` is static" in result.stderr
    assert 'To pin it, add "torch==2.13.0+cpu" to `[project] dependencies`' in result.stderr


# A PKG-INFO in the tree is what an unpacked sdist has (metadata 2.4, nothing dynamic).
PKG_INFO = "Metadata-Version: 2.4\nName: abistamp-probe\nVersion: 1.0.0\n"


@pytest.mark.parametrize("case", ["always, pip wheel DIR", "always, unpacked sdist",
                                  "never, tree"])
def test_local_version_setting_forces(case: str, probe: Path, env213: Env, tmp_path: Path
                                      ) -> None:
    """Each setting against a build where `auto` decides the other way: `always` where the
    frontend asked for metadata first (pip) and from an unpacked sdist, `never` from a tree."""
    out = tmp_path / "out"
    setting = case.split(",")[0]
    config = f"-Cabistamp.local-version={setting}"
    if case == "always, pip wheel DIR":
        run([env213.python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
             out, config, probe], env=env213.env())
        pin: str | None = "torch==2.13.0+cpu"
    elif case == "always, unpacked sdist":
        (probe / "PKG-INFO").write_text(PKG_INFO)
        run([env213.python, "-m", "build", "--no-isolation", "--wheel", "-o", out, config,
             probe])
        pin = None  # the sdist's Requires-Dist is static (PEP 643)
    else:
        run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
             "--out-dir", out, config, probe])
        pin = "torch==2.13.0+cpu"
    wheel = only_wheel(out)
    # The wheel's name and METADATA, not only the record.
    assert_stamped(wheel, env213, "pt213cpu", local=setting == "always", pin=pin)
    assert f"`local-version` is `{setting}`" in read_record(wheel)["local_version"]["reason"]


def test_always_labels_the_metadata_prepared_for_the_frontend(probe: Path, env213: Env,
                                                              tmp_path: Path) -> None:
    """With `local-version = "always"`, prepare_metadata_for_build_wheel promises the labelled
    version, so the wheel build_wheel then makes matches it (PEP 517): pip's own report of
    what it would install and uv's install both say 1.0.0+pt213cpu."""
    report = tmp_path / "report.json"
    run([env213.python, "-m", "pip", "install", "--dry-run", "--no-deps",
         "--no-build-isolation", "--quiet", "--report", report,
         "-Cabistamp.local-version=always", probe], env=env213.env())
    (planned,) = json.loads(report.read_text())["install"]
    assert planned["metadata"]["version"] == "1.0.0+pt213cpu"
    assert planned["metadata"]["requires_dist"] == ["torch==2.13.0+cpu"]
    target = tmp_path / "target"
    result = run([uv_bin(), "pip", "install", "-p", env213.python, "--no-deps",
                  "--no-build-isolation", "--target", target,
                  "-Cabistamp.local-version=always", probe], env=env213.env())
    assert "+ abistamp-probe==1.0.0+pt213cpu" in result.stderr
    (dist_info,) = target.glob("*.dist-info")
    assert dist_info.name == "abistamp_probe-1.0.0+pt213cpu.dist-info"
    record = json.loads((dist_info / "abistamp.json").read_text())
    assert "prepare_metadata_for_build_* put the label" in record["local_version"]["reason"]


def test_editable_install_carries_the_record(probe: Path, env213: Env) -> None:
    run([env213.python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-e",
         probe], env=env213.env())
    code = ("import importlib.metadata as m, json; d = m.distribution('abistamp-probe'); "
            "print(json.dumps([d.version, json.loads(d.read_text('abistamp.json'))]))")
    import json

    version, record = json.loads(env213.py(code).stdout)
    assert version == "1.0.0" and record["editable"] is True
    assert record["torch"] == env213.torch
    run([env213.python, "-m", "pip", "uninstall", "-y", "abistamp-probe"], env=env213.env())


MINIMAL_BACKEND = '''
"""A PEP 517 backend with only the two mandatory hooks."""
from setuptools import build_meta as _b

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _b.build_wheel(wheel_directory, config_settings, metadata_directory)

def build_sdist(sdist_directory, config_settings=None):
    return _b.build_sdist(sdist_directory, config_settings)
'''

HOOKS = """
import json, sys
sys.path[:0] = ["backend"]
import abistamp.backend as b
names = ["get_requires_for_build_wheel", "get_requires_for_build_sdist",
         "prepare_metadata_for_build_wheel", "get_requires_for_build_editable",
         "prepare_metadata_for_build_editable", "build_editable", "build_wheel", "build_sdist"]
print(json.dumps({n: hasattr(b, n) for n in names}))
"""


def test_optional_hooks_follow_the_wrapped_backend(probe: Path, env213: Env,
                                                   tmp_path: Path) -> None:
    import json

    # An in-tree backend lives in a backend-path folder, which frontends put on sys.path.
    (probe / "backend" / "minimal_backend.py").write_text(MINIMAL_BACKEND)
    full = json.loads(run([env213.python, "-c", HOOKS], cwd=probe).stdout)
    assert all(full.values()), full
    minimal = json.loads(run([env213.python, "-c", HOOKS], cwd=probe,
                             env=env213.env(ABISTAMP_BACKEND="minimal_backend")).stdout)
    assert minimal == {**{n: False for n in minimal}, "get_requires_for_build_wheel": True,
                       "get_requires_for_build_sdist": True, "build_wheel": True,
                       "build_sdist": True}
    # A frontend falls back to build_wheel for metadata, and the result is still stamped.
    out = tmp_path / "out"
    run([env213.python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out,
         probe], env=env213.env(ABISTAMP_BACKEND="minimal_backend"))
    (wheel,) = out.glob("*.whl")
    assert read_record(wheel)["torch"] == env213.torch
