"""DeepSpeed 0.19.8 from the package registry, built through abistamp from a checkout with the
card's pyproject.toml dropped in, and built from source by uv in a uv project that switches
torches (`match-runtime`).

The checkout's wheels compile no op: what a compiled op adds is tested where one is compiled,
each once per run (CPU Adam with the switch exported: test_deepspeed_flags.py, and for
x86-64-v3 in test_cli_deepspeed.py, whose wheelhouse a uv project also switches between; fused
Adam for every arch of the CUDA torch: test_cli_deepspeed.py; fused Adam with NVIDIA's toolkit
wheels: test_cuda_builds.py). Whether prebuilt CUDA ops are used on a GPU host cannot be tested
without a GPU: that is the GPU test's, a skip that `-ra` reports on a machine without one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import (
    BACKEND,
    CACHE,
    EXAMPLES,
    Env,
    cache_lock,
    clean_env,
    need,
    read_dist_file,
    read_record,
    run,
    simple_index,
    uv_bin,
)

pytestmark = pytest.mark.slow
DS_VERSION = "0.19.8"


@pytest.fixture(scope="session")
def ds_sdist() -> Path:
    """DeepSpeed's sdist from the registry, fetched the way `abistamp build deepspeed==...`
    fetches it (cli/fetch.py: found through the simple API, no setup.py run), kept in the
    test cache between runs."""
    from abistamp.cli.fetch import fetch_sdist
    from abistamp.cli.fetchconfig import fetch_config
    from abistamp.core.errors import AbistampError

    with cache_lock("sdists"):
        try:
            got = fetch_sdist(f"deepspeed=={DS_VERSION}", fetch_config(None, [], []),
                              CACHE / "sdists", lambda _: None)
        except AbistampError as e:
            need(False, f"could not fetch deepspeed {DS_VERSION}: {e.one_line()}")
            raise
    return got.path


def make_checkout(sdist: Path, dest: Path) -> Path:
    """A DeepSpeed tree as a git checkout has it, with examples/deepspeed/pyproject.toml
    dropped in and abistamp vendored through backend-path (the in-tree variant)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(dest, filter="data")
    tree = dest / f"deepspeed-{DS_VERSION}"
    # A checkout has no PKG-INFO, egg-info or build.txt; its version gets `+<git hash>`.
    for leftover in ("PKG-INFO", "build.txt"):
        (tree / leftover).unlink()
    shutil.rmtree(tree / "deepspeed.egg-info")
    (tree / "pyproject.toml").write_text(checkout_pyproject())
    shutil.copytree(BACKEND, tree / "backend",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=tree, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tree, check=True)
    subprocess.run([*git, "commit", "-qm", "checkout"], cwd=tree, check=True)
    return tree


def checkout_pyproject() -> str:
    """examples/deepspeed/pyproject.toml as the in-tree variant: abistamp through backend-path."""
    text = (EXAMPLES / "deepspeed" / "pyproject.toml").read_text()
    text = text.replace('requires = ["abistamp", ', "requires = [")
    return text.replace('build-backend = "abistamp.backend"',
                        'build-backend = "abistamp.backend"\nbackend-path = ["backend"]')


def git_hash(tree: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def ds_wheels(tmp_path_factory: pytest.TempPathFactory, ds_sdist: Path, env213: Env,
              env214: Env) -> dict[str, tuple[Path, str]]:
    """One DeepSpeed wheel per torch, built with `uv build --wheel` from a checkout, with no op
    compiled (the module's docstring says where each compiled op is tested)."""
    wheels = {}
    for env in (env213, env214):
        # Kept between runs of the suite, keyed by everything that goes into the build.
        out = CACHE / "deepspeed-wheels" / ds_wheel_key(ds_sdist, env, {})
        if not (out / "hash").is_file():
            tree = make_checkout(ds_sdist, tmp_path_factory.mktemp("ds"))
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env.python,
                 "--out-dir", out, tree], env=env.env(), timeout=1200)
            (out / "hash").write_text(git_hash(tree))
        (wheel,) = out.glob("*.whl")
        wheels[env.torch] = (wheel, (out / "hash").read_text())
    return wheels


def ds_wheel_key(sdist: Path, env: Env, build_env: dict[str, str]) -> str:
    """Everything that changes the wheel: the sdist, the torch and the rest of the build
    environment (its name is a digest of what was installed into it), this interpreter, the
    pyproject.toml dropped into the checkout and how the checkout is made, the DS_BUILD_*
    flags, abistamp's backend, and uv, the frontend."""
    h = hashlib.sha256()
    for part in (sdist.read_bytes(), env.torch.encode(), env.root.name.encode(),
                 sys.version.encode(), checkout_pyproject().encode(),
                 inspect.getsource(make_checkout).encode(),
                 json.dumps(build_env, sort_keys=True).encode(), backend_digest().encode(),
                 run([uv_bin(), "--version"]).stdout.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def backend_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(BACKEND.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.cuda
def test_two_distinct_fully_stamped_wheels(ds_wheels: dict[str, tuple[Path, str]]) -> None:
    (cpu, cpu_hash), (cuda, cuda_hash) = ds_wheels["2.13.0+cpu"], ds_wheels["2.14.1"]
    # No op compiled: pure-Python wheels, still told apart by their labels and build tags.
    assert cpu.name == (f"deepspeed-{DS_VERSION}+{cpu_hash}.pt213cpu-1pt213cpu-"
                        "py3-none-any.whl")
    assert cuda.name == (f"deepspeed-{DS_VERSION}+{cuda_hash}.pt214cu130-1pt214cu130-"
                         "py3-none-any.whl")
    r_cpu, r_cuda = read_record(cpu), read_record(cuda)
    assert r_cpu["profile"]["torch_info"]["version"] == "2.13"
    assert r_cpu["profile"]["torch_info"]["cuda_version"] == "0.0"
    assert r_cuda["profile"]["torch_info"]["version"] == "2.14"
    assert r_cuda["profile"]["torch_info"]["cuda_version"] == "13.0"
    assert r_cpu["profile"]["installed_ops"] == r_cuda["profile"]["installed_ops"] == []
    # A GPU-less builder with a CUDA torch must still make a wheel for CUDA hosts.
    assert r_cuda["profile"]["accelerator_name"] == "cuda"
    assert r_cuda["profile"]["environ"]["DS_ACCELERATOR"] == "cuda"
    assert r_cpu["profile"]["environ"]["DS_ENABLE_NINJA"] == "1"
    assert r_cpu["profile"]["cpu"] is None, "no CPU op, so nothing assumed of the CPU"
    assert "Requires-Dist: torch==2.13.0+cpu" in read_dist_file(cpu, "METADATA")
    assert "Requires-Dist: torch==2.14.*" in read_dist_file(cuda, "METADATA")
    # That prebuilt CUDA ops of a cu130 wheel load and run is for a machine with a GPU: the
    # separate GPU test (test_gpu.py), which `-ra` reports as skipped where there is none.


def test_plain_uv_build_from_sdist_first(ds_sdist: Path, env213: Env, tmp_path: Path) -> None:
    """`uv build` (sdist, then wheel from it): no local label, but tag and record."""
    tree = make_checkout(ds_sdist, tmp_path)
    out = tmp_path / "out"
    run([uv_bin(), "build", "--no-build-isolation", "-p", env213.python, "--out-dir", out, tree],
        env=env213.env(), timeout=900)
    (wheel,) = out.glob("*.whl")
    version = f"{DS_VERSION}+{git_hash(tree)}"
    assert wheel.name == f"deepspeed-{version}-1pt213cpu-py3-none-any.whl"
    record = read_record(wheel)
    assert record["torch"] == "2.13.0+cpu" and record["local_version"]["applied"] is False
    assert record["profile"]["torch_info"]["version"] == "2.13"
    # Nothing escapes: the checkout holds only what DeepSpeed's own setup.py and setuptools
    # write (no wheel, no scratch folder, nothing of abistamp's).
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal"],
                            cwd=tree, check=True, capture_output=True, text=True).stdout
    changed = sorted(line[3:].rstrip("/") for line in status.splitlines())
    assert set(changed) <= {"build", "deepspeed.egg-info",
                            "deepspeed/git_version_info_installed.py"}, changed


def example_project(name: str, root: Path, urls: dict[str, Path], mirror: Path) -> Path:
    """One of examples/deepspeed/*-project, with its URLs pointed at this machine's files.

    The torch 2.14.1 wheels need the nvidia-* wheels; a non-explicit local mirror keeps them
    off the network (uv asks indexes in order, PyPI last).
    """
    text = (EXAMPLES / "deepspeed" / name / "pyproject.toml").read_text()
    for url, local in urls.items():
        assert url in text, f"{url} is no longer in examples/deepspeed/{name}"
        text = text.replace(url, local.resolve().as_uri())
    text += (f'\n[[tool.uv.index]]\nname = "local-mirror"\nurl = "{mirror.as_uri()}"\n')
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(text)
    return root


TORCH_URLS = {"https://download.pytorch.org/whl/cpu": "cpu",
              "https://download.pytorch.org/whl/cu130": "cu130"}


INSTALLED = """
import importlib.metadata as m, json
from deepspeed.git_version_info import torch_info
record = m.distribution("deepspeed").read_text("abistamp.json")
print(json.dumps([m.version("torch"), torch_info, record and json.loads(record)]))
"""


def project_env(project: Path) -> dict[str, str]:
    return clean_env(UV_PROJECT_ENVIRONMENT=str(project / ".venv"))


def switch_extras(project: Path, *, built_expected: bool) -> Path:
    """Lock, then sync cpu, cu130 and cpu again: each time the installed DeepSpeed must have
    been built against the installed torch, the lock must stay valid, and a second sync must
    change nothing. Returns the environment's python."""
    env = project_env(project)
    uv = uv_bin()
    run([uv, "lock", "-p", "3.11"], cwd=project, env=env, timeout=900)
    python = project / ".venv" / "bin" / "python"
    builds = []
    for extra, torch, major_minor in (("cpu", "2.13.0+cpu", "2.13"),
                                      ("cu130", "2.14.1", "2.14"),
                                      ("cpu", "2.13.0+cpu", "2.13")):
        result = run([uv, "sync", "-v", "--extra", extra], cwd=project, env=env, timeout=900)
        builds.append("Building deepspeed" in result.stderr
                      or "Built deepspeed" in result.stderr)
        # DeepSpeed logs to stdout on import; the answer is the last line.
        installed, torch_info, record = json.loads(
            run([python, "-c", INSTALLED], env=env).stdout.strip().splitlines()[-1])
        assert installed == torch
        assert torch_info["version"] == major_minor, (extra, torch_info)
        if built_expected:
            # uv built the registry's sdist with DeepSpeed's own setuptools build: no record.
            assert record is None, record
        else:
            assert record is not None, "the wheelhouse's wheels are stamped"
            assert record["torch"] == torch
        run([uv, "lock", "--check"], cwd=project, env=env)
        again = run([uv, "sync", "--extra", extra], cwd=project, env=env)
        assert "Installed" not in again.stderr and "Uninstalled" not in again.stderr, \
            again.stderr
    # Source builds: one per torch, and switching back reuses the first.
    assert builds == ([True, True, False] if built_expected else [False, False, False])
    return python


@pytest.mark.cuda
def test_uv_project_source_builds_switch_with_match_runtime(
        ds_sdist: Path, torch213_wheels: Path, torch214_wheels: Path, tmp_path: Path) -> None:
    indexes = {"cpu": simple_index(torch213_wheels), "cu130": simple_index(torch214_wheels)}
    project = example_project("source-build-project", tmp_path / "app",
                              {url: indexes[k] for url, k in TORCH_URLS.items()},
                              indexes["cu130"])
    # DeepSpeed from the sdist of the registry, as a file here so the test is not networked.
    with (project / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.uv.sources.deepspeed]\npath = "{ds_sdist}"\n')
    switch_extras(project, built_expected=True)
