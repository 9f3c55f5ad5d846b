"""`abistamp build` behaviours on a fast project: skip, rebuild, build-number bumps, parallel
variants, a failing variant, concurrent runs into one wheelhouse, interruption, sdists and
existing environments.

The project is the probe (setup.py imports torch and records it; nothing is compiled) declaring
plain setuptools: abistamp must be forced in as the backend, as for DeepSpeed. Every build is
real: uv makes the environment, torch 2.13.0+cpu is installed, setup.py runs.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from .cli_support import (
    ABISTAMP,
    cli,
    copy_wheelhouse,
    manifest,
    plain_probe,
    summary_rows,
    traced_cli,
)
from .conftest import Env, clean_env, read_record, run

pytestmark = pytest.mark.slow

WHEEL = "abistamp_probe-1.0.0+pt213cpu-1pt213cpu-py3-none-any.whl"


@pytest.fixture(scope="module")
def probe_wh(tmp_path_factory: pytest.TempPathFactory, torch213_wheels: Path
             ) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("probe-wh")
    src = plain_probe(base / "probe")
    wheelhouse = base / "wh"
    cli("build", src, "--torch", "torch==2.13.0", "-f", torch213_wheels, "-o", wheelhouse,
        "--work-dir", base / "work")
    return wheelhouse, src


def build_args(src: Path, wheelhouse: Path, links: Path, work: Path) -> list[str | Path]:
    return ["build", src, "--torch", "torch==2.13.0", "-f", links, "-o", wheelhouse,
            "--work-dir", work]


def test_a_project_without_abistamp_is_built_and_stamped(probe_wh: tuple[Path, Path]) -> None:
    wheelhouse, _ = probe_wh
    wheel = wheelhouse / "pt213cpu" / WHEEL
    record = read_record(wheel)
    assert (record["torch"], record["label"]) == ("2.13.0+cpu", "pt213cpu")
    entry = next(iter(manifest(wheelhouse)["variants"].values()))
    # The project's own backend (setuptools) was wrapped, the local label forced for a
    # wheelhouse, and the backend checked the torch it found against the requirement.
    assert entry["config_settings"] == {"abistamp.torch": "torch==2.13.0",
                                        "abistamp.local-version": "always"}
    assert entry["torch"]["version"] == "2.13.0+cpu"
    assert entry["source"]["kind"] == "tree"


def test_a_built_variant_is_skipped_fast_without_an_environment(
        probe_wh: tuple[Path, Path], torch213_wheels: Path, tmp_path: Path) -> None:
    wheelhouse, src = probe_wh
    work = tmp_path / "work"
    before = (wheelhouse / "abistamp-wheelhouse.json").read_bytes()
    result, spawned, torch_imported = traced_cli(
        tmp_path / "trace.json", *build_args(src, wheelhouse, torch213_wheels, work))
    assert summary_rows(result.stdout)["torch==2.13.0"][:3] == ["skipped", "pt213cpu", WHEEL]
    # Its time is a benchmark row (docs/performance.md); what the test holds is why it is fast:
    # no process at all (no uv, no interpreter, no compiler), no torch, no environment.
    assert spawned == [], spawned
    assert not torch_imported
    assert not work.exists(), "a skipped variant must not make an environment"
    assert (wheelhouse / "abistamp-wheelhouse.json").read_bytes() == before


def test_rebuild_builds_again_and_gives_the_same_bytes(
        probe_wh: tuple[Path, Path], torch213_wheels: Path, tmp_path: Path) -> None:
    """Builds run under SOURCE_DATE_EPOCH (abistamp's default): a rebuild of the same source
    for the same torch is identical, and keeps its name."""
    wheelhouse = copy_wheelhouse(probe_wh[0], tmp_path / "wh")
    before = (wheelhouse / "pt213cpu" / WHEEL).read_bytes()
    result = cli(*build_args(probe_wh[1], wheelhouse, torch213_wheels, tmp_path / "work"),
                 "--rebuild")
    assert summary_rows(result.stdout)["torch==2.13.0"][:3] == ["built", "pt213cpu", WHEEL]
    assert "(identical to the wheel already there)" in result.stderr
    assert (wheelhouse / "pt213cpu" / WHEEL).read_bytes() == before
    assert_consistent(wheelhouse)


def test_changed_source_with_the_same_version_bumps_the_build_number(
        probe_wh: tuple[Path, Path], torch213_wheels: Path, tmp_path: Path) -> None:
    wheelhouse = copy_wheelhouse(probe_wh[0], tmp_path / "wh")
    src = plain_probe(tmp_path / "probe")
    (src / "probe" / "__init__.py").write_text('"""A changed file, the version unchanged."""\n')
    result = cli(*build_args(src, wheelhouse, torch213_wheels, tmp_path / "work"))
    bumped = WHEEL.replace("-1pt213cpu-", "-2pt213cpu-")
    assert summary_rows(result.stdout)["torch==2.13.0"][:3] == ["built", "pt213cpu", bumped]
    assert "holds other bytes: build number bumped" in result.stderr
    assert sorted(p.name for p in (wheelhouse / "pt213cpu").glob("*.whl")) == [WHEEL, bumped]
    record = read_record(wheelhouse / "pt213cpu" / bumped)
    assert record["build_tag"] == "2pt213cpu" and record["version"] == "1.0.0+pt213cpu"
    assert len(manifest(wheelhouse)["variants"]) == 2
    simple = (wheelhouse / "pt213cpu" / "simple" / "abistamp-probe" / "index.html").read_text()
    assert simple.count("<a href=") == 2
    # Rebuilt, the changed source gives build 1 with the bytes of build 2: it is build 2,
    # not a third number.
    again = cli(*build_args(src, wheelhouse, torch213_wheels, tmp_path / "work"), "--rebuild")
    assert summary_rows(again.stdout)["torch==2.13.0"][:3] == ["built", "pt213cpu", bumped]
    assert f"(identical to `{bumped}` already there)" in again.stderr
    assert len(list((wheelhouse / "pt213cpu").glob("*.whl"))) == 2
    assert_consistent(wheelhouse)


def test_parallel_variants_one_failing(torch213_wheels: Path, tmp_path: Path) -> None:
    src = plain_probe(tmp_path / "probe")
    wheelhouse = tmp_path / "wh"
    result = cli("build", src, "--torch", "torch==2.13.0", "--torch", "torch==99.0", "--jobs",
                 "2", "-f", torch213_wheels, "-o", wheelhouse, "--work-dir", tmp_path / "work",
                 check=False)
    assert result.returncode == 1, result.output
    rows = summary_rows(result.stdout)
    assert rows["torch==2.13.0"][:3] == ["built", "pt213cpu", WHEEL]
    assert rows["torch==99.0"][0] == "failed"
    assert "`uv pip install` failed" in rows["torch==99.0"][2]
    assert "(1 of 2 variants ready" in result.stdout
    # Progress lines of both variants, each prefixed with its name (padded to one width).
    assert "[torch==99.0  ] FAILED:" in result.stderr
    assert "[torch==2.13.0] creating the build environment" in result.stderr
    assert "[torch==99.0  ] creating the build environment" in result.stderr
    log = Path(result.stdout.split("torch==99.0: failed; log: ")[1].split()[0])
    assert "torch==99.0" in log.read_text()
    assert (wheelhouse / "pt213cpu" / WHEEL).is_file()
    assert not list((tmp_path / "work").glob("*/venv")), "work folders are removed"


def test_concurrent_runs_into_one_wheelhouse(torch213_wheels: Path, tmp_path: Path) -> None:
    """Three runs at once: two want the same variant, one another. One build per variant, and
    the manifest and indexes hold both."""
    src = plain_probe(tmp_path / "probe")
    wheelhouse = tmp_path / "wh"
    work = tmp_path / "work"
    base = [*ABISTAMP, *map(str, build_args(src, wheelhouse, torch213_wheels, work))]
    other = [*base, "--env", "PROBE_BUILD_STRING=.post1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env()) for cmd in (base, base, other)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    builds = sum(err.count("building the wheel") for _, err in outs[:2])
    assert builds == 1, outs
    names = sorted(p.name for p in (wheelhouse / "pt213cpu").glob("*.whl"))
    assert names == [WHEEL, WHEEL.replace("1.0.0+", "1.0.0.post1+")]
    assert len(manifest(wheelhouse)["variants"]) == 2
    flat = (wheelhouse / "pt213cpu" / "index.html").read_text()
    assert flat.count("<a href=") == 2
    assert_consistent(wheelhouse)


def wait_for(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if marker in line:
            return seen
    raise AssertionError(f"never saw {marker!r}:\n{seen}")


def processes_naming(folder: Path) -> list[str]:
    """The command lines of running processes that name folder or work in it."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") \
                if entry.name.isdigit() else ""
        except OSError:
            continue  # gone meanwhile
        try:
            cwd = os.readlink(entry / "cwd") if cmdline else ""
        except OSError:
            cwd = ""  # gone meanwhile, or another user's
        if str(folder) in cmdline or Path(cwd).is_relative_to(folder):
            found.append(cmdline.replace("\0", " ")[:200])
    return found


def test_interrupted_builds_leave_no_wheel_and_the_next_run_builds(
        torch213_wheels: Path, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) mid-build, then SIGKILL mid-build: neither leaves a wheel, a manifest
    entry or a `.part` file, and neither blocks the next run."""
    src = plain_probe(tmp_path / "probe")
    wheelhouse = tmp_path / "wh"
    work = tmp_path / "work"
    cmd = [*ABISTAMP, *map(str, build_args(src, wheelhouse, torch213_wheels, work))]
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=clean_env())
        wait_for(proc, "asking the backend for build requirements")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert proc.returncode == 130, (out, err)
            assert summary_rows(out)["torch==2.13.0"][0] == "cancelled"
            assert not [p for p in work.iterdir() if p.is_dir() and p.name != "logs"], \
                "the work folder of an interrupted build is removed"
        else:
            assert proc.returncode == -signal.SIGKILL
        assert not list(wheelhouse.rglob("*.whl")) if wheelhouse.exists() else True
        assert not (wheelhouse / "abistamp-wheelhouse.json").exists() or \
            manifest(wheelhouse)["variants"] == {}
    # The killed run's hook process dies with it (PR_SET_PDEATHSIG): wait for that, not for a
    # time. It works in the work folder (its command line names pyproject_hooks' own folder).
    deadline = time.monotonic() + 60
    while processes_naming(work):
        assert time.monotonic() < deadline, f"still running: {processes_naming(work)}"
        time.sleep(0.05)
    result = run(cmd, env=clean_env())
    assert summary_rows(result.stdout)["torch==2.13.0"][:3] == ["built", "pt213cpu", WHEEL]
    assert_consistent(wheelhouse)


def test_sdist_source(torch213_wheels: Path, tmp_path: Path) -> None:
    src = plain_probe(tmp_path / "probe")
    sdist = tmp_path / "abistamp_probe-1.0.0.tar.gz"
    (src / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: abistamp-probe\n"
                                  "Version: 1.0.0\n")
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src, arcname="abistamp_probe-1.0.0")
    wheelhouse = tmp_path / "wh"
    result = cli("build", sdist, "--torch", "torch==2.13.0", "-f", torch213_wheels, "-o",
                 wheelhouse, "--work-dir", tmp_path / "work")
    # From an sdist the backend would keep the version; for a wheelhouse the label goes in.
    assert summary_rows(result.stdout)["torch==2.13.0"][:3] == ["built", "pt213cpu", WHEEL]
    entry = next(iter(manifest(wheelhouse)["variants"].values()))
    assert entry["source"]["kind"] == "sdist"
    assert entry["source"]["digest"] == "sha256:" + hashlib.sha256(sdist.read_bytes()
                                                                   ).hexdigest()


def test_existing_environment_variant(env213: Env, tmp_path: Path) -> None:
    """`--python ENV` builds with that environment's own torch and installs nothing there."""
    src = plain_probe(tmp_path / "probe")
    wheelhouse = tmp_path / "wh"
    before = sorted(p.name for p in env213.root.glob("lib/python3*/site-packages/*"))
    result = cli("build", src, "--python", env213.python, "-o", wheelhouse,
                 "--work-dir", tmp_path / "work")
    name = f"--python {env213.python}"
    assert summary_rows(result.stdout)[name][:3] == ["built", "pt213cpu", WHEEL]
    entry = next(iter(manifest(wheelhouse)["variants"].values()))
    assert entry["torch"]["environment"] == str(env213.python)
    assert entry["torch"]["version"] == env213.torch
    assert sorted(p.name for p in env213.root.glob("lib/python3*/site-packages/*")) == before
    again = cli("build", src, "--python", env213.python, "-o", wheelhouse,
                "--work-dir", tmp_path / "work")
    assert summary_rows(again.stdout)[name][0] == "skipped"


def assert_consistent(wheelhouse: Path) -> None:
    """Every wheel is in the manifest with its true digest, and the indexes list exactly the
    wheels there, each with that digest."""
    from abistamp.cli.wheelhouse import sha256_file

    data = manifest(wheelhouse)
    wheels = {p.relative_to(wheelhouse).as_posix(): p for p in wheelhouse.glob("*/*.whl")}
    assert set(data["files"]) == set(wheels)
    for rel, path in wheels.items():
        digest = sha256_file(path)
        assert data["files"][rel]["sha256"] == digest
        flat = (path.parent / "index.html").read_text()
        assert f"#sha256={digest}" in flat
    for entry in data["variants"].values():
        assert entry["wheel"] in wheels
        assert entry["sha256"] == data["files"][entry["wheel"]]["sha256"]
    assert not list(wheelhouse.rglob(".*.part"))
