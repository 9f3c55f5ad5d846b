"""examples/tiny-ext through `abistamp build` (a real compile against torch 2.13.0+cpu), then
the wheelhouse it wrote as pip and uv consume it, `uv-config` validated by real `uv lock` and
`uv sync`, `check` on the environment that sync made, `inspect` and `stamp`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zipfile
from pathlib import Path

import pytest

from .cli_support import (
    cli,
    fresh_env,
    manifest,
    network_used,
    plain_probe,
    summary_rows,
    traced_cli,
)
from .conftest import Env, Result, clean_env, read_dist_file, read_record, run, uv_bin

# The session fixtures (built wheelhouses) are shared with other modules through a plugin.
pytest_plugins = ["tests.cli_fixtures"]

pytestmark = pytest.mark.slow
TINY = "tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl"
RUN_OP = ("import json, torch, tiny_ext; print(json.dumps([tiny_ext.scale_add(torch.arange(3.0), "
          "2.0).tolist(), tiny_ext.compiled_torch_version()]))")


def test_build_output_and_layout(tiny_wheelhouse: tuple[Path, Path, Result]) -> None:
    wheelhouse, src, result = tiny_wheelhouse
    status, label, wheel, seconds = summary_rows(result.stdout)["torch==2.13.0"]
    assert (status, label, wheel) == ("built", "pt213cpu", TINY)
    assert re.fullmatch(r"\d+\.\ds", seconds)
    for step in ("creating the build environment", "installing torch==2.13.0",
                 "building the wheel", "publishing into the wheelhouse", f"built pt213cpu/{TINY}"):
        assert f"[torch==2.13.0] {step}" in result.stderr, result.stderr
    files = sorted(p.relative_to(wheelhouse).as_posix() for p in wheelhouse.rglob("*")
                   if p.is_file())
    assert files == [".abistamp-wheelhouse.lock", "abistamp-wheelhouse.json", "all.html",
                     "index.html", "pt213cpu/index.html", "pt213cpu/simple/index.html",
                     "pt213cpu/simple/tiny-ext/index.html", f"pt213cpu/{TINY}",
                     "simple/index.html", "simple/tiny-ext/index.html"]
    record = read_record(wheelhouse / "pt213cpu" / TINY)
    assert (record["torch"], record["cxx11abi"], record["label"]) == ("2.13.0+cpu", True,
                                                                      "pt213cpu")
    entry = next(iter(manifest(wheelhouse)["variants"].values()))
    assert entry["source"] == {"kind": "tree", "spec": str(src.resolve()),
                               "digest": entry["source"]["digest"]}
    assert entry["torch"]["requirement"] == "torch==2.13.0"
    assert entry["torch"]["version"] == "2.13.0+cpu"
    assert entry["wheel"] == f"pt213cpu/{TINY}" and entry["name"] == "tiny-ext"
    # The project vendors its own abistamp and declares local-version itself: no override.
    assert entry["config_settings"] == {"abistamp.torch": "torch==2.13.0"}


def test_indexes_carry_sha256_and_relative_links(tiny_wheelhouse: tuple[Path, Path, Result]
                                                 ) -> None:
    wheelhouse = tiny_wheelhouse[0]
    digest = manifest(wheelhouse)["files"][f"pt213cpu/{TINY}"]["sha256"]
    quoted = TINY.replace("+", "%2B")
    flat = (wheelhouse / "pt213cpu" / "index.html").read_text()
    assert f'<a href="{quoted}#sha256={digest}">{TINY}</a>' in flat
    simple = (wheelhouse / "pt213cpu" / "simple" / "tiny-ext" / "index.html").read_text()
    assert f'href="../../{quoted}#sha256={digest}"' in simple
    assert '<a href="tiny-ext/">' in (wheelhouse / "pt213cpu" / "simple" / "index.html"
                                      ).read_text()
    assert '<a href="pt213cpu/">' in (wheelhouse / "index.html").read_text()


def pip_env() -> dict[str, str]:
    """pip without this machine's configuration (its own find-links and indexes)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def test_pip_reads_the_flat_and_the_simple_index(tiny_wheelhouse: tuple[Path, Path, Result],
                                                 tmp_path: Path) -> None:
    folder = tiny_wheelhouse[0] / "pt213cpu"
    flat = run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-index", "-d",
                tmp_path / "a", "--find-links", (folder / "index.html").as_uri(), "tiny-ext"],
               env=pip_env())
    assert (tmp_path / "a" / TINY).is_file(), flat.output
    run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp_path / "b", "--index-url",
         (folder / "simple").as_uri(), "tiny-ext==0.3.0"], env=pip_env())
    assert (tmp_path / "b" / TINY).read_bytes() == (folder / TINY).read_bytes()


def uv_project(folder: Path, config: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = "==3.11.*"\n'
        f"dependencies = []\n\n{config}")
    return folder


@pytest.mark.parametrize("fmt", ["flat", "simple"])
def test_uv_config_lock_and_sync(fmt: str, tiny_wheelhouse: tuple[Path, Path, Result],
                                 torch213_wheels: Path, tmp_path: Path) -> None:
    wheelhouse = tiny_wheelhouse[0]
    config = cli("uv-config", wheelhouse, "--extra", "cpu=pt213cpu", "--format", fmt).stdout
    assert 'tiny-ext = [\n    { index = "abistamp-pt213cpu", extra = "cpu" },\n]' in config
    assert f'url = "{torch213_wheels.resolve().as_uri()}"' in config
    app = uv_project(tmp_path / "app", config)
    run([uv_bin(), "lock"], cwd=app)
    lock = (app / "uv.lock").read_text()
    assert 'name = "tiny-ext"\nversion = "0.3.0+pt213cpu"' in lock
    run([uv_bin(), "sync", "--extra", "cpu"], cwd=app)
    values, compiled = json.loads(run([app / ".venv" / "bin" / "python", "-c", RUN_OP]
                                      ).stdout)
    assert values == [1.0, 3.0, 5.0] and compiled.startswith("2.13")
    if fmt == "flat":
        check = cli("check", "--python", app / ".venv")
        assert re.search(r"tiny-ext\s+0\.3\.0\+pt213cpu\s+torch 2\.13\.0\+cpu \(cpu\)\s+ok",
                         check.stdout), check.stdout


def test_check_is_fast_and_finds_a_mismatch(tiny_wheelhouse: tuple[Path, Path, Result],
                                            torch213_wheels: Path, tmp_path: Path) -> None:
    """A pin-level mismatch with the one cheap torch: tiny-ext's record is edited in the
    installed environment to say it was built for 2.12 (the only fake here: no torch 2.12).

    `check` answers from the environment's files: its time is a benchmark row
    (docs/performance.md); the test holds why it is fast: no process started (nvidia-smi
    only on a machine that has one), no torch imported, no network."""
    env = fresh_env(tmp_path / "env", torch213_wheels, "torch==2.13.0",
                    tiny_wheelhouse[0] / "pt213cpu" / TINY)
    trace = tmp_path / "trace.json"
    ok, spawned, torch_imported = traced_cli(trace, "check", "--python", env.python)
    assert [cmd for cmd in spawned if "nvidia-smi" not in cmd[0]] == [], spawned
    assert not torch_imported
    assert network_used(trace) == []
    assert "all 1 match the installed torch" in ok.stdout
    (record_file,) = env.root.glob("lib/python3*/site-packages/tiny_ext-*.dist-info/"
                                   "abistamp.json")
    record = json.loads(record_file.read_text())
    record.update(torch="2.12.0+cpu", pin="torch==2.12.0+cpu")
    record_file.write_text(json.dumps(record))
    bad = cli("check", "--python", env.python, check=False)
    assert bad.returncode == 1
    assert "tiny-ext: built for torch 2.12.0+cpu, installed torch is 2.13.0+cpu" in bad.stdout
    assert "fix: install the tiny-ext wheel built for torch 2.13.0+cpu" in bad.stdout
    data = json.loads(cli("check", "--python", env.python, "--json", check=False).stdout)
    assert data["ok"] is False and data["results"][0]["status"] == "MISMATCH"


def test_inspect(tiny_wheelhouse: tuple[Path, Path, Result]) -> None:
    wheel = tiny_wheelhouse[0] / "pt213cpu" / TINY
    out = cli("inspect", wheel).stdout
    assert out.startswith(TINY + "\n")
    assert "  torch         2.13.0+cpu (cpu; C++11 ABI yes)\n" in out
    assert "  torch pins    torch==2.13.0+cpu\n" in out
    assert "  build tag     1pt213cpu\n" in out
    (data,) = json.loads(cli("inspect", "--json", wheel).stdout)
    assert data["record"] == read_record(wheel)
    assert data["torch_requires"] == ["torch==2.13.0+cpu"]


@pytest.fixture(scope="module")
def plain_wheel(tmp_path_factory: pytest.TempPathFactory, env213: Env) -> Path:
    """A wheel built by plain setuptools, without abistamp: what `abistamp stamp` is for."""
    base = tmp_path_factory.mktemp("plain")
    src = plain_probe(base / "probe")
    run([uv_bin(), "build", "--wheel", "--no-build-isolation", "-p", env213.python,
         "--out-dir", base / "dist", src], env=env213.env())
    (wheel,) = (base / "dist").glob("*.whl")
    assert wheel.name == "abistamp_probe-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert not [n for n in zf.namelist() if n.endswith("abistamp.json")]
    return wheel


def test_stamp_with_an_environments_torch(plain_wheel: Path, env213: Env, tmp_path: Path
                                          ) -> None:
    result = cli("stamp", plain_wheel, "--python", env213.root, "-o", tmp_path)
    stamped = tmp_path / "abistamp_probe-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl"
    assert f"-> {stamped}" in result.stdout
    record = read_record(stamped)
    # The environment's python was run: the C++ ABI flag is known.
    assert (record["torch"], record["cxx11abi"], record["original_version"]) == (
        "2.13.0+cpu", True, "1.0.0")
    assert record["stamped_after_build"] is True
    assert "Requires-Dist: torch==2.13.0+cpu" in read_dist_file(stamped, "METADATA")
    assert "Build: 1pt213cpu" in read_dist_file(stamped, "WHEEL")
    # pip takes the stamped wheel as it is: what it would install, read from its report.
    report = tmp_path / "report.json"
    run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet",
         "--report", report, stamped], env=pip_env())
    (planned,) = json.loads(report.read_text())["install"]
    assert planned["download_info"]["url"] == stamped.as_uri()
    assert (planned["metadata"]["name"], planned["metadata"]["version"]) == (
        "abistamp-probe", "1.0.0+pt213cpu")
    assert planned["metadata"]["requires_dist"] == ["torch==2.13.0+cpu"]


def test_stamp_with_the_abi_of_another_wheel(plain_wheel: Path, tiny_wheelhouse: tuple[
        Path, Path, Result], tmp_path: Path) -> None:
    tiny = tiny_wheelhouse[0] / "pt213cpu" / TINY
    cli("stamp", plain_wheel, "--abi-from", tiny, "-o", tmp_path,
        "-C", "abistamp.label=cpu{major}{minor}", "-C", "abistamp.pin=minor",
        "-C", "abistamp.build-number=7")
    stamped = tmp_path / "abistamp_probe-1.0.0+cpu213-7cpu213-py3-none-any.whl"
    assert "Requires-Dist: torch==2.13.*" in read_dist_file(stamped, "METADATA")
    # Stamping the stamped wheel again with other settings starts from the original version.
    cli("stamp", stamped, "--abi-from", tiny, "-o", tmp_path / "again")
    again = tmp_path / "again" / "abistamp_probe-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl"
    metadata = read_dist_file(again, "METADATA")
    assert "Requires-Dist: torch==2.13.0+cpu" in metadata
    assert "torch==2.13.*" not in metadata
    line = [ln for ln in cli("stamp", plain_wheel, "--abi-from", plain_wheel, check=False
                             ).stderr.splitlines() if "error" in ln]
    assert "carries no abistamp record" in line[0] and "(fix: " in line[0]
