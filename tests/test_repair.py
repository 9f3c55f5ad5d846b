"""`abistamp repair` and `abistamp build --repair`: the tiny-ext wheel that `abistamp build`
compiled against torch 2.13.0+cpu, repaired by the real auditwheel and patchelf, checked by
independent readers (packaging, installer, pyelftools), installed by real pip and uv into a fresh
environment with torch 2.13.0, and run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from .cli_support import cli, fresh_env, manifest, summary_rows
from .conftest import Env, Result, clean_env, read_dist_file, read_record, run, uv_bin

pytest_plugins = ["tests.cli_fixtures"]

TINY = "tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-linux_x86_64.whl"
# What the extension needs from torch at least (the linker's --as-needed keeps what it uses).
TORCH_SONAMES = {"libc10.so", "libtorch_cpu.so"}
RUN_OP = ("import json, torch, tiny_ext; print(json.dumps([tiny_ext.scale_add(torch.arange(3.0), "
          "2.0).tolist(), tiny_ext.compiled_torch_version()]))")


def dt_needed(data: bytes) -> list[str]:
    """DT_NEEDED of an ELF file, read with pyelftools (not abistamp's reader)."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    section = ELFFile(io.BytesIO(data)).get_section_by_name(".dynamic")
    assert isinstance(section, DynamicSection)
    return [t.needed for t in section.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def extension_member(wheel: Path) -> tuple[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if re.fullmatch(r"tiny_ext/_C\..*\.so", n)]
        return name, zf.read(name)


def no_error_output(result: Result) -> None:
    assert result.stderr == "", result.stderr


# --- fast: input errors, decided before any wheel is touched ------------------------------------


def test_not_a_wheel_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a wheel\n")
    out = tmp_path / "out"
    result = cli("repair", notes, "-o", out, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("abistamp: error: `notes.txt` is not a wheel filename")
    assert "(fix: give a `.whl` file named as PEP 427 says)" in line
    assert not out.exists()


def test_build_refuses_an_unknown_repair_policy(tmp_path: Path) -> None:
    result = cli("build", tmp_path, "--torch", "torch==2.13.0", "--repair",
                 "manylinux_2_99_x86_64", "-o", tmp_path / "wh", check=False)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "`--repair manylinux_2_99_x86_64` is not a manylinux policy for x86_64" in line
    assert "manylinux_2_28_x86_64" in line and "write `--repair=PLAT`" in line
    assert not (tmp_path / "wh").exists()


# --- the real wheel -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_env(tmp_path_factory: pytest.TempPathFactory, torch213_wheels: Path) -> Env:
    """A fresh environment with torch 2.13.0: the torch the wheel was built against."""
    return fresh_env(tmp_path_factory.mktemp("repair-env") / "venv", torch213_wheels,
                     "torch==2.13.0")


@pytest.fixture(scope="module")
def repaired(tiny_wheelhouse: tuple[Path, Path, Result], torch_env: Env,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("repaired") / "out"
    result = cli("repair", tiny_wheelhouse[0] / "pt213cpu" / TINY, "-o", out, "--python",
                 torch_env.root)
    wheels = sorted(out.iterdir())
    assert len(wheels) == 1, wheels  # the wheel and nothing else: no scratch, no .part
    return wheels[0], result


@pytest.mark.slow
def test_repaired_wheel_has_a_manylinux_tag_and_keeps_its_stamps(
        tiny_wheelhouse: tuple[Path, Path, Result], repaired: tuple[Path, Result],
        torch_env: Env) -> None:
    original = tiny_wheelhouse[0] / "pt213cpu" / TINY
    wheel, result = repaired
    no_error_output(result)
    name, version, build, tags = parse_wheel_filename(wheel.name)
    assert (name, version, build) == ("tiny-ext", Version("0.3.0+pt213cpu"), (1, "pt213cpu"))
    assert tags and all(re.fullmatch(r"manylinux_2_\d+_x86_64", t.platform) for t in tags), tags
    assert {(t.interpreter, t.abi) for t in tags} == {("cp311", "cp311")}
    assert f"{TINY} -> {wheel}" in result.stdout

    # METADATA (the torch pin), WHEEL (build tag, new tags) and the ABI record.
    assert read_dist_file(wheel, "METADATA") == read_dist_file(original, "METADATA")
    assert "Requires-Dist: torch==2.13.0+cpu" in read_dist_file(wheel, "METADATA")
    wheel_file = read_dist_file(wheel, "WHEEL")
    assert "Build: 1pt213cpu" in wheel_file
    assert sorted(ln[5:] for ln in wheel_file.splitlines() if ln.startswith("Tag: ")) == \
        sorted(str(t) for t in tags)
    before, after = read_record(original), read_record(wheel)
    repair = after.pop("repair")
    assert after.pop("platform_tag") == wheel.name[:-4].split("-")[-1]
    assert before.pop("platform_tag") == "linux_x86_64"
    assert after == before
    assert repair["policy"] in {t.platform for t in tags}
    assert repair["tool"] == "auditwheel 6.8.2" or repair["tool"].startswith("auditwheel 6.")
    # Left to torch: exactly the sonames the compiled extension needs that torch's lib folder
    # holds (read here with pyelftools and a directory listing, not with abistamp's code).
    needed = dt_needed(extension_member(original)[1])
    (torch_lib,) = torch_env.root.glob("lib/python3*/site-packages/torch/lib")
    assert repair["left_to_torch"] == sorted(n for n in needed if (torch_lib / n).exists())
    assert TORCH_SONAMES <= set(repair["left_to_torch"])
    assert repair["torch_libraries_by"] == ["torch environment"]

    # RECORD, checked by another reader: every member's hash and size.
    from installer.sources import WheelFile

    with WheelFile.open(wheel) as source:
        source.validate_record(validate_contents=True)

    # torch's libraries are not in the wheel, and the extension still names them.
    with zipfile.ZipFile(wheel) as zf:
        libs = [n for n in zf.namelist() if n.startswith("tiny_ext.libs/")]
    assert not [n for n in libs if re.search(r"/lib(torch|c10|shm|gomp|cud|nv)", n)], libs
    assert sorted(n.split("/", 1)[1].split("-")[0] for n in libs) == \
        sorted(s.split(".")[0] for s in repair["grafted"])
    _, data = extension_member(wheel)
    assert TORCH_SONAMES <= set(dt_needed(data)), dt_needed(data)

    inspected = cli("inspect", wheel).stdout
    assert f"  tags          {'-'.join(wheel.name[:-4].split('-')[-3:])}\n" in inspected
    assert "  torch         2.13.0+cpu (cpu; C++11 ABI yes)\n" in inspected
    assert re.search(rf"  repaired      {repair['policy']} by auditwheel 6\.\S+; left to torch: "
                     r"libc10\.so, ", inspected), inspected


@pytest.mark.slow
def test_repaired_wheel_installs_and_runs_with_pip_and_uv(repaired: tuple[Path, Result],
                                                          torch_env: Env) -> None:
    wheel = repaired[0]
    pip_env = {k: v for k, v in clean_env().items() if not k.startswith("PIP_")}
    pip_env["PIP_CONFIG_FILE"] = os.devnull
    run([sys.executable, "-m", "pip", "--python", torch_env.python, "install", "--no-deps",
         "--no-index", wheel], env=pip_env)
    values, compiled = json.loads(torch_env.py(RUN_OP).stdout)
    assert values == [1.0, 3.0, 5.0] and compiled.startswith("2.13")
    check = cli("check", "--python", torch_env.python)
    assert re.search(r"tiny-ext\s+0\.3\.0\+pt213cpu\s+torch 2\.13\.0\+cpu \(cpu\)\s+ok",
                     check.stdout), check.stdout
    run([uv_bin(), "pip", "install", "-q", "-p", torch_env.python, "--no-deps", "--reinstall",
         wheel])
    values, compiled = json.loads(torch_env.py(RUN_OP).stdout)
    assert values == [1.0, 3.0, 5.0] and compiled.startswith("2.13")
    (installed,) = torch_env.root.glob("lib/python3*/site-packages/tiny_ext-*.dist-info")
    assert json.loads((installed / "abistamp.json").read_text())["repair"]["policy"]


@pytest.mark.slow
def test_repair_without_an_environment_tells_torch_by_name(
        tiny_wheelhouse: tuple[Path, Path, Result], repaired: tuple[Path, Result],
        tmp_path: Path) -> None:
    # No --python, no VIRTUAL_ENV, no .venv above the folder: the running interpreter, which
    # has no torch, so the sonames are matched by name; the same ones are left to torch.
    out = tmp_path / "out"
    cli("repair", tiny_wheelhouse[0] / "pt213cpu" / TINY, "-o", out, cwd=tmp_path)
    (wheel,) = out.iterdir()
    assert wheel.name == repaired[0].name
    by_env, by_name = read_record(repaired[0])["repair"], read_record(wheel)["repair"]
    assert by_name["left_to_torch"] == by_env["left_to_torch"]
    assert by_name["torch_libraries_by"] == ["name"]
    # The same folder again: identical bytes are kept; other bytes under the name are refused.
    again = cli("repair", tiny_wheelhouse[0] / "pt213cpu" / TINY, "-o", out, cwd=tmp_path)
    assert "identical to the wheel already there" in again.stdout
    shutil.copyfile(repaired[0], wheel)
    clash = cli("repair", tiny_wheelhouse[0] / "pt213cpu" / TINY, "-o", out, cwd=tmp_path,
                check=False)
    assert clash.returncode == 2 and "already exists with other bytes" in clash.stderr
    assert sorted(p.name for p in out.iterdir()) == [wheel.name]


@pytest.mark.slow
def test_repair_errors_name_the_problem_and_write_nothing(
        tiny_wheelhouse: tuple[Path, Path, Result], tmp_path: Path) -> None:
    wheel = tiny_wheelhouse[0] / "pt213cpu" / TINY
    out = tmp_path / "out"
    bad = cli("repair", wheel, "-o", out, "--plat", "manylinux_2_99_x86_64", check=False)
    assert bad.returncode == 2
    (line,) = bad.stderr.splitlines()
    assert "`--plat manylinux_2_99_x86_64` is not a manylinux policy for x86_64" in line
    assert not out.exists()
    # A policy older than the compiler's runtime: the symbol versions that block it are named.
    out.mkdir()
    (out / "keep.txt").write_text("")
    old = cli("repair", wheel, "-o", out, "--plat", "manylinux1_x86_64", check=False)
    assert old.returncode == 2
    (line,) = old.stderr.splitlines()
    assert f"`{TINY}` cannot be repaired to manylinux_2_5_x86_64" in line
    assert re.search(r"`lib(stdc\+\+\.so\.6|c\.so\.6|m\.so\.6|gcc_s\.so\.1)` symbol versions "
                     r"(GLIBC|GLIBCXX|CXXABI|GCC)_", line), line
    assert "(fix: compile with an older toolchain, as in the `quay.io/pypa/manylinux1_x86_64` " \
        "image" in line and "`--plat auto` picks manylinux_2_" in line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_build_repair_publishes_the_repaired_wheel(tiny_wheelhouse: tuple[Path, Path, Result],
                                                   torch213_wheels: Path, tmp_path: Path
                                                   ) -> None:
    wheelhouse, src, _ = tiny_wheelhouse
    wh = tmp_path / "wh"
    shutil.copytree(wheelhouse, wh)
    args = ["build", src, "--torch", "torch==2.13.0", "--find-links", torch213_wheels,
            "-o", wh, "--work-dir", tmp_path / "work", "--repair"]
    result = cli(*args)
    status, label, name, _ = summary_rows(result.stdout)["torch==2.13.0"]
    assert (status, label) == ("built", "pt213cpu")
    assert name.startswith("tiny_ext-0.3.0+pt213cpu-1pt213cpu-cp311-cp311-manylinux_2_")
    assert "[torch==2.13.0] repairing the wheel (auditwheel, auto)" in result.stderr
    assert re.search(r"\[torch==2\.13\.0\] repaired: manylinux_2_\d+_x86_64; left to torch: "
                     r"libc10\.so, ", result.stderr), result.stderr
    # The manifest records the repaired wheel (its bytes), beside the plain one of the fixture.
    data = manifest(wh)
    entry = next(e for e in data["variants"].values() if e.get("repair"))
    assert entry["wheel"] == f"pt213cpu/{name}"
    assert entry["sha256"] == hashlib.sha256((wh / entry["wheel"]).read_bytes()).hexdigest()
    assert data["files"][entry["wheel"]]["sha256"] == entry["sha256"]
    assert entry["repair"]["left_to_torch"] == read_record(wh / entry["wheel"])["repair"][
        "left_to_torch"]
    assert sorted(p.name for p in (wh / "pt213cpu").glob("*.whl")) == sorted([TINY, name])
    flat = (wh / "pt213cpu" / "index.html").read_text()
    assert f'{name.replace("+", "%2B")}#sha256={entry["sha256"]}' in flat
    # The same command again is a skip of the repaired variant; without --repair, of the plain.
    again = cli(*args)
    assert summary_rows(again.stdout)["torch==2.13.0"][:3] == ["skipped", "pt213cpu", name]
    plain = cli(*args[:-1])
    assert summary_rows(plain.stdout)["torch==2.13.0"][:3] == ["skipped", "pt213cpu", TINY]
